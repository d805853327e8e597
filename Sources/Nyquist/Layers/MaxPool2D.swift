import NyquistCore

/// Max pooling, the aliasing baseline: window `kernelSize`, `stride` (default = kernel size),
/// `padding` of -infinity on every side (at most k/2). A NaN in a window gives NaN. Backward
/// sends each output's gradient to the first maximum of its window in row-major order, adding
/// where windows overlap, through the first-maximum indices the training forward saves (or,
/// without them, by re-finding the maxima from the saved input).
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
        try device.compiledPass(PlanKey(configuration: configuration, pass: .forward, input: inputShape)) {
            try forwardLaunches(inputShape, outputShape, on: device)
        }.run(on: device, input.buffer, output.buffer)
    }

    /// Training forward: the output and, besides the input, the index of each window's first
    /// maximum (an int32 tensor of the output's shape under ``argmaxKey``), which makes backward
    /// a comparison of indices instead of a re-scan of every window.
    public func forwardTraining(_ input: DeviceTensor) throws -> (output: DeviceTensor, saved: SavedForBackward) {
        let inputShape = try input.nchw("\(MaxPool2DConfiguration.operatorName) input")
        let outputShape = try configuration.outputShape(for: inputShape)
        let device = input.device
        let output = try DeviceTensor(shape: outputShape.dimensions, on: device)
        // Int32 indices stored in a float tensor's buffer (same size); only kernels read them.
        let argmax = try DeviceTensor(shape: outputShape.dimensions, on: device)
        try device.compiledPass(PlanKey(configuration: configuration, pass: .trainingForward, input: inputShape)) {
            try trainingForwardLaunches(inputShape, outputShape, on: device)
        }.run(on: device, input.buffer, output.buffer, argmax.buffer)
        return (output, SavedForBackward(input: input, tensors: [argmaxKey: argmax]))
    }

    /// The key of the saved argmax indices; it names the configuration, so state saved by a
    /// max pool with other windows is never used (backward then re-finds the maxima).
    public var argmaxKey: String {
        "argmax k\(configuration.kernelSize) s\(configuration.stride) p\(configuration.padding)"
    }

    /// Writes the gradient with respect to the input into `gradInput` (the input's shape).
    /// Uses the argmax indices of ``forwardTraining(_:)`` when `saved` holds them, else re-finds
    /// each window's first maximum from the saved input.
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateBackward(gradOutput, saved, gradInput)
        let device = gradOutput.device
        if let argmax = saved.tensors[argmaxKey], argmax.shape == outputShape.dimensions, argmax.device === device {
            try device.compiledPass(PlanKey(configuration: configuration, pass: .backwardFromIndices, input: inputShape)) {
                try backwardLaunches(inputShape, outputShape, fromIndices: true, on: device)
            }.run(on: device, argmax.buffer, gradOutput.buffer, gradInput.buffer)
            return
        }
        try device.compiledPass(PlanKey(configuration: configuration, pass: .backward, input: inputShape)) {
            try backwardLaunches(inputShape, outputShape, fromIndices: false, on: device)
        }.run(on: device, saved.input.buffer, gradOutput.buffer, gradInput.buffer)
    }
}
