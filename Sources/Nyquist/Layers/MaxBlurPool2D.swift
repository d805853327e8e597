import NyquistCore

/// MaxBlurPool (Zhang 2019): max pooling with kernel 2 and stride 1, then BlurPool, computed by
/// one fused kernel that takes each 2x2 maximum on the fly, so the (H-1) x (W-1) max map never
/// exists in memory during inference. Output: BlurPool of an (H-1) x (W-1) map (56 x 56 from
/// 112 x 112 with the defaults). Needs H, W >= 2.
///
/// Backward materialises the gradient of the max map once ((H-1) x (W-1) floats, freed on
/// return) and routes it to the first maximum of each 2x2 window (re-found from the input, 8
/// columns per work item away from the borders).
public struct MaxBlurPool2D: PoolingLayer {
    /// The options (shared with `Reference.maxBlurPool2D`).
    public let configuration: MaxBlurPool2DConfiguration

    /// Builds the layer; defaults match the published module (filter 4, stride 2, reflect).
    public init(channels: Int, filterSize: Int = 4, stride: Int = 2, padding: PaddingMode = .reflect, padOffset: Int = 0)
        throws
    {
        configuration = try MaxBlurPool2DConfiguration(
            channels: channels, filterSize: filterSize, stride: stride, padding: padding, padOffset: padOffset)
    }

    /// Builds the layer from a configuration.
    public init(_ configuration: MaxBlurPool2DConfiguration) {
        self.configuration = configuration
    }

    /// Writes the forward result into `output` (shape from the configuration); allocates nothing.
    public func forward(_ input: DeviceTensor, into output: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateForward(input, output)
        let device = input.device
        try device.compiledPass(PlanKey(configuration: configuration, pass: .forward, input: inputShape)) {
            let map = try configuration.maxMapShape(for: inputShape)
            return try BlurPool2D.window(configuration.blur, mapHeight: map.h, mapWidth: map.w, output: outputShape)
                .forwardLaunches(
                    on: device, planes: inputShape.n * inputShape.c, inputHeight: inputShape.h,
                    inputWidth: inputShape.w, maxMap: true)
        }.run(on: device, input.buffer, output.buffer)
    }

    /// Writes the gradient with respect to the input into `gradInput` (the input's shape).
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateBackward(gradOutput, saved, gradInput)
        let map = try configuration.maxMapShape(for: inputShape)
        let device = gradOutput.device
        try device.compiledPass(PlanKey(configuration: configuration, pass: .backward, input: inputShape)) {
            CompiledPass(
                try Self.backwardLaunches(configuration, input: inputShape, map: map, output: outputShape, on: device),
                temporaries: [map.count])
        }.run(on: device, gradOutput.buffer, saved.input.buffer, gradInput.buffer)
    }
}
