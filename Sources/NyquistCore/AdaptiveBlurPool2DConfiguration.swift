import Foundation

/// Which logits one softmax of AdaptiveBlurPool normalises at each pixel (SPEC.md section 3).
public enum AdaptiveSoftmax: String, Sendable, Hashable, CaseIterable, Codable {
    /// One softmax over all G*k*k logits at a pixel: what the published module and its released
    /// checkpoints do. Each group's filter sums to a value in (0, 1), about 1/G on average.
    case joint
    /// A separate softmax over each group's k*k logits: what the paper describes. Every filter
    /// sums to 1, so a constant input passes unchanged.
    case perGroup = "per-group"
}

/// AdaptiveBlurPool (Zou et al. 2020, "Delving Deeper into Anti-aliasing in ConvNets"): a
/// content-aware low-pass whose k x k filter is predicted at every pixel, one filter per
/// contiguous group of channels, then subsampled by `stride`.
///
/// xpad = pad(x, k/2 on all sides, `padding`); z = BN(conv(xpad)) with G*k*k output channels;
/// w = softmax(z) (``AdaptiveSoftmax``); channel c of group g(c) = c / (C/G) is filtered with
/// y[n,c,i,j] = sum_{u,v} w[n, g(c)*k*k + u*k + v, s*i, s*j] * xpad[n, c, s*i+u, s*j+v].
/// Output ceil(H/s) x ceil(W/s).
public struct AdaptiveBlurPool2DConfiguration: OperatorConfiguration {
    /// The operator's name in the CLI and in error messages.
    public static let operatorName = "adaptive-blur-pool"
    /// Kernel sizes the operator supports (odd, as the predictor's "same" padding needs).
    public static let supportedKernelSizes = [3, 5, 7]
    /// BatchNorm epsilon (PyTorch's default, used by the published module).
    public static let epsilon = 1e-5
    /// BatchNorm running-statistics momentum (PyTorch's default).
    public static let momentum = 0.1

    /// Channel count C the layer is built for (inputs must match).
    public let channels: Int
    /// Filter size k (3, 5 or 7): the predictor's kernel and the predicted filters' size.
    public let kernelSize: Int
    /// Subsampling stride s (default 2).
    public let stride: Int
    /// Number of filter groups G; divides C (default gcd(8, C), the released models' 8 where C allows).
    public let groups: Int
    /// How the input is extended by k/2 on every side (default reflect, as the published module).
    public let padding: PaddingMode
    /// Joint (published code) or per-group (paper) softmax.
    public let softmax: AdaptiveSoftmax

    /// Validates the options; throws ``NyquistError`` of kind `.invalidConfiguration` naming the
    /// value when k is not 3/5/7, stride < 1, C < 1, or G does not divide C.
    public init(
        channels: Int, kernelSize: Int = 3, stride: Int = 2, groups: Int? = nil, padding: PaddingMode = .reflect,
        softmax: AdaptiveSoftmax = .joint
    ) throws {
        let layer = Self.operatorName
        try requirePositive(channels, "channels", atMost: ConfigurationLimits.channels, layer: layer)
        guard Self.supportedKernelSizes.contains(kernelSize) else {
            throw NyquistError(
                .invalidConfiguration, "\(layer): kernel size \(kernelSize) is not supported; use 3, 5 or 7")
        }
        try requirePositive(stride, "stride", atMost: ConfigurationLimits.stride, layer: layer)
        let groups = groups ?? Self.greatestCommonDivisor(8, channels)
        try requirePositive(groups, "groups", atMost: channels, layer: layer)
        guard channels % groups == 0 else {
            throw NyquistError(
                .invalidConfiguration,
                "\(layer): groups \(groups) must divide channels \(channels) (groups are contiguous channel blocks)")
        }
        // conv.weight is (G*k*k, C, k, k): bound it here, before anyone allocates it.
        let taps = kernelSize * kernelSize
        _ = try ConfigurationLimits.elementCount(
            [groups * taps, channels, taps], of: "conv.weight (G*k*k x C x k*k)", layer: layer)
        self.channels = channels
        self.kernelSize = kernelSize
        self.stride = stride
        self.groups = groups
        self.padding = padding
        self.softmax = softmax
    }

    static func greatestCommonDivisor(_ a: Int, _ b: Int) -> Int {
        var (a, b) = (a, b)
        while b != 0 { (a, b) = (b, a % b) }
        return a
    }

    /// Padding on every side: k/2.
    public var pad: Int { kernelSize / 2 }
    /// Taps of one filter, k*k.
    public var taps: Int { kernelSize * kernelSize }
    /// Predictor channels G*k*k (conv outputs, BatchNorm features, filter maps).
    public var predictorChannels: Int { groups * taps }
    /// Channels per group, C/G.
    public var channelsPerGroup: Int { channels / groups }

    /// Expected shape of each parameter, by PyTorch `state_dict` name.
    public var parameterShapes: [String: [Int]] {
        let p = predictorChannels
        return [
            "conv.weight": [p, channels, kernelSize, kernelSize], "bn.weight": [p], "bn.bias": [p],
            "bn.running_mean": [p], "bn.running_var": [p],
        ]
    }

    /// Shape of the predicted filters at the output positions: N x G*k*k x H' x W'.
    public func filterShape(for input: Shape4D) throws -> Shape4D {
        let output = try outputShape(for: input)
        return try Shape4D(n: output.n, c: predictorChannels, h: output.h, w: output.w)
    }

    /// The output shape for `input`; throws when the input does not fit (see ``OperatorConfiguration``).
    public func outputShape(for input: Shape4D) throws -> Shape4D {
        let layer = Self.operatorName
        try checkChannels(input, expected: channels)
        try padding.validate(pad: pad, size: input.h, axis: "H", layer: layer)
        try padding.validate(pad: pad, size: input.w, axis: "W", layer: layer)
        let h = try windowOutputSize(
            size: input.h, padBefore: pad, padAfter: pad, window: kernelSize, stride: stride, axis: "H", layer: layer)
        let w = try windowOutputSize(
            size: input.w, padBefore: pad, padAfter: pad, window: kernelSize, stride: stride, axis: "W", layer: layer)
        let output = try Shape4D(n: input.n, c: input.c, h: h, w: w)
        try checkDeviceLimits(input: input, output: output)
        return output
    }

    /// Throws `.sizeLimit` when the full-resolution predictor map that training keeps
    /// (N x G*k*k x H x W) exceeds 2^31 - 1 elements; inference never allocates it.
    public func checkTrainingMap(for input: Shape4D) throws {
        let (count, overflow) = (input.n * input.h).multipliedReportingOverflow(by: input.w * predictorChannels)
        guard !overflow, count <= maximumDeviceElementCount else {
            throw NyquistError(
                .sizeLimit,
                "\(Self.operatorName): the training predictor map N x G*k*k x H x W = "
                    + "\(input.n)x\(predictorChannels)x\(input.h)x\(input.w) exceeds 2^31 - 1 elements (split the batch)")
        }
    }

    /// The options in one line, as the parity reports and the CLI print them.
    public var description: String {
        "adaptive-blur-pool C=\(channels) k=\(kernelSize) s=\(stride) G=\(groups) \(padding.rawValue) \(softmax.rawValue)"
    }
}

/// The learnable state of an AdaptiveBlurPool layer under its PyTorch `state_dict` names:
/// `conv.weight` (G*k*k, C, k, k), `bn.weight`, `bn.bias`, `bn.running_mean`, `bn.running_var`
/// (G*k*k each).
///
/// Generic over the scalar so that the CPU reference can take gradients in `Double`; the device
/// layer and files use `Float` (``AdaptiveBlurPool2DParameters<Float>``).
public struct AdaptiveBlurPool2DParameters<Scalar: BinaryFloatingPoint & Sendable>: Sendable, Equatable {
    /// The five names, in `state_dict` order.
    public static var names: [String] { ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] }

    /// Entries of a PyTorch `state_dict` that are accepted and ignored (BatchNorm's step counter,
    /// which inference and training here do not use).
    public static var ignoredNames: Set<String> { ["bn.num_batches_tracked"] }

    /// Predictor convolution weight (G*k*k, C, k, k); no bias.
    public var convWeight: Tensor<Scalar>
    /// BatchNorm scale gamma (G*k*k).
    public var bnWeight: Tensor<Scalar>
    /// BatchNorm shift beta (G*k*k).
    public var bnBias: Tensor<Scalar>
    /// BatchNorm running mean (G*k*k), used in inference.
    public var runningMean: Tensor<Scalar>
    /// BatchNorm running variance (G*k*k, unbiased estimates), used in inference.
    public var runningVar: Tensor<Scalar>

    /// Wraps given tensors; throws `.invalidParameters` naming the parameter when a shape does not
    /// match `configuration` or a running variance is negative or NaN.
    public init(
        convWeight: Tensor<Scalar>, bnWeight: Tensor<Scalar>, bnBias: Tensor<Scalar>, runningMean: Tensor<Scalar>,
        runningVar: Tensor<Scalar>, configuration: AdaptiveBlurPool2DConfiguration
    ) throws {
        self.convWeight = convWeight
        self.bnWeight = bnWeight
        self.bnBias = bnBias
        self.runningMean = runningMean
        self.runningVar = runningVar
        try validate(for: configuration)
    }

    /// PyTorch's default initialisation, reproducible from `seed`: `conv.weight` Kaiming-normal
    /// (mode fan_out, ReLU gain: std = sqrt(2 / (G*k*k * k*k))), gamma = 1, beta = 0, running
    /// mean 0, running variance 1. Normal draws use Box-Muller on ``SplitMix64``.
    public init(configuration: AdaptiveBlurPool2DConfiguration, seed: UInt64 = 0) {
        let p = configuration.predictorChannels
        let k = configuration.kernelSize
        let count = p * configuration.channels * k * k
        let std = (2.0 / Double(p * k * k)).squareRoot()
        var generator = SplitMix64(seed: seed)
        var values: [Scalar] = []
        values.reserveCapacity(count)
        while values.count < count {
            // u1 in (0, 1] so that log(u1) is finite; 53 random bits each.
            let u1 = (Double(generator.next() >> 11) + 1) * 0x1p-53
            let u2 = Double(generator.next() >> 11) * 0x1p-53
            let radius = (-2 * Foundation.log(u1)).squareRoot() * std
            values.append(Scalar(radius * Foundation.cos(2 * Double.pi * u2)))
            if values.count < count { values.append(Scalar(radius * Foundation.sin(2 * Double.pi * u2))) }
        }
        convWeight = Tensor(unchecked: [p, configuration.channels, k, k], values)
        bnWeight = Tensor(unchecked: [p], Array(repeating: 1, count: p))
        bnBias = Tensor(unchecked: [p], Array(repeating: 0, count: p))
        runningMean = Tensor(unchecked: [p], Array(repeating: 0, count: p))
        runningVar = Tensor(unchecked: [p], Array(repeating: 1, count: p))
    }

    /// Loads a PyTorch `state_dict` (e.g. from ``Safetensors/read(contentsOf:)``): the five names,
    /// each prefixed by `prefix` ("layer1.0.pasa." for one layer of a whole model), under
    /// PyTorch's strict rule (``StateDictSelection``): keys outside a non-empty prefix are
    /// ignored; `bn.num_batches_tracked` is accepted and ignored; any other key under the
    /// prefix, a missing key or a wrong shape throws `.invalidParameters` naming it.
    public init(
        stateDict: [String: Tensor<Scalar>], configuration: AdaptiveBlurPool2DConfiguration, prefix: String = ""
    ) throws {
        let layer = AdaptiveBlurPool2DConfiguration.operatorName
        let selected = try StateDictSelection.select(
            stateDict, prefix: prefix, expected: Self.names, ignored: Self.ignoredNames, layer: layer)
        func take(_ name: String) throws -> Tensor<Scalar> {
            guard let tensor = selected[name] else {
                throw NyquistError(.invalidParameters, "\(layer): parameter \(prefix + name) is missing")
            }
            return tensor
        }
        try self.init(
            convWeight: take("conv.weight"), bnWeight: take("bn.weight"), bnBias: take("bn.bias"),
            runningMean: take("bn.running_mean"), runningVar: take("bn.running_var"), configuration: configuration)
    }

    /// The parameters by PyTorch `state_dict` name (what ``Safetensors/write(_:metadata:to:)`` saves).
    public var stateDict: [String: Tensor<Scalar>] {
        [
            "conv.weight": convWeight, "bn.weight": bnWeight, "bn.bias": bnBias, "bn.running_mean": runningMean,
            "bn.running_var": runningVar,
        ]
    }

    /// The same parameters in another scalar type.
    public func converted<Other: BinaryFloatingPoint & Sendable>(to: Other.Type = Other.self)
        -> AdaptiveBlurPool2DParameters<Other>
    {
        AdaptiveBlurPool2DParameters<Other>(
            unchecked: convWeight.converted(), bnWeight.converted(), bnBias.converted(), runningMean.converted(),
            runningVar.converted())
    }

    init(
        unchecked convWeight: Tensor<Scalar>, _ bnWeight: Tensor<Scalar>, _ bnBias: Tensor<Scalar>,
        _ runningMean: Tensor<Scalar>, _ runningVar: Tensor<Scalar>
    ) {
        self.convWeight = convWeight
        self.bnWeight = bnWeight
        self.bnBias = bnBias
        self.runningMean = runningMean
        self.runningVar = runningVar
    }

    /// Throws `.invalidParameters` unless every tensor has the shape `configuration` expects
    /// (and holds that many values) and every running variance is >= 0.
    public func validate(for configuration: AdaptiveBlurPool2DConfiguration) throws {
        let layer = AdaptiveBlurPool2DConfiguration.operatorName
        let expected = configuration.parameterShapes
        for (name, tensor) in zip(Self.names, [convWeight, bnWeight, bnBias, runningMean, runningVar]) {
            let shape = expected[name] ?? []
            guard tensor.shape == shape, tensor.values.count == shape.reduce(1, *) else {
                throw NyquistError(
                    .invalidParameters,
                    "\(layer): parameter \(name) has shape \(tensor.shape) but \(configuration) needs \(shape)")
            }
        }
        if let bad = runningVar.values.firstIndex(where: { !($0 >= 0) }) {
            throw NyquistError(
                .invalidParameters,
                "\(layer): bn.running_var[\(bad)] = \(runningVar.values[bad]); a variance must be >= 0")
        }
    }
}
