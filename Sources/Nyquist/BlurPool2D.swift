import NyquistCL
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
public struct BlurPool2D: PoolingLayer {
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

    /// The separable window of this layer at one input shape.
    func window(_ input: Shape4D, _ output: Shape4D) throws -> SeparableWindow {
        try Self.window(configuration, mapHeight: input.h, mapWidth: input.w, output: output)
    }

    static func window(_ configuration: BlurPool2DConfiguration, mapHeight: Int, mapWidth: Int, output: Shape4D) throws
        -> SeparableWindow
    {
        let taps: [Float] = try BinomialFilter.taps(size: configuration.filterSize)
        let pads = configuration.pads
        return SeparableWindow(
            rows: SeparableWindow.axis(
                size: mapHeight, outputSize: output.h, taps: taps, stride: configuration.stride, padBefore: pads.top,
                mode: configuration.padding),
            columns: SeparableWindow.axis(
                size: mapWidth, outputSize: output.w, taps: taps, stride: configuration.stride, padBefore: pads.left,
                mode: configuration.padding))
    }
}

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

    /// Backward's launches: the window's adjoint into the max map's gradient, then its routing
    /// to the first maximum of each 2x2 window. Buffers: 0 gradOutput, 1 the saved input,
    /// 2 gradInput; temporary 3 the max map's gradient.
    private static func backwardLaunches(
        _ configuration: MaxBlurPool2DConfiguration, input inputShape: Shape4D, map: Shape4D, output: Shape4D,
        on device: Device
    ) throws -> [PreparedLaunch] {
        let planes = inputShape.n * inputShape.c
        let window = try BlurPool2D.window(configuration.blur, mapHeight: map.h, mapWidth: map.w, output: output)
        let adjoint = try window.backwardLaunches(on: device, planes: planes, buffers: (0, 3))
        // Routing to the 2x2 maxima: vectors of 8 input columns away from the left and right
        // borders (every window column of theirs inside), all rows; the one-element kernel on
        // the side strips.
        let (perItem, vectorColumns) = SeparableWindow.vectorColumns(1..<max(inputShape.w - 1, 1), 8)
        let parameters = WindowLaunch.choose(.windowBackward, width: inputShape.w, on: device)
        return adjoint + (try window.splitLaunches(
            on: device, program: try device.program("blur_pool.cl"),
            kernels: ("max_map_backward_vector", "max_map_backward"),
            buffers: [.bound(1), .bound(3), .bound(2)],
            interiorExtras: [], tables: [], shape: [.int(planes), .int(inputShape.h), .int(inputShape.w)],
            planes: planes,
            interior: (0..<inputShape.h, perItem == 8 ? vectorColumns : 1..<1),
            extent: (inputShape.h, inputShape.w), outputsPerItem: 8, parameters: parameters))
    }
}
