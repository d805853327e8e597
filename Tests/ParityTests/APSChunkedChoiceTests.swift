import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

@testable import Nyquist

// APS's phase choice is split over several work-groups per sample (partial norms, then a join
// in chunk order). The main parity grid mostly has too few rows per sample for more than one
// chunk on a 2-core CPU device, so these shapes are picked to need several, and the test checks
// that they do before comparing with the reference.
@Suite("APS phase choice over several work-groups per sample")
struct APSChunkedChoiceTests {
    static let shapes: [[Int]] = [[1, 16, 40, 37], [2, 9, 33, 10], [3, 64, 17, 8]]

    @Test("phases, outputs and gradients match the reference when each sample's norm is split")
    func chunkedChoice() throws {
        let device = try TestDevice.get()
        var compared = 0
        for (index, shape) in Self.shapes.enumerated() {
            let group = PolyphaseLaunch.chooseAPS(for: device, height: shape[2] + shape[2] % 2).groupSize
            let chunks = APSPool2D.chunksPerSample(
                try Shape4D(n: shape[0], c: shape[1], h: shape[2], w: shape[3]), groupSize: group,
                computeUnits: device.info.computeUnits)
            #expect(chunks > 1, "\(shape) should split its norm over several work-groups, got \(chunks)")
            for norm in PolyphaseNorm.allCases {
                let config = try APSPool2DConfiguration(channels: shape[1], norm: norm)
                let x = try randomTensor(shape, seed: UInt64(900 + index))
                let (expected, expectedIndices) = try Reference.apsPool2D(x, config)
                let (training, saved) = try APSPool2D(config).forwardTraining(
                    try DeviceTensor(x, on: device), indices: nil)
                let output = training.output
                let chosen = try training.indices.toHost().values.map { Int($0) }
                for (sample, gap) in try apsNormGap(x, config).enumerated() where gap > 1e-4 {
                    #expect(chosen[sample] == expectedIndices[sample], "\(config) on \(shape), sample \(sample)")
                    compared += 1
                }
                if chosen == expectedIndices {
                    let gradOutput = try randomTensor(expected.shape, seed: UInt64(950 + index))
                    let gradient = try APSPool2D(config).backward(try DeviceTensor(gradOutput, on: device), saved).input
                    let expectedGradient = try Reference.apsPool2DBackward(
                        gradOutput: gradOutput, saved: .init(input: x, indices: expectedIndices), config)
                    #expect(Discrepancy(actual: try output.toHost().values, expected: expected.values).within(0))
                    #expect(Discrepancy(actual: try gradient.toHost().values, expected: expectedGradient.values).within(0))
                }
            }
        }
        #expect(compared > 0)
    }

    @Test("a NaN in a later chunk of a sample still wins the phase choice, an Inf beats every finite norm")
    func nonFiniteInALaterChunk() throws {
        let device = try TestDevice.get()
        let shape = [2, 16, 40, 37]
        var x = try randomTensor(shape, seed: 5)
        let plane = 40 * 37
        // Sample 0: NaN in channel 15 (rows handled by the last work-groups), row 39, column 4:
        // phase p1 = (1, 0). Sample 1: +Inf in channel 12, row 22, column 9: phase p2 = (0, 1).
        x.values[15 * plane + 39 * 37 + 4] = .nan
        x.values[16 * plane + 12 * plane + 22 * 37 + 9] = .infinity
        for norm in PolyphaseNorm.allCases {
            let config = try APSPool2DConfiguration(channels: 16, norm: norm)
            let (_, expectedIndices) = try Reference.apsPool2D(x, config)
            #expect(expectedIndices == [1, 2], "reference, \(norm)")
            let indices = try APSPool2D(config)(try DeviceTensor(x, on: device), indices: nil).indices
            #expect(try indices.toHost().values.map { Int($0) } == expectedIndices, "device, \(norm)")
        }
    }
}
