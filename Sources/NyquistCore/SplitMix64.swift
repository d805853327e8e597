/// SplitMix64 (Steele, Lea, Flood 2014): a small, fast, seedable random number generator.
///
/// The standard library's generator cannot be seeded, and reproducible inputs need a seed:
/// the demo, the tests and default parameter initialisation all draw from this one.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    /// A generator whose whole sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A `Float` with 24 random bits, uniform in `range` (the upper bound itself is never drawn).
    public mutating func uniform(_ range: ClosedRange<Float> = -1...1) -> Float {
        let unit = Float(next() >> 40) * 0x1p-24
        return range.lowerBound + unit * (range.upperBound - range.lowerBound)
    }

    /// A uniform integer in `range` (rejection sampling, so no modulo bias).
    public mutating func integer(in range: ClosedRange<Int>) -> Int {
        let span = UInt64(range.upperBound - range.lowerBound) + 1
        let limit = UInt64.max - UInt64.max % span
        var value = next()
        while value >= limit { value = next() }
        return range.lowerBound + Int(value % span)
    }

    /// A tensor of `shape` with values drawn by ``uniform(_:)``.
    public mutating func tensor(_ shape: [Int], range: ClosedRange<Float> = -1...1) throws -> HostTensor {
        let count = try HostTensor.elementCount(of: shape)
        var values: [Float] = []
        values.reserveCapacity(count)
        for _ in 0..<count { values.append(uniform(range)) }
        return try HostTensor(shape: shape, values: values)
    }
}
