import NyquistCore
import Testing

@Suite("Binomial filter")
struct BinomialFilterTests {
    /// The rows of Pascal's triangle, as SPEC.md section 2 lists them.
    static let rows: [[Int]] = [
        [1], [1, 1], [1, 2, 1], [1, 3, 3, 1], [1, 4, 6, 4, 1], [1, 5, 10, 10, 5, 1], [1, 6, 15, 20, 15, 6, 1],
    ]

    @Test(arguments: 1...7)
    func integerTaps(size: Int) throws {
        #expect(try BinomialFilter.integerTaps(size: size) == Self.rows[size - 1])
    }

    @Test(arguments: 1...7)
    func normalisedTapsSumToOneExactly(size: Int) throws {
        let float = try BinomialFilter.taps(size: size, as: Float.self)
        let double = try BinomialFilter.taps(size: size, as: Double.self)
        #expect(float.reduce(0, +) == 1)
        #expect(double.reduce(0, +) == 1)
        let scale = Double(1 << (size - 1))
        #expect(double == Self.rows[size - 1].map { Double($0) / scale })
        #expect(float == double.map { Float($0) })
        #expect(float == float.reversed())
    }

    @Test(arguments: 1...7)
    func twoDimensionalFilter(size: Int) throws {
        let taps = try BinomialFilter.integerTaps(size: size)
        let sum = taps.flatMap { a in taps.map { a * $0 } }.reduce(0, +)
        #expect(sum == 1 << (2 * (size - 1)))  // 4^(k-1)
        let normalised = try BinomialFilter.taps(size: size, as: Float.self)
        #expect(normalised.flatMap { a in normalised.map { a * $0 } }.reduce(0, +) == 1)
    }

    @Test(arguments: [-1, 0, 8, 100])
    func unsupportedSizes(size: Int) {
        expectError(.invalidConfiguration, "\(size)", "1...7") { try BinomialFilter.integerTaps(size: size) }
        expectError(.invalidConfiguration) { try BinomialFilter.taps(size: size, as: Float.self) }
    }
}
