/// The binomial low-pass filters of BlurPool (Zhang 2019): row k-1 of Pascal's triangle.
public enum BinomialFilter {
    /// Supported filter sizes.
    public static let supportedSizes = 1...7

    /// Unnormalised integer taps for `size` in 1...7, e.g. `[1, 3, 3, 1]` for 4.
    public static func integerTaps(size: Int) throws -> [Int] {
        guard supportedSizes.contains(size) else {
            throw NyquistError(.invalidConfiguration, "filter size \(size) is not supported; use 1...7")
        }
        var row = [1]
        for _ in 1..<max(size, 1) {
            row = zip(row + [0], [0] + row).map { $0 + $1 }
        }
        return row
    }

    /// Normalised 1-D taps (sum 1). The 2-D filter is their outer product; every value is a
    /// dyadic rational, exactly representable in `Float`.
    public static func taps<Scalar: BinaryFloatingPoint>(size: Int, as: Scalar.Type = Scalar.self) throws -> [Scalar] {
        let taps = try integerTaps(size: size)
        let sum = Scalar(taps.reduce(0, +))
        return taps.map { Scalar($0) / sum }
    }
}
