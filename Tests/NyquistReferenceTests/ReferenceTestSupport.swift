import NyquistCore
import NyquistReference
import PropertyBased

/// Shared helpers of the reference tests: seeded randomness, tensors in `Double`, inner products.

/// A seeded generator, so every random test sees the same inputs on every run and machine.
///
/// PropertyBased's `propertyCheck` draws a fresh seed per run and its `.fixedSeed` trait is
/// meant for debugging (it reports an issue when the test passes), so the property tests use
/// its generators and its `Xoshiro` directly with seeds fixed here.
func seededGenerator(_ seed: UInt64) -> Xoshiro {
    Xoshiro(seed: (seed, 0x9E37_79B9_7F4A_7C15, seed &* 0xBF58_476D_1CE4_E5B9, 0x94D0_49BB_1331_11EB))
}

/// Runs `body` on `count` values drawn from `input` with a fixed seed; `body` gets the case
/// number too so that its expectations can name the failing case.
func fixedSeedPropertyCheck<Value>(
    count: Int, seed: UInt64, input: Generator<Value, some Sequence>, perform body: (Int, Value) throws -> Void
) rethrows {
    var rng = seededGenerator(seed)
    for index in 0..<count {
        try body(index, input.run(using: &rng))
    }
}

/// A Double tensor of uniform values in -1...1.
func randomTensor(_ shape: [Int], using rng: inout Xoshiro) throws -> Tensor<Double> {
    let count = try Tensor<Double>.elementCount(of: shape)
    return try Tensor(shape: shape, values: (0..<count).map { _ in Double.random(in: -1...1, using: &rng) })
}

/// A Double tensor whose values are a random permutation of 0, 0.01, 0.02, ...: no two values
/// are within 0.01 of each other, far more than any finite-difference step, so the argmax of
/// every max window is stable under the perturbations of a gradient check.
func tieFreeTensor(_ shape: [Int], using rng: inout Xoshiro) throws -> Tensor<Double> {
    let count = try Tensor<Double>.elementCount(of: shape)
    let values = (0..<count).shuffled(using: &rng).map { Double($0) * 0.01 - 0.005 * Double(count) }
    return try Tensor(shape: shape, values: values)
}

/// sum_i a_i b_i.
func dot(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).reduce(0) { $0 + $1.0 * $1.1 }
}

/// sum_i |a_i b_i|: the scale against which rounding in `dot` is measured.
func absoluteDot(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).reduce(0) { $0 + abs($1.0 * $1.1) }
}

/// `x + t * d` elementwise.
func shifted(_ x: Tensor<Double>, by d: [Double], times t: Double) throws -> Tensor<Double> {
    try Tensor(shape: x.shape, values: zip(x.values, d).map { $0 + t * $1 })
}

/// Largest |a - b| over all elements.
func maxAbsDifference(_ a: [Double], _ b: [Double]) -> Double {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// Largest |a|.
func maxAbs(_ a: [Double]) -> Double {
    a.reduce(0) { max($0, abs($1)) }
}

/// The four operators behind one interface, so the gradient checks loop over them.
struct ReferenceOperator: CustomStringConvertible {
    let description: String
    let forward: (Tensor<Double>) throws -> Tensor<Double>
    let backward: (Tensor<Double>, Tensor<Double>) throws -> Tensor<Double>  // (gradOutput, input)
    /// Whether the operator is linear (blur, average): then the adjoint test applies and inputs
    /// need no spacing.
    let isLinear: Bool

    static func maxPool(_ config: MaxPool2DConfiguration) -> ReferenceOperator {
        ReferenceOperator(
            description: config.description, forward: { try Reference.maxPool2D($0, config) },
            backward: { try Reference.maxPool2DBackward(gradOutput: $0, saved: .init(input: $1), config) },
            isLinear: false)
    }

    static func avgPool(_ config: AvgPool2DConfiguration) -> ReferenceOperator {
        ReferenceOperator(
            description: config.description, forward: { try Reference.avgPool2D($0, config) },
            backward: { try Reference.avgPool2DBackward(gradOutput: $0, saved: .init(input: $1), config) },
            isLinear: true)
    }

    static func blurPool(_ config: BlurPool2DConfiguration) -> ReferenceOperator {
        ReferenceOperator(
            description: config.description, forward: { try Reference.blurPool2D($0, config) },
            backward: { try Reference.blurPool2DBackward(gradOutput: $0, saved: .init(input: $1), config) },
            isLinear: true)
    }

    static func maxBlurPool(_ config: MaxBlurPool2DConfiguration) -> ReferenceOperator {
        ReferenceOperator(
            description: config.description, forward: { try Reference.maxBlurPool2D($0, config) },
            backward: { try Reference.maxBlurPool2DBackward(gradOutput: $0, saved: .init(input: $1), config) },
            isLinear: false)
    }
}
