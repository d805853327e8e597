import NyquistCore

/// BlurPool (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"): pads the input,
/// filters every channel with the same binomial low-pass of size `filterSize`, and keeps every
/// `stride`-th sample, which removes the aliasing of a plain strided subsampling.
///
/// Input N x C x H x W; output N x C x H' x W' with H' = floor((H + k - 1 + 2 padOffset - k) / s) + 1,
/// which is ceil(H/2) for the default stride 2. Defaults match the published module
/// (`antialiased-cnns`): filter size 4 ([1,3,3,1]), stride 2, reflect padding. No parameters.
///
/// ```swift
/// let device = try Device.default()
/// let pool = try BlurPool2D(channels: 64)
/// let y = try pool(try DeviceTensor(x, on: device))
/// ```
public struct BlurPool2D: PoolingLayer, SeparableWindowLayer {
    /// The options (shared with `Reference.blurPool2D`).
    public let configuration: BlurPool2DConfiguration

    /// Builds the layer; throws ``NyquistError`` for a filter size outside 1...7, stride < 1, ...
    public init(channels: Int, filterSize: Int = 4, stride: Int = 2, padding: PaddingMode = .reflect, padOffset: Int = 0)
        throws
    {
        configuration = try BlurPool2DConfiguration(
            channels: channels, filterSize: filterSize, stride: stride, padding: padding, padOffset: padOffset)
    }

    /// Builds the layer from a configuration.
    public init(_ configuration: BlurPool2DConfiguration) {
        self.configuration = configuration
    }

    /// Writes the forward result into `output` (shape from the configuration); allocates nothing.
    public func forward(_ input: DeviceTensor, into output: DeviceTensor) throws {
        try windowForward(input, into: output)
    }

    /// Writes the gradient with respect to the input into `gradInput` (the input's shape).
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws {
        try windowBackward(gradOutput, saved, into: gradInput)
    }
}
