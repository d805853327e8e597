import NyquistCore

/// Average pooling, the aliasing baseline: window `kernelSize`, `stride` (default = kernel
/// size), zero `padding` (at most k/2); the divisor is always k*k, padded zeros included
/// (PyTorch's default `count_include_pad=True`). It is a box filter, so it runs on the same
/// separable kernels as BlurPool.
public struct AvgPool2D: PoolingLayer, SeparableWindowLayer {
    /// The options (shared with `Reference.avgPool2D`).
    public let configuration: AvgPool2DConfiguration

    /// Builds the layer; throws for kernel or stride < 1 or padding outside 0...k/2.
    public init(kernelSize: Int = 2, stride: Int? = nil, padding: Int = 0) throws {
        configuration = try AvgPool2DConfiguration(kernelSize: kernelSize, stride: stride, padding: padding)
    }

    /// Builds the layer from a configuration.
    public init(_ configuration: AvgPool2DConfiguration) {
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
