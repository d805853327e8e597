import NyquistCL
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

    /// Forward's launches. Buffers: 0 input, 1 output.
    private func forwardLaunches(_ inputShape: Shape4D, _ outputShape: Shape4D, on device: Device) throws
        -> [PreparedLaunch]
    {
        let window = self.window(inputShape, outputShape)
        let rows = try device.axisTables(window.rows)
        let columns = try device.axisTables(window.columns)
        let parameters = WindowLaunch.choose(.maxPoolForward, width: outputShape.w, on: device)
        let (perItem, interiorColumns) = SeparableWindow.vectorColumns(
            columns.interior, configuration.stride == 2 ? parameters.outputsPerItem : 1)
        var defines = ["KERNEL_SIZE": configuration.kernelSize, "STRIDE": configuration.stride]
        if perItem > 1 { defines["OUTPUTS_PER_ITEM"] = perItem }
        let program = try device.program("max_pool.cl", defines: defines)
        return try window.splitLaunches(
            on: device, program: program,
            kernels: (perItem > 1 ? "max_pool_forward_interior_vector" : "max_pool_forward_interior", "max_pool_forward"),
            buffers: [.bound(0), .bound(1)],
            interiorExtras: perItem > 1 ? [.buffer(rows.source)] : [],
            tables: [.buffer(rows.source), .buffer(columns.source)],
            shape: [
                .int(inputShape.n * inputShape.c), .int(inputShape.h), .int(inputShape.w), .int(outputShape.h),
                .int(outputShape.w),
            ],
            // The vector kernel reads rows through the table: every row, only side strips left.
            planes: inputShape.n * inputShape.c,
            interior: (perItem > 1 ? 0..<outputShape.h : rows.interior, interiorColumns),
            extent: (outputShape.h, outputShape.w), outputsPerItem: perItem, parameters: parameters)
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
        // Buffers: 0 input, 1 output, 2 argmax.
        try device.compiledPass(PlanKey(configuration: configuration, pass: .trainingForward, input: inputShape)) {
            let window = self.window(inputShape, outputShape)
            let rows = try device.axisTables(window.rows)
            let columns = try device.axisTables(window.columns)
            let program = try device.program(
                "max_pool.cl", defines: ["KERNEL_SIZE": configuration.kernelSize, "STRIDE": configuration.stride])
            return [
                try device.context.prepare(
                    "max_pool_forward_argmax", in: program,
                    arguments: [
                        .bound(0), .bound(1), .bound(2), .buffer(rows.source), .buffer(columns.source),
                        .int(inputShape.n * inputShape.c), .int(inputShape.h), .int(inputShape.w), .int(outputShape.h),
                        .int(outputShape.w),
                    ],
                    global: [outputShape.w, outputShape.h, inputShape.n * inputShape.c])
            ]
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

    /// Backward's launches. Buffers: 0 the argmax indices (`fromIndices`) or the saved input,
    /// 1 gradOutput, 2 gradInput.
    private func backwardLaunches(_ inputShape: Shape4D, _ outputShape: Shape4D, fromIndices: Bool, on device: Device)
        throws -> [PreparedLaunch]
    {
        let window = self.window(inputShape, outputShape)
        let rows = try device.axisTables(window.rows)
        let columns = try device.axisTables(window.columns)
        let program = try device.program(
            "max_pool.cl",
            defines: [
                "KERNEL_SIZE": configuration.kernelSize, "STRIDE": configuration.stride, "FAN_IN_ROWS": rows.fanIn,
                "FAN_IN_COLS": columns.fanIn,
            ])
        let shape: [LaunchArgument] = try [
            .int(inputShape.n * inputShape.c), .int(inputShape.h), .int(inputShape.w), .int(outputShape.h),
            .int(outputShape.w),
        ]
        if fromIndices {
            // Vectors of 8 columns (stride 2) start on an even padded column; the rest of the
            // columns go through the one-element kernel.
            let vectorColumns =
                configuration.stride == 2
                ? SeparableWindow.alignedVectorColumns(
                    columns.backwardInterior, lanes: 8, padBefore: configuration.padding) : 0..<0
            return try window.splitLaunches(
                on: device, program: program,
                kernels: ("max_pool_backward_argmax_vector", "max_pool_backward_argmax"),
                buffers: [.bound(0), .bound(1), .bound(2)],
                interiorExtras: [.buffer(rows.target)], tables: [.buffer(rows.target), .buffer(columns.target)],
                shape: shape, planes: inputShape.n * inputShape.c, interior: (0..<inputShape.h, vectorColumns),
                extent: (inputShape.h, inputShape.w), outputsPerItem: 8,
                parameters: WindowLaunch.choose(.windowBackward, width: inputShape.w, on: device))
        }
        return [
            try device.context.prepare(
                "max_pool_backward", in: program,
                arguments: [
                    .bound(0), .bound(1), .bound(2), .buffer(rows.source), .buffer(columns.source),
                    .buffer(rows.target), .buffer(columns.target),
                ] + shape,
                global: [inputShape.w, inputShape.h, inputShape.n * inputShape.c])
        ]
    }

    private func window(_ input: Shape4D, _ output: Shape4D) -> SeparableWindow {
        let taps = [Float](repeating: 1, count: configuration.kernelSize)
        func axis(_ size: Int, _ outputSize: Int) -> AxisGeometry {
            AxisGeometry(
                inputSize: size, outputSize: outputSize, stride: configuration.stride, padBefore: configuration.padding,
                border: .clampToWindow, taps: taps)
        }
        return SeparableWindow(rows: axis(input.h, output.h), columns: axis(input.w, output.w))
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
        let device = input.device
        try device.compiledPass(PlanKey(configuration: configuration, pass: .forward, input: inputShape)) {
            try window(inputShape, outputShape).forwardLaunches(
                on: device, planes: inputShape.n * inputShape.c, inputHeight: inputShape.h, inputWidth: inputShape.w,
                maxMap: false)
        }.run(on: device, input.buffer, output.buffer)
    }

    /// Writes the gradient with respect to the input into `gradInput` (the input's shape).
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateBackward(gradOutput, saved, gradInput)
        let device = gradOutput.device
        try device.compiledPass(PlanKey(configuration: configuration, pass: .backward, input: inputShape)) {
            try window(inputShape, outputShape).backwardLaunches(on: device, planes: inputShape.n * inputShape.c)
        }.run(on: device, gradOutput.buffer, gradInput.buffer)
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
