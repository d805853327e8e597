import NyquistCore

/// Max pooling, the aliasing baseline: window `kernelSize`, `stride` (default = kernel size),
/// `padding` of -infinity on every side (at most k/2). A NaN in a window gives NaN. Backward
/// sends each output's gradient to the first maximum of its window in row-major order, adding
/// where windows overlap; it re-finds the maxima from the saved input instead of storing an
/// index tensor.
public struct MaxPool2D: PoolingLayer {
    /// The options (shared with `Reference.maxPool2D`).
    public let configuration: MaxPool2DConfiguration

    /// Builds the layer; throws for kernel or stride < 1 or padding outside 0...k/2.
    public init(kernelSize: Int = 2, stride: Int? = nil, padding: Int = 0) throws {
        configuration = try MaxPool2DConfiguration(kernelSize: kernelSize, stride: stride, padding: padding)
    }

    /// Builds the layer from a configuration.
    public init(_ configuration: MaxPool2DConfiguration) {
        self.configuration = configuration
    }

    /// Writes the forward result into `output` (shape from the configuration); allocates nothing.
    public func forward(_ input: DeviceTensor, into output: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateForward(input, output)
        let device = input.device
        let (rows, columns) = try tables(inputShape, outputShape, on: device)
        let program = try device.program("max_pool.cl", defines: ["KERNEL_SIZE": configuration.kernelSize])
        try device.context.dispatch(
            "max_pool_forward", in: program,
            arguments: [
                .buffer(input.buffer), .buffer(output.buffer), .buffer(rows.source), .buffer(columns.source),
                .int(inputShape.n * inputShape.c), .int(inputShape.h), .int(inputShape.w),
                .int(outputShape.h), .int(outputShape.w),
            ],
            global: [outputShape.w, outputShape.h, inputShape.n * inputShape.c])
    }

    /// Writes the gradient with respect to the input into `gradInput` (the input's shape).
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateBackward(gradOutput, saved, gradInput)
        let device = gradOutput.device
        let (rows, columns) = try tables(inputShape, outputShape, on: device)
        let program = try device.program(
            "max_pool.cl",
            defines: ["KERNEL_SIZE": configuration.kernelSize, "FAN_IN_ROWS": rows.fanIn, "FAN_IN_COLS": columns.fanIn])
        try device.context.dispatch(
            "max_pool_backward", in: program,
            arguments: [
                .buffer(saved.input.buffer), .buffer(gradOutput.buffer), .buffer(gradInput.buffer),
                .buffer(rows.source), .buffer(columns.source), .buffer(rows.target), .buffer(columns.target),
                .int(inputShape.n * inputShape.c), .int(inputShape.h), .int(inputShape.w),
                .int(outputShape.h), .int(outputShape.w),
            ],
            global: [inputShape.w, inputShape.h, inputShape.n * inputShape.c])
    }

    private func tables(_ input: Shape4D, _ output: Shape4D, on device: Device) throws -> (
        AxisTableBuffers, AxisTableBuffers
    ) {
        let taps = [Float](repeating: 1, count: configuration.kernelSize)
        func axis(_ size: Int, _ outputSize: Int) -> AxisGeometry {
            AxisGeometry(
                inputSize: size, outputSize: outputSize, stride: configuration.stride, padBefore: configuration.padding,
                border: .clampToWindow, taps: taps)
        }
        return (try device.axisTables(axis(input.h, output.h)), try device.axisTables(axis(input.w, output.w)))
    }
}

/// Average pooling, the aliasing baseline: window `kernelSize`, `stride` (default = kernel
/// size), zero `padding` (at most k/2); the divisor is always k*k, padded zeros included
/// (PyTorch's default `count_include_pad=True`). It is a box filter, so it runs on the same
/// separable kernels as BlurPool.
public struct AvgPool2D: PoolingLayer {
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
        let (inputShape, outputShape) = try validateForward(input, output)
        try window(inputShape, outputShape).forward(
            input, into: output, planes: inputShape.n * inputShape.c, inputHeight: inputShape.h,
            inputWidth: inputShape.w, maxMap: false)
    }

    /// Writes the gradient with respect to the input into `gradInput` (the input's shape).
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateBackward(gradOutput, saved, gradInput)
        try window(inputShape, outputShape).backward(gradOutput, into: gradInput, planes: inputShape.n * inputShape.c)
    }

    private func window(_ input: Shape4D, _ output: Shape4D) -> SeparableWindow {
        let taps = [Float](repeating: 1 / Float(configuration.kernelSize), count: configuration.kernelSize)
        return SeparableWindow(
            rows: SeparableWindow.axis(
                size: input.h, outputSize: output.h, taps: taps, stride: configuration.stride,
                padBefore: configuration.padding, mode: .zero),
            columns: SeparableWindow.axis(
                size: input.w, outputSize: output.w, taps: taps, stride: configuration.stride,
                padBefore: configuration.padding, mode: .zero))
    }
}
