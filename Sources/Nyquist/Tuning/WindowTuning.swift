import NyquistCore

/// The tuner's view of the window kernel families (max pool, avg pool, BlurPool, MaxBlurPool):
/// what `nyquist-bench --tune` measures and saves for this device.
package enum WindowTuning {
    /// Representative inputs per shape class (the class is the width of what a pass writes:
    /// 128 -> outputs 64 wide, 56 -> 28 medium, 14 -> 7 narrow).
    static let shapeClasses: [(name: String, inputShape: [Int])] = [
        ("wide", [2, 32, 128, 128]), ("medium", [4, 64, 56, 56]), ("narrow", [8, 128, 14, 14]),
    ]

    /// The tunable families, all with ``WindowKnobs`` and their candidates: BlurPool forward
    /// (also AvgPool's), MaxBlurPool's fused forward, the window backward (BlurPool, AvgPool,
    /// MaxBlurPool) and MaxPool forward (k 3, s 2, p 1).
    package static func families() throws -> [TunableFamily] {
        let maxPool = try MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
        return [
            TunableFamily(
                name: WindowLaunch.windowForward.rawValue, knobs: WindowKnobs.self, shapeClasses: shapeClasses,
                prepare: { input in try forwardRun(BlurPool2D(channels: input.shape[1]), input) }),
            TunableFamily(
                name: WindowLaunch.maxBlurForward.rawValue, knobs: WindowKnobs.self, shapeClasses: shapeClasses,
                prepare: { input in try forwardRun(MaxBlurPool2D(channels: input.shape[1]), input) }),
            TunableFamily(
                name: WindowLaunch.windowBackward.rawValue, knobs: WindowKnobs.self, shapeClasses: shapeClasses,
                prepare: { input in
                    let layer = try BlurPool2D(channels: input.shape[1])
                    let (output, saved) = try layer.forwardTraining(input)
                    let gradInput = try DeviceTensor(shape: input.shape, on: input.device)
                    return { try layer.backward(output, saved, into: gradInput) }
                }),
            TunableFamily(
                name: WindowLaunch.maxPoolForward.rawValue, knobs: WindowKnobs.self, shapeClasses: shapeClasses,
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
