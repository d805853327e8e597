/// LiftPool (Zhao & Snoek 2021, "LiftPool: Bidirectional ConvNet Pooling"), SPEC.md section 4:
/// learnable lifting (split, predict, update) that pools by summing sub-bands and is exactly
/// invertible.
///
/// No official code exists, so the layer internals are fixed by SPEC.md and by us:
/// * (SPEC) P and U are depthwise Conv1d(kernel K, zero "same" padding, bias) -> ReLU ->
///   depthwise Conv1d(kernel 1, bias) -> Tanh; one P and one U per layer, shared by the three
///   1-D liftings of a 2-D layer.
/// * (SPEC) Odd lengths are replicate-padded by one sample at the end before the split.
/// * (ours) The ReLU's derivative at exactly 0 is 0 (as PyTorch).
/// * (ours) The 1-D layer's pooled output is s + d, by analogy with the 2-D sum of bands.
/// * (ours) The regulariser `loss` = lambda_u c_u + lambda_p c_p is returned as a scalar; its
///   gradient enters backward as `gradLoss` (1 when it is added to the training objective).
/// * (ours) LiftUpPool has no regulariser of its own.
///
/// One configuration serves LiftDownPool and LiftUpPool (1-D and 2-D): the same P and U invert
/// each other's liftings.
public struct LiftPoolConfiguration: OperatorConfiguration {
    /// The operator's name in the CLI and in error messages.
    public static let operatorName = "lift-down-pool"
    /// Name of the inverse operator in the CLI and in error messages.
    public static let inverseOperatorName = "lift-up-pool"
    /// Kernel sizes accepted for the predictor's and updater's first convolution.
    public static let supportedKernelSizes = [1, 3, 5, 7]

    /// Channel count C the layer is built for (inputs must match).
    public let channels: Int
    /// Size K of the depthwise convolution in P and U (odd, 1...7; default 5, our choice: the
    /// paper's default is not known).
    public let kernelSize: Int
    /// Weight lambda_u of c_u = mean((s - x_o)^2) in the regulariser loss (default 0.01).
    public let lambdaU: Double
    /// Weight lambda_p of c_p = mean(d^2) in the regulariser loss (default 0.1).
    public let lambdaP: Double

    /// Validates the options.
    public init(channels: Int, kernelSize: Int = 5, lambdaU: Double = 0.01, lambdaP: Double = 0.1) throws {
        let layer = Self.operatorName
        try requirePositive(channels, "channels", atMost: ConfigurationLimits.channels, layer: layer)
        guard Self.supportedKernelSizes.contains(kernelSize) else {
            throw NyquistError(
                .invalidConfiguration, "\(layer): kernel size \(kernelSize) is not supported; use 1, 3, 5 or 7 (odd, for 'same' padding)")
        }
        try ConfigurationLimits.checkWeight(lambdaU, "lambda_u", layer: layer)
        try ConfigurationLimits.checkWeight(lambdaP, "lambda_p", layer: layer)
        self.channels = channels
        self.kernelSize = kernelSize
        self.lambdaU = lambdaU
        self.lambdaP = lambdaP
    }

    /// Length of each band of a 1-D lifting of a length-`length` axis: ceil(L / 2).
    public static func bandLength(_ length: Int) -> Int {
        (length + 1) / 2
    }

    /// Shape of the pooled output and of each of the four bands: N x C x ceil(H/2) x ceil(W/2).
    public func outputShape(for input: Shape4D) throws -> Shape4D {
        try checkChannels(input, expected: channels)
        let output = try Shape4D(n: input.n, c: input.c, h: Self.bandLength(input.h), w: Self.bandLength(input.w))
        try checkDeviceLimits(input: input, output: output)
        return output
    }

    /// Shape of the pooled output and both bands of the 1-D layer for an (N, C, L) input:
    /// (N, C, ceil(L/2)).
    public func outputShape1D(for input: [Int]) throws -> [Int] {
        let shape = try Self.shape1D(input, role: "\(Self.operatorName) input")
        try checkChannels(shape, expected: channels)
        let output = try Shape4D(n: shape.n, c: shape.c, h: 1, w: Self.bandLength(shape.w))
        try checkDeviceLimits(input: shape, output: output)
        return [output.n, output.c, output.w]
    }

    /// Checks the bands given to LiftUpPool (all of `bandShape`) against a target size: each target
    /// axis must be 2 x band or 2 x band - 1 (the odd size whose padded sample is dropped).
    public func checkInverse(bandShape: Shape4D, targetHeight: Int, targetWidth: Int) throws -> Shape4D {
        let layer = Self.inverseOperatorName
        guard bandShape.c == channels else {
            throw NyquistError(
                .invalidShape, "\(layer): bands have \(bandShape.c) channels but the layer was built for \(channels)")
        }
        for (axis, target, band) in [("H", targetHeight, bandShape.h), ("W", targetWidth, bandShape.w)] {
            // The name is formatted only for the error: this runs on every LiftUpPool call.
            if !(1...ConfigurationLimits.axisSize).contains(target) {
                try ConfigurationLimits.check(target, "target \(axis)", in: 1...ConfigurationLimits.axisSize, layer: layer)
            }
            guard Self.bandLength(target) == band else {
                throw NyquistError(
                    .invalidShape, "\(layer): target \(axis) = \(target) does not fit bands of \(axis) = \(band) (use \(2 * band) or \(2 * band - 1))")
            }
        }
        let output = try Shape4D(n: bandShape.n, c: bandShape.c, h: targetHeight, w: targetWidth)
        try checkDeviceLimits(input: bandShape, output: output)
        return output
    }

    /// Reads an (N, C, L) shape as N x C x 1 x L; `role` names the tensor in errors (formatted
    /// only for an error: layers call this on every call).
    public static func shape1D(_ shape: [Int], role: @autoclosure () -> String) throws -> Shape4D {
        guard shape.count == 3 else {
            throw NyquistError(
                .invalidShape, "\(role()) must have rank 3 (N, C, L) but has shape \(shape) (rank \(shape.count))")
        }
        return try Shape4D(n: shape[0], c: shape[1], h: 1, w: shape[2])
    }

    public var description: String {
        "lift-pool C=\(channels) K=\(kernelSize) lambda_u=\(lambdaU) lambda_p=\(lambdaP)"
    }
}

/// The parameters of one lifting function (P or U) for C channels and kernel K:
/// depthwise Conv1d(K) -> ReLU -> depthwise Conv1d(1) -> Tanh.
///
/// Stored flat; the PyTorch names and shapes are `<prefix>.0.weight` (C, 1, K),
/// `<prefix>.0.bias` (C), `<prefix>.2.weight` (C, 1, 1), `<prefix>.2.bias` (C).
public struct LiftingFunctionParameters<T: BinaryFloatingPoint & Sendable>: Sendable, Equatable {
    /// First convolution's taps, channel-major: `convWeight[c * K + k]`.
    public var convWeight: [T]
    /// First convolution's bias per channel.
    public var convBias: [T]
    /// The 1x1 depthwise convolution's weight (a per-channel scale).
    public var scale: [T]
    /// The 1x1 depthwise convolution's bias (a per-channel shift).
    public var shift: [T]

    /// Wraps the four arrays (their sizes are checked by ``LiftPoolParameters``).
    public init(convWeight: [T], convBias: [T], scale: [T], shift: [T]) {
        self.convWeight = convWeight
        self.convBias = convBias
        self.scale = scale
        self.shift = shift
    }

    /// All zeros, for C channels and kernel K (the shape of a gradient accumulator).
    public init(zerosFor channels: Int, kernelSize: Int) {
        self.init(
            convWeight: Array(repeating: 0, count: channels * kernelSize), convBias: Array(repeating: 0, count: channels),
            scale: Array(repeating: 0, count: channels), shift: Array(repeating: 0, count: channels))
    }
}

/// The learnable parameters of a LiftDownPool / LiftUpPool layer: predictor P and updater U, by
/// PyTorch `state_dict` name (SPEC.md section 4).
///
/// Default initialisation (ours, the paper does not say): PyTorch's `Conv1d` default,
/// weights and biases uniform in (-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = K for the
/// first convolution and 1 for the 1x1 one, drawn from a SplitMix64 stream fixed by `seed`
/// (so it is reproducible here, not bit-identical to PyTorch's generator).
public struct LiftPoolParameters<T: BinaryFloatingPoint & Sendable>: Sendable, Equatable {
    /// Channels C.
    public let channels: Int
    /// Kernel size K of the first convolution.
    public let kernelSize: Int
    /// The predictor P (names `predict.*`).
    public var predict: LiftingFunctionParameters<T>
    /// The updater U (names `update.*`).
    public var update: LiftingFunctionParameters<T>

    /// The eight `state_dict` names, in a fixed order.
    public static var names: [String] {
        ["predict", "update"].flatMap { prefix in ["0.weight", "0.bias", "2.weight", "2.bias"].map { "\(prefix).\($0)" } }
    }

    /// The PyTorch shape of parameter `name` for C channels and kernel K (nil for unknown names).
    public static func shape(of name: String, channels: Int, kernelSize: Int) -> [Int]? {
        switch name.split(separator: ".", maxSplits: 1).last.map(String.init) {
        case "0.weight": [channels, 1, kernelSize]
        case "0.bias", "2.bias": [channels]
        case "2.weight": [channels, 1, 1]
        default: nil
        }
    }

    /// Seeded default initialisation (PyTorch's Conv1d rule, see the type's documentation).
    public init(_ configuration: LiftPoolConfiguration, seed: UInt64 = 0) {
        channels = configuration.channels
        kernelSize = configuration.kernelSize
        var generator = LiftPoolInitGenerator(seed: seed)
        let c = configuration.channels
        let k = configuration.kernelSize
        func function() -> LiftingFunctionParameters<T> {
            let bound = 1 / Double(k).squareRoot()
            return LiftingFunctionParameters(
                convWeight: (0..<(c * k)).map { _ in T(generator.uniform(bound)) },
                convBias: (0..<c).map { _ in T(generator.uniform(bound)) },
                scale: (0..<c).map { _ in T(generator.uniform(1)) },
                shift: (0..<c).map { _ in T(generator.uniform(1)) })
        }
        predict = function()
        update = function()
    }

    /// Takes P and U as given; throws `.invalidParameters` when an array's size does not fit.
    public init(
        _ configuration: LiftPoolConfiguration, predict: LiftingFunctionParameters<T>, update: LiftingFunctionParameters<T>
    ) throws {
        channels = configuration.channels
        kernelSize = configuration.kernelSize
        self.predict = predict
        self.update = update
        for name in Self.names {
            let count = self[name].count
            let expected = (Self.shape(of: name, channels: channels, kernelSize: kernelSize) ?? []).reduce(1, *)
            guard count == expected else {
                throw NyquistError(
                    .invalidParameters, "\(LiftPoolConfiguration.operatorName): parameter \(name) has \(count) values, expected \(expected)")
            }
        }
    }

    /// Loads the eight tensors of a PyTorch `state_dict` (e.g. `Safetensors.read`), each
    /// prefixed by `prefix` ("layer2.pool." for one layer of a whole model), under PyTorch's
    /// strict rule (``StateDictSelection``): keys outside a non-empty prefix are ignored.
    ///
    /// Throws `.invalidParameters` naming the entry when one is missing, misshapen or unexpected.
    public init(_ configuration: LiftPoolConfiguration, stateDict: [String: Tensor<T>], prefix: String = "") throws {
        channels = configuration.channels
        kernelSize = configuration.kernelSize
        predict = LiftingFunctionParameters(zerosFor: channels, kernelSize: kernelSize)
        update = predict
        let layer = LiftPoolConfiguration.operatorName
        let stateDict = try StateDictSelection.select(stateDict, prefix: prefix, expected: Self.names, layer: layer)
        for name in Self.names {
            let expected = Self.shape(of: name, channels: channels, kernelSize: kernelSize) ?? []
            guard let tensor = stateDict[name] else {
                throw NyquistError(
                    .invalidParameters, "\(layer): parameter \(name) \(expected) is missing (have: \(stateDict.keys.sorted().joined(separator: ", ")))")
            }
            guard tensor.shape == expected, tensor.values.count == expected.reduce(1, *) else {
                throw NyquistError(
                    .invalidParameters, "\(layer): parameter \(name) has shape \(tensor.shape), expected \(expected) for C=\(channels), K=\(kernelSize)")
            }
            self[name] = tensor.values
        }
    }

    /// The flat values of parameter `name` (one of ``names``; other names read as empty).
    public subscript(name: String) -> [T] {
        get {
            switch name {
            case "predict.0.weight": predict.convWeight
            case "predict.0.bias": predict.convBias
            case "predict.2.weight": predict.scale
            case "predict.2.bias": predict.shift
            case "update.0.weight": update.convWeight
            case "update.0.bias": update.convBias
            case "update.2.weight": update.scale
            case "update.2.bias": update.shift
            default: []
            }
        }
        set {
            switch name {
            case "predict.0.weight": predict.convWeight = newValue
            case "predict.0.bias": predict.convBias = newValue
            case "predict.2.weight": predict.scale = newValue
            case "predict.2.bias": predict.shift = newValue
            case "update.0.weight": update.convWeight = newValue
            case "update.0.bias": update.convBias = newValue
            case "update.2.weight": update.scale = newValue
            case "update.2.bias": update.shift = newValue
            default: break
            }
        }
    }

    /// The eight tensors by PyTorch name and shape (what `Safetensors.write` takes for `Float`).
    public func stateDict() throws -> [String: Tensor<T>] {
        var result: [String: Tensor<T>] = [:]
        for name in Self.names {
            let shape = Self.shape(of: name, channels: channels, kernelSize: kernelSize) ?? []
            result[name] = try Tensor(shape: shape, values: self[name])
        }
        return result
    }

    /// The same parameters in another scalar type.
    public func converted<Other: BinaryFloatingPoint & Sendable>(to: Other.Type = Other.self) -> LiftPoolParameters<Other> {
        func convert(_ f: LiftingFunctionParameters<T>) -> LiftingFunctionParameters<Other> {
            LiftingFunctionParameters<Other>(
                convWeight: f.convWeight.map { Other($0) }, convBias: f.convBias.map { Other($0) },
                scale: f.scale.map { Other($0) }, shift: f.shift.map { Other($0) })
        }
        return LiftPoolParameters<Other>(
            channels: channels, kernelSize: kernelSize, predict: convert(predict), update: convert(update))
    }

    private init(channels: Int, kernelSize: Int, predict: LiftingFunctionParameters<T>, update: LiftingFunctionParameters<T>) {
        self.channels = channels
        self.kernelSize = kernelSize
        self.predict = predict
        self.update = update
    }
}

/// SplitMix64 for the default initialisation (kept private to NyquistCore; the tests have their own).
struct LiftPoolInitGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [-bound, bound).
    mutating func uniform(_ bound: Double) -> Double {
        let unit = Double(next() >> 11) / Double(UInt64(1) << 53)
        return (2 * unit - 1) * bound
    }
}
