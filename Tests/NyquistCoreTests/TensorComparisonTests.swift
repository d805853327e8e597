import NyquistCore
import Testing

/// `Tensor.maxRelativeError(from:)`, the demo's error column, on hand-worked values.
@Suite("Tensor comparison")
struct TensorComparisonTests {
    @Test("relative to the largest expected magnitude")
    func relative() throws {
        let expected = try HostTensor(shape: [4], values: [1, -4, 2, 0])
        let actual = try HostTensor(shape: [4], values: [1.5, -4, 2, 0.25])
        // Largest difference 0.5 (first element), largest |expected| 4: 0.125.
        #expect(actual.maxRelativeError(from: expected) == 0.125)
        #expect(expected.maxRelativeError(from: expected) == 0)
    }

    @Test("absolute against all zeros; NaN disagreement and shape mismatch")
    func edges() throws {
        let zeros = try HostTensor(shape: [2], values: [0, 0])
        #expect(try HostTensor(shape: [2], values: [0, -3]).maxRelativeError(from: zeros) == 3)
        let withNaN = try HostTensor(shape: [2], values: [.nan, 1])
        #expect(withNaN.maxRelativeError(from: withNaN) == 0)
        #expect(withNaN.maxRelativeError(from: try HostTensor(shape: [2], values: [0, 1])).isNaN)
        #expect(zeros.maxRelativeError(from: try HostTensor(shape: [1, 2], values: [0, 0])) == .infinity)
    }
}
