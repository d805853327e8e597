/// What every operator configuration offers: a name, validation and shape inference.
///
/// One configuration value drives the OpenCL operator, the CPU reference, the CLI, the tests
/// and the benchmarks, so they can never disagree about what is being computed.
public protocol OperatorConfiguration: Sendable, Hashable, CustomStringConvertible {
    /// The operator's CLI name (`blur-pool`).
    static var operatorName: String { get }
    /// The output shape for `input`; throws a ``NyquistError`` naming the sizes when the input
    /// does not fit (wrong channel count, too small for the padding, over 2^31 elements).
    func outputShape(for input: Shape4D) throws -> Shape4D
}

extension OperatorConfiguration {
    /// Checks that `input` and `output` can be addressed with 32-bit kernel indices.
    func checkDeviceLimits(input: Shape4D, output: Shape4D) throws {
        for (role, shape) in [("input", input), ("output", output)] where shape.count > maximumDeviceElementCount {
            throw NyquistError(
                .sizeLimit,
                "\(Self.operatorName): \(role) \(shape) has \(shape.count) elements; the limit is 2^31 - 1 (split the batch)")
        }
    }

    func checkChannels(_ input: Shape4D, expected: Int) throws {
        guard input.c == expected else {
            throw NyquistError(
                .invalidShape, "\(Self.operatorName): input has \(input.c) channels but the layer was built for \(expected)")
        }
    }
}

/// Throws unless `value` is in 1...`limit` (one of ``ConfigurationLimits``).
func requirePositive(_ value: Int, _ name: String, atMost limit: Int, layer: String) throws {
    try ConfigurationLimits.check(value, name, in: 1...limit, layer: layer)
}

/// The options max and average pooling share (PyTorch's kernel_size, stride, padding), with
/// their validation and output size in one place.
struct PoolingWindow: Sendable, Hashable {
    let kernelSize: Int
    let stride: Int
    let padding: Int

    init(kernelSize: Int, stride: Int?, padding: Int, layer: String) throws {
        try requirePositive(kernelSize, "kernel size", atMost: ConfigurationLimits.windowSize, layer: layer)
        try requirePositive(stride ?? kernelSize, "stride", atMost: ConfigurationLimits.stride, layer: layer)
        guard padding >= 0 && padding <= kernelSize / 2 else {
            throw NyquistError(
                .invalidConfiguration,
                "\(layer): padding \(padding) must be in 0...\(kernelSize / 2) (half the kernel \(kernelSize))")
        }
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
        self.padding = padding
    }

    func outputShape(for input: Shape4D, layer: String) throws -> Shape4D {
        let h = try windowOutputSize(
            size: input.h, padBefore: padding, padAfter: padding, window: kernelSize, stride: stride, axis: "H",
            layer: layer)
        let w = try windowOutputSize(
            size: input.w, padBefore: padding, padAfter: padding, window: kernelSize, stride: stride, axis: "W",
            layer: layer)
        return try Shape4D(n: input.n, c: input.c, h: h, w: w)
    }

    func describe(_ layer: String) -> String { "\(layer) k=\(kernelSize) s=\(stride) p=\(padding)" }
}

/// Max pooling (the baseline): window `kernelSize`, `stride`, `padding` on every side filled
/// with -infinity. Backward routes each gradient to the first maximum of its window in
/// row-major order; NaN in a window gives NaN (as PyTorch).
public struct MaxPool2DConfiguration: OperatorConfiguration {
    /// The operator's name in the CLI and in error messages.
    public static let operatorName = "max-pool"
    private let window: PoolingWindow
    /// Window size k (square).
    public var kernelSize: Int { window.kernelSize }
    /// Stride s.
    public var stride: Int { window.stride }
    /// Padding p on each side; at most k/2 (PyTorch's rule), so every window sees an input value.
    public var padding: Int { window.padding }

    /// Validates the options. `stride` defaults to `kernelSize`, as in PyTorch.
    public init(kernelSize: Int = 2, stride: Int? = nil, padding: Int = 0) throws {
        window = try PoolingWindow(kernelSize: kernelSize, stride: stride, padding: padding, layer: Self.operatorName)
    }

    /// The output shape for `input`; throws when the input does not fit (see ``OperatorConfiguration``).
    public func outputShape(for input: Shape4D) throws -> Shape4D {
        let output = try window.outputShape(for: input, layer: Self.operatorName)
        try checkDeviceLimits(input: input, output: output)
        return output
    }

    /// The options in one line, as the parity reports and the CLI print them.
    public var description: String { window.describe(Self.operatorName) }
}

/// Average pooling (the baseline): window `kernelSize`, `stride`, zero `padding`; the divisor is
/// always k*k, padded zeros included (PyTorch's default `count_include_pad=True`).
public struct AvgPool2DConfiguration: OperatorConfiguration {
    /// The operator's name in the CLI and in error messages.
    public static let operatorName = "avg-pool"
    private let window: PoolingWindow
    /// Window size k (square).
    public var kernelSize: Int { window.kernelSize }
    /// Stride s.
    public var stride: Int { window.stride }
    /// Zero padding p on each side, at most k/2 (PyTorch's rule).
    public var padding: Int { window.padding }

    /// Validates the options. `stride` defaults to `kernelSize`, as in PyTorch.
    public init(kernelSize: Int = 2, stride: Int? = nil, padding: Int = 0) throws {
        window = try PoolingWindow(kernelSize: kernelSize, stride: stride, padding: padding, layer: Self.operatorName)
    }

    /// The output shape for `input`; throws when the input does not fit (see ``OperatorConfiguration``).
    public func outputShape(for input: Shape4D) throws -> Shape4D {
        let output = try window.outputShape(for: input, layer: Self.operatorName)
        try checkDeviceLimits(input: input, output: output)
        return output
    }

    /// The options in one line, as the parity reports and the CLI print them.
    public var description: String { window.describe(Self.operatorName) }
}

/// BlurPool (Zhang 2019): pad, depthwise binomial low-pass of size `filterSize`, subsample by
/// `stride`. Padding is top = left = floor((k-1)/2) + padOffset and
/// bottom = right = ceil((k-1)/2) + padOffset, so with stride 2 the output is ceil(H/2) x ceil(W/2).
public struct BlurPool2DConfiguration: OperatorConfiguration {
    /// The operator's name in the CLI and in error messages.
    public static let operatorName = "blur-pool"
    /// Channel count C the layer is built for (inputs must match).
    public let channels: Int
    /// Binomial filter size k in 1...7 (default 4, [1,3,3,1]).
    public let filterSize: Int
    /// Subsampling stride s (default 2).
    public let stride: Int
    /// How the input is extended before filtering (default reflect).
    public let padding: PaddingMode
    /// Extra padding added on every side (default 0).
    public let padOffset: Int

    /// Validates the options; defaults are those of the published module.
    public init(channels: Int, filterSize: Int = 4, stride: Int = 2, padding: PaddingMode = .reflect, padOffset: Int = 0)
        throws
    {
        let layer = Self.operatorName
        try requirePositive(channels, "channels", atMost: ConfigurationLimits.channels, layer: layer)
        guard BinomialFilter.supportedSizes.contains(filterSize) else {
            throw NyquistError(.invalidConfiguration, "\(layer): filter size \(filterSize) is not supported; use 1...7")
        }
        try requirePositive(stride, "stride", atMost: ConfigurationLimits.stride, layer: layer)
        try ConfigurationLimits.check(padOffset, "pad offset", in: 0...ConfigurationLimits.padOffset, layer: layer)
        self.channels = channels
        self.filterSize = filterSize
        self.stride = stride
        self.padding = padding
        self.padOffset = padOffset
    }

    /// The padding amounts applied before the filter.
    public var pads: Padding2D {
        let before = (filterSize - 1) / 2 + padOffset
        let after = filterSize / 2 + padOffset
        return Padding2D(top: before, bottom: after, left: before, right: after)
    }

    /// Output shape of the blur applied to a map of `input`'s size, without the channel check
    /// (MaxBlurPool applies it to the max map).
    func blurredShape(for input: Shape4D, layer: String) throws -> Shape4D {
        let pads = pads
        try padding.validate(pad: max(pads.top, pads.bottom), size: input.h, axis: "H", layer: layer)
        try padding.validate(pad: max(pads.left, pads.right), size: input.w, axis: "W", layer: layer)
        let h = try windowOutputSize(
            size: input.h, padBefore: pads.top, padAfter: pads.bottom, window: filterSize, stride: stride, axis: "H",
            layer: layer)
        let w = try windowOutputSize(
            size: input.w, padBefore: pads.left, padAfter: pads.right, window: filterSize, stride: stride, axis: "W",
            layer: layer)
        return try Shape4D(n: input.n, c: input.c, h: h, w: w)
    }

    /// The output shape for `input`; throws when the input does not fit (see ``OperatorConfiguration``).
    public func outputShape(for input: Shape4D) throws -> Shape4D {
        try checkChannels(input, expected: channels)
        let output = try blurredShape(for: input, layer: Self.operatorName)
        try checkDeviceLimits(input: input, output: output)
        return output
    }

    /// The options in one line, as the parity reports and the CLI print them.
    public var description: String {
        "blur-pool C=\(channels) k=\(filterSize) s=\(stride) \(padding.rawValue) offset=\(padOffset)"
    }
}

/// MaxBlurPool (Zhang 2019): max pool with kernel 2, stride 1 and no padding (H -> H-1), then
/// BlurPool with the given filter, stride and padding. Needs H, W >= 2.
public struct MaxBlurPool2DConfiguration: OperatorConfiguration {
    /// The operator's name in the CLI and in error messages.
    public static let operatorName = "max-blur-pool"
    /// The blur applied to the (H-1) x (W-1) max map.
    public let blur: BlurPool2DConfiguration

    /// Validates the options; defaults are those of the published module.
    public init(channels: Int, filterSize: Int = 4, stride: Int = 2, padding: PaddingMode = .reflect, padOffset: Int = 0)
        throws
    {
        blur = try BlurPool2DConfiguration(
            channels: channels, filterSize: filterSize, stride: stride, padding: padding, padOffset: padOffset)
    }

    /// Channel count C.
    public var channels: Int { blur.channels }

    /// Shape of the stride-1, 2x2 max map that the blur filters: N x C x (H-1) x (W-1).
    public func maxMapShape(for input: Shape4D) throws -> Shape4D {
        guard input.h >= 2 && input.w >= 2 else {
            throw NyquistError(
                .invalidShape, "\(Self.operatorName): the 2x2 max needs H, W >= 2, got \(input.h)x\(input.w)")
        }
        return try Shape4D(n: input.n, c: input.c, h: input.h - 1, w: input.w - 1)
    }

    /// The output shape for `input`; throws when the input does not fit (see ``OperatorConfiguration``).
    public func outputShape(for input: Shape4D) throws -> Shape4D {
        try checkChannels(input, expected: channels)
        let output = try blur.blurredShape(for: try maxMapShape(for: input), layer: Self.operatorName)
        try checkDeviceLimits(input: input, output: output)
        return output
    }

    /// The options in one line, as the parity reports and the CLI print them.
    public var description: String {
        "max-blur-pool C=\(channels) k=\(blur.filterSize) s=\(blur.stride) \(blur.padding.rawValue) offset=\(blur.padOffset)"
    }
}
