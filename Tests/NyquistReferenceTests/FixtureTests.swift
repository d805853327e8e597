import Foundation
import NyquistCore
import NyquistReference
import Testing

/// Cross-check against Fixtures/blur_pool_fixtures.json, written by Fixtures/generate_fixtures.py:
/// an independent numpy implementation of SPEC.md section 2 built on `np.pad`.
@Suite("numpy fixtures")
struct FixtureTests {
    struct Fixture: Decodable {
        let cases: [Case]
    }

    struct Case: Decodable, CustomStringConvertible {
        let `operator`: String
        let inputShape: [Int]
        let filterSize: Int
        let stride: Int
        let padding: String
        let padOffset: Int
        let input: [Double]
        let outputShape: [Int]
        let output: [Double]

        var description: String {
            "\(`operator`) \(inputShape) k=\(filterSize) s=\(stride) \(padding) offset=\(padOffset)"
        }
    }

    static func load() throws -> [Case] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/blur_pool_fixtures.json")
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url)).cases
    }

    /// The reference's output for a fixture case, in `T`, as Double.
    func run<T: BinaryFloatingPoint & Sendable>(_ fixture: Case, as: T.Type) throws -> Tensor<Double> {
        let mode = try #require(PaddingMode(rawValue: fixture.padding))
        let x: Tensor<T> = try Tensor<Double>(shape: fixture.inputShape, values: fixture.input).converted()
        let channels = fixture.inputShape[1]
        switch fixture.operator {
        case "blur-pool":
            let config = try BlurPool2DConfiguration(
                channels: channels, filterSize: fixture.filterSize, stride: fixture.stride, padding: mode,
                padOffset: fixture.padOffset)
            return try Reference.blurPool2D(x, config).converted()
        default:
            let config = try MaxBlurPool2DConfiguration(
                channels: channels, filterSize: fixture.filterSize, stride: fixture.stride, padding: mode,
                padOffset: fixture.padOffset)
            return try Reference.maxBlurPool2D(x, config).converted()
        }
    }

    @Test("The fixture file covers every padding mode and both operators")
    func coverage() throws {
        let cases = try Self.load()
        #expect(Set(cases.map(\.padding)) == Set(PaddingMode.allCases.map(\.rawValue)))
        #expect(Set(cases.map(\.operator)) == ["blur-pool", "max-blur-pool"])
    }

    /// Tolerances are relative to the largest |expected| of the case (outputs near 0 make a
    /// per-element relative error meaningless; the filter is a convex combination so the
    /// largest output bounds every rounding error).
    ///
    /// Double, 1e-12: both sides sum the same products in Double, only the order differs
    /// (at most k*k = 49 terms, so the difference is a few ulps, about 1e-15).
    /// Float, 1e-6: the inputs are rounded to Float (relative error 2^-24 = 6e-8 each, and the
    /// blur is a weighted average, so the output moves by at most that much of max |x|), the
    /// sums run in Double and the output is rounded once more (another 6e-8): 1e-6 leaves 8x
    /// margin while still catching any wrong tap, pad or index, which moves outputs by > 1e-3.
    @Test("Reference matches numpy", arguments: [false, true])
    func matchesNumpy(singlePrecision: Bool) throws {
        for fixture in try Self.load() {
            let y = singlePrecision ? try run(fixture, as: Float.self) : try run(fixture, as: Double.self)
            #expect(y.shape == fixture.outputShape, "\(fixture)")
            let scale = max(maxAbs(fixture.output), 1e-300)
            let error = maxAbsDifference(y.values, fixture.output) / scale
            #expect(error <= (singlePrecision ? 1e-6 : 1e-12), "\(fixture): relative error \(error)")
        }
    }
}
