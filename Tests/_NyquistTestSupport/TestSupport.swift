import NyquistCore

/// A tensor of `shape` with values uniform in `range`, fixed by `seed`.
public func randomTensor(_ shape: [Int], seed: UInt64, range: ClosedRange<Float> = -1...1) throws -> HostTensor {
    var generator = SplitMix64(seed: seed)
    return try generator.tensor(shape, range: range)
}

/// How far a device result is from the reference, in the terms the parity reports use.
public struct Discrepancy: CustomStringConvertible, Sendable {
    /// max |actual - expected|.
    public let maxAbsoluteError: Double
    /// max |expected|: the reference magnitude that tolerances are relative to.
    public let referenceMagnitude: Double
    /// sum (actual - expected)^2 / sum expected^2 (0 when both are all zeros).
    public let nmse: Double
    /// Flat index of the largest error.
    public let worstIndex: Int
    /// True when NaN/Inf positions and values disagree somewhere.
    public let nonFiniteMismatch: Bool

    /// Compares element-wise; non-finite values must match exactly (NaN with NaN, +Inf with +Inf).
    ///
    /// `magnitudeFloor` is the smallest reference magnitude errors are measured against. Window
    /// operators pass max|input|: their rounding error is bounded by the size of the summed
    /// terms, not by the result, so a result that cancels to almost nothing (a blur of +0.7 and
    /// -0.7) must not turn a 1e-8 rounding error into a large "relative" one.
    public init(actual: [Float], expected: [Float], magnitudeFloor: Double = 0) {
        precondition(actual.count == expected.count, "compare tensors of equal size")
        var maxError = 0.0
        var magnitude = 0.0
        var squaredError = 0.0
        var squaredReference = 0.0
        var worst = 0
        var mismatch = false
        for index in actual.indices {
            let a = Double(actual[index])
            let e = Double(expected[index])
            if !a.isFinite || !e.isFinite {
                if !(a.isNaN && e.isNaN) && a != e { mismatch = true }
                continue
            }
            let error = abs(a - e)
            if error > maxError {
                maxError = error
                worst = index
            }
            magnitude = max(magnitude, abs(e))
            squaredError += error * error
            squaredReference += e * e
        }
        maxAbsoluteError = maxError
        referenceMagnitude = max(magnitude, magnitudeFloor)
        nmse = squaredReference > 0 ? squaredError / squaredReference : (squaredError > 0 ? .infinity : 0)
        worstIndex = worst
        nonFiniteMismatch = mismatch
    }

    /// max error relative to the reference magnitude (absolute when the reference is all zero).
    public var relativeError: Double { referenceMagnitude > 0 ? maxAbsoluteError / referenceMagnitude : maxAbsoluteError }

    /// True when the relative error is at most `tolerance` and non-finite values agree.
    public func within(_ tolerance: Double) -> Bool { !nonFiniteMismatch && relativeError <= tolerance }

    public var description: String {
        "max error \(maxAbsoluteError) (relative \(relativeError)) at flat index \(worstIndex), NMSE \(nmse)"
            + (nonFiniteMismatch ? ", NaN/Inf positions differ" : "")
    }
}

/// The spatial sizes every parity test covers: degenerate, odd, even, non-square, and
/// network-like (from the foundation issue).
public let paritySpatialSizes: [(h: Int, w: Int)] = [(1, 1), (2, 2), (3, 5), (7, 9), (8, 8), (31, 33), (56, 56)]

/// Batch and channel counts that are not multiples of a work-group or vector width.
public let parityBatchChannels: [(n: Int, c: Int)] = [(1, 1), (3, 5)]

/// max |value| over the finite values of `tensor` (0 when there are none).
public func finiteMagnitude(_ tensor: HostTensor) -> Double {
    tensor.values.reduce(0.0) { $1.isFinite ? max($0, Double(abs($1))) : $0 }
}
