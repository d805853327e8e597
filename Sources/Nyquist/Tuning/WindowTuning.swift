import NyquistCore

/// The tuner's view of the window kernel families (max pool, avg pool, BlurPool, MaxBlurPool):
/// what `nyquist-bench --tune` measures and saves for this device.
package enum WindowTuning {
    /// Representative inputs per shape class (the class is the width of what a pass writes:
    /// 128 -> outputs 64 wide, 56 -> 28 medium, 14 -> 7 narrow).
    static let shapeClasses: [(name: String, inputShape: [Int])] = [
        ("wide", [2, 32, 128, 128]), ("medium", [4, 64, 56, 56]), ("narrow", [8, 128, 14, 14]),
    ]

    /// Every candidate: 1, 2, 4 or 8 outputs per work item, with the driver's work-group size,
    /// a row of up to 64 work items, 16 x 4 tiles, or up to 64 x 8 (each clamped to the launch);
    /// the vector ones (2, 4, 8) both with the side columns folded into the vector kernel and
    /// with a separate strip launch.
    package static let candidates: [LaunchParameters] = [1, 2, 4, 8].flatMap { perItem in
        [nil, [64, 1, 1], [16, 4, 1], [64, 8, 1]].flatMap { local in
            (perItem > 1 ? [false, true] : [false]).map {
                LaunchParameters(outputsPerItem: perItem, localSize: local, foldedSides: $0)
            }
        }
    }

    /// The tunable families: BlurPool forward (also AvgPool's), MaxBlurPool's fused forward,
    /// the window backward (BlurPool, AvgPool, MaxBlurPool) and MaxPool forward (k 3, s 2, p 1).
    package static func families() throws -> [TunableFamily] {
        let maxPool = try MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
        return [
            TunableFamily(
                name: WindowLaunch.windowForward.rawValue, shapeClasses: shapeClasses, candidates: candidates,
                prepare: { input in try forwardRun(BlurPool2D(channels: input.shape[1]), input) }),
            TunableFamily(
                name: WindowLaunch.maxBlurForward.rawValue, shapeClasses: shapeClasses, candidates: candidates,
                prepare: { input in try forwardRun(MaxBlurPool2D(channels: input.shape[1]), input) }),
            TunableFamily(
                name: WindowLaunch.windowBackward.rawValue, shapeClasses: shapeClasses, candidates: candidates,
                prepare: { input in
                    let layer = try BlurPool2D(channels: input.shape[1])
                    let (output, saved) = try layer.forwardTraining(input)
                    let gradInput = try DeviceTensor(shape: input.shape, on: input.device)
                    return { try layer.backward(output, saved, into: gradInput) }
                }),
            TunableFamily(
                name: WindowLaunch.maxPoolForward.rawValue, shapeClasses: shapeClasses, candidates: candidates,
                prepare: { input in try forwardRun(maxPool, input) }),
        ]
    }

    private static func forwardRun<Layer: PoolingLayer>(_ layer: Layer, _ input: DeviceTensor) throws
        -> () throws -> Void
    {
        let output = try DeviceTensor(shape: layer.outputShape(for: input).dimensions, on: input.device)
        return { try layer.forward(input, into: output) }
    }
}
