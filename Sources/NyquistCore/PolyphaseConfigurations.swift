/// Configurations of the polyphase-sampling operators (SPEC.md section 5): APSPool2D and
/// TIPSPool2D, with the shift generator of the TIPS L_undo loss.
///
/// Phases of an even-sized map, by (row offset, column offset): p0 = (0,0), p1 = (1,0),
/// p2 = (0,1), p3 = (1,1). Phase k starts at row `k % 2` and column `k / 2`.

/// The norm APS ranks the four phases of a sample by.
public enum PolyphaseNorm: String, Sendable, Hashable, CaseIterable, Codable {
    /// Euclidean norm (the published default). Ranked by the sum of squares, which orders the
    /// phases the same way without a square root.
    case l2
    /// Sum of absolute values.
    case l1
    /// Largest absolute value.
    case linf
}

/// APSPool2D (Chaman & Dokmanic 2021, adaptive polyphase sampling), SPEC.md section 5.
///
/// 1. Optional pre-blur: BlurPool's binomial filter of `filterSize` at stride 1 with circular
///    padding (top/left floor((k-1)/2), bottom/right ceil((k-1)/2)), so the map keeps its size.
/// 2. Odd H (W): one row (column) appended at the bottom (right) that copies row (column) 0.
/// 3. One phase per sample, shared by all channels: k* = argmax_k norm(p_k[n]) over all C*h*w
///    values, ties to the lowest k. NaN anywhere in a phase makes its norm NaN, and the first
///    phase with a NaN norm wins (as torch.argmax, and as max pooling's NaN rule). The output is
///    p_{k*}: N x C x ceil(H/2) x ceil(W/2).
///
/// A circular shift of an even-sized input by (dy, dx) gives exactly the output of the
/// original rolled by (floor((a* + dy) / 2), floor((b* + dx) / 2)) where (a*, b*) is the
/// original's chosen phase, provided the phase norms are not tied.
public struct APSPool2DConfiguration: OperatorConfiguration {
    /// The operator's name in the CLI and in error messages.
    public static let operatorName = "aps-pool"
    /// Channel count C the layer is built for.
    public let channels: Int
    /// Size of the circular binomial pre-blur, 1...7; 1 (the default, plain APS) means none.
    public let filterSize: Int
    /// The norm phases are ranked by (default l2).
    public let norm: PolyphaseNorm

    /// Validates the options.
    ///
    /// The default `filterSize` is 1 (no blur), the APS paper's "pure" operator; the official
    /// code's class defaults to 3 and its ResNet to 4: pass those explicitly for parity with them.
    public init(channels: Int, filterSize: Int = 1, norm: PolyphaseNorm = .l2) throws {
        let layer = Self.operatorName
        try requirePositive(channels, "channels", atMost: ConfigurationLimits.channels, layer: layer)
        guard BinomialFilter.supportedSizes.contains(filterSize) else {
            throw NyquistError(.invalidConfiguration, "\(layer): filter size \(filterSize) is not supported; use 1...7")
        }
        self.channels = channels
        self.filterSize = filterSize
        self.norm = norm
    }

    /// The stride-1 circular BlurPool that blurs before sampling, or `nil` when `filterSize` is 1.
    public var blur: BlurPool2DConfiguration? {
        guard filterSize > 1 else { return nil }
        return try? BlurPool2DConfiguration(channels: channels, filterSize: filterSize, stride: 1, padding: .circular)
    }

    /// Height and width of the map the phases are taken from (the input rounded up to even).
    public func paddedSize(for input: Shape4D) -> (h: Int, w: Int) {
        (input.h + input.h % 2, input.w + input.w % 2)
    }

    /// N x C x ceil(H/2) x ceil(W/2); throws when the channel count is not the layer's or the
    /// input is over the device limits.
    public func outputShape(for input: Shape4D) throws -> Shape4D {
        try checkChannels(input, expected: channels)
        let output = try Shape4D(n: input.n, c: input.c, h: (input.h + 1) / 2, w: (input.w + 1) / 2)
        let padded = paddedSize(for: input)
        // The padded map must be addressable too (it is what the kernels index).
        try checkDeviceLimits(input: try Shape4D(n: input.n, c: input.c, h: padded.h, w: padded.w), output: output)
        return output
    }

    /// Throws unless `indices` holds one phase index in 0...3 per sample of `input`.
    public func validate(indices: [Int], for input: Shape4D) throws {
        guard indices.count == input.n else {
            throw NyquistError(
                .invalidShape, "\(Self.operatorName): \(indices.count) phase indices given for a batch of \(input.n)")
        }
        if let bad = indices.firstIndex(where: { !(0...3).contains($0) }) {
            throw NyquistError(
                .invalidConfiguration,
                "\(Self.operatorName): phase index \(indices[bad]) of sample \(bad) is outside 0...3")
        }
    }

    public var description: String { "aps-pool C=\(channels) k=\(filterSize) \(norm.rawValue)" }
}

/// TIPSPool2D (Saha & Gokhale 2025, translation-invariant polyphase sampling), SPEC.md section 5.
///
/// Odd H (W): reflect-pad one row (column) at the top (left), giving x' of even size H' x W'
/// (so H, W >= 2 when odd; a 1-row input is rejected). psi = ReLU(depthwise k x k
/// cross-correlation of x' with `conv1.weight`, zero padding (k-1)/2, no bias), H' x W'.
/// q_k = mean of psi over quadrant k in row-major order (top-left, top-right, bottom-left,
/// bottom-right); tau = softmax_k(q_k * `conv2.weight`[c]) per (n, c);
/// output = sum_k tau_k p_k(x') with the phase order p0..p3 above, N x C x H'/2 x W'/2.
public struct TIPSPool2DConfiguration: OperatorConfiguration {
    /// The operator's name in the CLI and in error messages.
    public static let operatorName = "tips-pool"
    /// PyTorch name of the k x k depthwise weight, shape (C, 1, k, k).
    public static let conv1Name = "conv1.weight"
    /// PyTorch name of the per-channel scale, shape (C, 1, 1, 1).
    public static let conv2Name = "conv2.weight"
    /// Channel count C.
    public let channels: Int
    /// Odd size k of psi's depthwise convolution (default 3).
    public let kernelSize: Int

    /// Validates the options: `kernelSize` must be odd and positive (so psi keeps the map size).
    public init(channels: Int, kernelSize: Int = 3) throws {
        let layer = Self.operatorName
        try requirePositive(channels, "channels", atMost: ConfigurationLimits.channels, layer: layer)
        try requirePositive(kernelSize, "kernel size", atMost: ConfigurationLimits.tipsKernelSize, layer: layer)
        guard kernelSize % 2 == 1 else {
            throw NyquistError(.invalidConfiguration, "\(layer): kernel size must be odd, got \(kernelSize)")
        }
        self.channels = channels
        self.kernelSize = kernelSize
    }

    /// Size of the parity-padded map x' (and of psi): the input rounded up to even.
    public func paddedShape(for input: Shape4D) throws -> Shape4D {
        let layer = Self.operatorName
        if input.h % 2 == 1 { try PaddingMode.reflect.validate(pad: 1, size: input.h, axis: "H", layer: layer) }
        if input.w % 2 == 1 { try PaddingMode.reflect.validate(pad: 1, size: input.w, axis: "W", layer: layer) }
        return try Shape4D(n: input.n, c: input.c, h: input.h + input.h % 2, w: input.w + input.w % 2)
    }

    /// N x C x H'/2 x W'/2 of the parity-padded map; throws when the channel count is not the
    /// layer's, when an odd axis of size 1 cannot be reflect-padded, or over the device limits.
    public func outputShape(for input: Shape4D) throws -> Shape4D {
        try checkChannels(input, expected: channels)
        let padded = try paddedShape(for: input)
        let output = try Shape4D(n: input.n, c: input.c, h: padded.h / 2, w: padded.w / 2)
        try checkDeviceLimits(input: padded, output: output)
        return output
    }

    /// The PyTorch names of the two weights.
    public static let parameterNames = [conv1Name, conv2Name]

    /// Parameter shapes by PyTorch name.
    public var parameterShapes: [String: [Int]] {
        [Self.conv1Name: [channels, 1, kernelSize, kernelSize], Self.conv2Name: [channels, 1, 1, 1]]
    }

    /// Throws ``NyquistError/Kind/invalidParameters`` unless `parameters` holds both weights with
    /// the right shapes and nothing else (PyTorch's strict rule, ``StateDictSelection``; select
    /// one layer of a whole model's state_dict with ``StateDictSelection/select(_:prefix:expected:ignored:layer:)``).
    public func validate<T>(parameters: [String: Tensor<T>]) throws {
        _ = try StateDictSelection.select(
            parameters, prefix: "", expected: parameterShapes.keys.sorted(), layer: Self.operatorName)
        for (name, shape) in parameterShapes.sorted(by: { $0.key < $1.key }) {
            guard let tensor = parameters[name] else {
                throw NyquistError(.invalidParameters, "\(Self.operatorName): parameter \(name) \(shape) is missing")
            }
            guard tensor.shape == shape, tensor.values.count == shape.reduce(1, *) else {
                throw NyquistError(
                    .invalidParameters,
                    "\(Self.operatorName): parameter \(name) has shape \(tensor.shape), expected \(shape)")
            }
        }
    }

    /// PyTorch's default initialisation of a standalone module (kaiming-uniform, a = sqrt(5)):
    /// `conv1.weight` uniform in +-1/k, `conv2.weight` uniform in +-1, drawn from `seed`.
    public func defaultParameters(seed: UInt64) -> [String: HostTensor] {
        var generator = NyquistRandom(seed: seed)
        let bound1 = 1 / Float(kernelSize)
        let conv1 = (0..<(channels * kernelSize * kernelSize)).map { _ in generator.uniform(-bound1...bound1) }
        let conv2 = (0..<channels).map { _ in generator.uniform(-1...1) }
        return [
            Self.conv1Name: HostTensor(unchecked: [channels, 1, kernelSize, kernelSize], conv1),
            Self.conv2Name: HostTensor(unchecked: [channels, 1, 1, 1], conv2),
        ]
    }

    public var description: String { "tips-pool C=\(channels) k=\(kernelSize)" }
}

/// How the L_undo target T(x') fills what a shift moves in.
public enum ShiftFill: String, Sendable, Hashable, CaseIterable, Codable {
    /// Wrap around (torch.roll).
    case circular
    /// Roll, then zero the vacated rows and columns ("standard" in the TIPS code).
    case zero
}

/// One integer shift of a map: T(x)[i, j] = x[i - dy, j - dx] (positive moves content down and
/// right, as torch.roll), wrapped or zero-filled.
public struct MapShift: Sendable, Hashable, CustomStringConvertible {
    /// Rows down.
    public let dy: Int
    /// Columns right.
    public let dx: Int
    /// What enters at the borders.
    public let fill: ShiftFill

    /// A shift by (`dy`, `dx`).
    public init(dy: Int, dx: Int, fill: ShiftFill) {
        self.dy = dy
        self.dx = dx
        self.fill = fill
    }

    public var description: String { "shift (\(dy), \(dx)) \(fill.rawValue)" }
}

/// The caller-seeded generator of L_undo's shifts: each call to ``next()`` draws dy uniform in
/// -maxShiftH...maxShiftH and dx in -maxShiftW...maxShiftW (one shift for the whole batch, as
/// the TIPS code). The same seed gives the same sequence on every platform and backend.
public struct ShiftGenerator: Sendable {
    /// Largest |dy|.
    public let maxShiftH: Int
    /// Largest |dx|.
    public let maxShiftW: Int
    /// Fill of every drawn shift.
    public let fill: ShiftFill
    private var random: NyquistRandom

    /// A generator of shifts up to (`maxShiftH`, `maxShiftW`) (each >= 0; TIPS's ResNet uses a
    /// quarter of the map size).
    public init(seed: UInt64, maxShiftH: Int, maxShiftW: Int, fill: ShiftFill = .circular) throws {
        for (axis, value) in [("H", maxShiftH), ("W", maxShiftW)] {
            try ConfigurationLimits.check(
                value, "maximum shift on \(axis)", in: 0...ConfigurationLimits.maximumShift, layer: "shift generator")
        }
        self.maxShiftH = maxShiftH
        self.maxShiftW = maxShiftW
        self.fill = fill
        random = NyquistRandom(seed: seed)
    }

    /// The next shift.
    public mutating func next() -> MapShift {
        let dy = random.integer(in: -maxShiftH...maxShiftH)
        let dx = random.integer(in: -maxShiftW...maxShiftW)
        return MapShift(dy: dy, dx: dx, fill: fill)
    }
}

/// Weights of the TIPS losses added to the objective whose gradient backward returns:
/// lambdaFM * L_FM + lambdaUndo * L_undo, with L_FM = mean_{n,c} (1 - ||tau||_2) and
/// L_undo = mean((psi - T(x'))^2) (T(x') a constant).
public struct TIPSLossWeights: Sendable, Hashable {
    /// Weight of L_FM.
    public let fm: Double
    /// Weight of L_undo (needs a target shift in the training forward).
    public let undo: Double

    /// The weights (both default to 0: plain backward); each must be finite and in
    /// 0...``ConfigurationLimits/lossWeight``.
    public init(fm: Double = 0, undo: Double = 0) throws {
        try ConfigurationLimits.checkWeight(fm, "lambda_FM", layer: TIPSPool2DConfiguration.operatorName)
        try ConfigurationLimits.checkWeight(undo, "lambda_undo", layer: TIPSPool2DConfiguration.operatorName)
        self.fm = fm
        self.undo = undo
    }

    private init(uncheckedFM fm: Double, undo: Double) {
        self.fm = fm
        self.undo = undo
    }

    /// No loss terms: backward of the output alone.
    public static let none = TIPSLossWeights(uncheckedFM: 0, undo: 0)
}

/// The generator of parameter initialisation and L_undo shifts: ``SplitMix64``, identical on
/// every platform.
public typealias NyquistRandom = SplitMix64
