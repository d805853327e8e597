import Nyquist
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

// OpenCL vs CPU reference for every operator, option and grid shape: inference forward,
// training forward and backward, outputs guarded by sentinels. Each test prints its worst
// relative errors, which docs/parity.md records.

func maxPoolCase(_ configuration: MaxPool2DConfiguration) -> ParityCase<MaxPool2D> {
    ParityCase(
        layer: MaxPool2D(configuration), tolerance: Tolerance.maxPoolForward, backwardTolerance: Tolerance.window,
        reference: { try Reference.maxPool2D($0, configuration) },
        referenceBackward: { gradOutput, input in
            try Reference.maxPool2DBackward(
                gradOutput: gradOutput, saved: Reference.maxPool2DTraining(input, configuration).saved, configuration)
        })
}

func avgPoolCase(_ configuration: AvgPool2DConfiguration) -> ParityCase<AvgPool2D> {
    ParityCase(
        layer: AvgPool2D(configuration), tolerance: Tolerance.window, backwardTolerance: Tolerance.window,
        reference: { try Reference.avgPool2D($0, configuration) },
        referenceBackward: { gradOutput, input in
            try Reference.avgPool2DBackward(
                gradOutput: gradOutput, saved: Reference.avgPool2DTraining(input, configuration).saved, configuration)
        })
}

func blurPoolCase(_ configuration: BlurPool2DConfiguration) -> ParityCase<BlurPool2D> {
    ParityCase(
        layer: BlurPool2D(configuration), tolerance: Tolerance.window, backwardTolerance: Tolerance.window,
        reference: { try Reference.blurPool2D($0, configuration) },
        referenceBackward: { gradOutput, input in
            try Reference.blurPool2DBackward(
                gradOutput: gradOutput, saved: Reference.blurPool2DTraining(input, configuration).saved, configuration)
        })
}

func maxBlurPoolCase(_ configuration: MaxBlurPool2DConfiguration) -> ParityCase<MaxBlurPool2D> {
    ParityCase(
        layer: MaxBlurPool2D(configuration), tolerance: Tolerance.window, backwardTolerance: Tolerance.window,
        reference: { try Reference.maxBlurPool2D($0, configuration) },
        referenceBackward: { gradOutput, input in
            try Reference.maxBlurPool2DBackward(
                gradOutput: gradOutput, saved: Reference.maxBlurPool2DTraining(input, configuration).saved, configuration)
        })
}

/// The padding modes crossed with the pad offsets of the grid.
let paddingOptions: [(PaddingMode, Int)] = PaddingMode.allCases.flatMap { mode in [(mode, 0), (mode, 1)] }

@Suite("OpenCL vs reference", .parityReport)
struct OperatorParityTests {
    @Test("max-pool", arguments: [(1, 1, 0), (2, 2, 0), (2, 1, 1), (3, 2, 1), (3, 3, 0), (3, 1, 1), (5, 2, 2), (4, 3, 2)])
    func maxPool(kernel: Int, stride: Int, padding: Int) throws {
        let worst = try maxPoolCase(MaxPool2DConfiguration(kernelSize: kernel, stride: stride, padding: padding))
            .checkGrid(seed: 11)
        print("max-pool k=\(kernel) s=\(stride) p=\(padding): \(worst)")
    }

    @Test("avg-pool", arguments: [(1, 1, 0), (2, 2, 0), (2, 1, 1), (3, 2, 1), (3, 3, 0), (3, 1, 1), (5, 2, 2), (4, 3, 2)])
    func avgPool(kernel: Int, stride: Int, padding: Int) throws {
        let worst = try avgPoolCase(AvgPool2DConfiguration(kernelSize: kernel, stride: stride, padding: padding))
            .checkGrid(seed: 12)
        print("avg-pool k=\(kernel) s=\(stride) p=\(padding): \(worst)")
    }

    @Test("blur-pool", arguments: 1...7, 1...3)
    func blurPool(filterSize: Int, stride: Int) throws {
        var worst = WorstErrors()
        for (mode, offset) in paddingOptions {
            for (n, c) in parityBatchChannels {
                let parity = blurPoolCase(
                    try BlurPool2DConfiguration(
                        channels: c, filterSize: filterSize, stride: stride, padding: mode, padOffset: offset))
                for (index, size) in paritySpatialSizes.enumerated() {
                    worst.merge(try parity.check(shape: [n, c, size.h, size.w], seed: UInt64(100 + index)))
                }
            }
        }
        print("blur-pool k=\(filterSize) s=\(stride), all paddings: \(worst)")
    }

    @Test("max-blur-pool", arguments: 1...7, 1...3)
    func maxBlurPool(filterSize: Int, stride: Int) throws {
        var worst = WorstErrors()
        for (mode, offset) in paddingOptions {
            for (n, c) in parityBatchChannels {
                let parity = maxBlurPoolCase(
                    try MaxBlurPool2DConfiguration(
                        channels: c, filterSize: filterSize, stride: stride, padding: mode, padOffset: offset))
                for (index, size) in paritySpatialSizes.enumerated() {
                    worst.merge(try parity.check(shape: [n, c, size.h, size.w], seed: UInt64(200 + index)))
                }
            }
        }
        print("max-blur-pool k=\(filterSize) s=\(stride), all paddings: \(worst)")
    }

    @Test("ImageNet-like 8x64x112x112, default options")
    func imageNetShape() throws {
        let shape = [8, 64, 112, 112]
        print("max-pool 8x64x112x112: \(try maxPoolCase(MaxPool2DConfiguration(kernelSize: 2)).check(shape: shape, seed: 1))")
        print("avg-pool 8x64x112x112: \(try avgPoolCase(AvgPool2DConfiguration(kernelSize: 2)).check(shape: shape, seed: 2))")
        print("blur-pool 8x64x112x112: \(try blurPoolCase(BlurPool2DConfiguration(channels: 64)).check(shape: shape, seed: 3))")
        print(
            "max-blur-pool 8x64x112x112: \(try maxBlurPoolCase(MaxBlurPool2DConfiguration(channels: 64)).check(shape: shape, seed: 4))"
        )
    }
}
