import Foundation
import NyquistCL
import NyquistCore

/// AdaptiveBlurPool (Zou et al. 2020, "Delving Deeper into Anti-aliasing in ConvNets"): a
/// content-aware low-pass. At every output position a small predictor (conv k x k, C -> G*k*k,
/// then BatchNorm and a softmax) proposes one k x k filter per contiguous group of channels,
/// and each channel is filtered with its group's filter, then subsampled by the stride.
/// The exact definition is ``AdaptiveBlurPool2DConfiguration`` (SPEC.md section 3).
///
/// Inference runs as one fused kernel per output position: the predictor is evaluated at the
/// output positions only, and no tensor of size k*k x input (nor G*k*k x H x W) is allocated;
/// a call allocates its output and nothing else (the parameters live on the device as
/// constants from construction or ``setParameters(_:)`` on).
///
/// Parameters use PyTorch's `state_dict` names (`conv.weight`, `bn.weight`, `bn.bias`,
/// `bn.running_mean`, `bn.running_var`), so a module saved from PyTorch as safetensors loads
/// with ``load(safetensors:prefix:)``.
///
/// A layer holds device buffers and mutable parameters: like ``DeviceTensor`` it is not
/// `Sendable`; use one per task.
///
/// ```swift
/// let device = try Device.default()
/// let pool = try AdaptiveBlurPool2D(channels: 64, kernelSize: 3, on: device)
/// try pool.load(safetensors: url)
/// let y = try pool(try DeviceTensor(x, on: device))
/// ```
public final class AdaptiveBlurPool2D {
    /// The options (shared with `Reference.adaptiveBlurPool2D`).
    public let configuration: AdaptiveBlurPool2DConfiguration
    /// The device the layer's constants and outputs live on.
    public let device: Device
    /// The learnable parameters and running statistics (host copy; the device copy follows
    /// ``setParameters(_:)``).
    public private(set) var parameters: AdaptiveBlurPool2DParameters<Float>
    private(set) var constants: Constants

    /// The parameters in the form the kernels read them.
    struct Constants {
        /// conv.weight as stored (G*k*k, C, k, k).
        let weight: OpenCLBuffer
        /// conv.weight repacked for the tiled predictor: [(c * k*k + tap) * P8 + o], P8 = G*k*k
        /// rounded up to a multiple of 8, zero filled.
        let tiledWeight: OpenCLBuffer
        /// gamma / sqrt(running_var + eps) per predictor channel.
        let scale: OpenCLBuffer
        /// beta - running_mean * scale per predictor channel.
        let shift: OpenCLBuffer
        /// bn.weight (gamma) and bn.bias (beta), for training.
        let gamma: OpenCLBuffer
        let beta: OpenCLBuffer
    }

    /// Builds the layer with PyTorch's default initialisation (Kaiming-normal fan_out/ReLU conv
    /// weight drawn from `seed`, gamma 1, beta 0, running mean 0, running variance 1).
    /// Throws ``NyquistError`` for options the configuration rejects (G not dividing C, k not
    /// 3/5/7, ...).
    public convenience init(
        channels: Int, kernelSize: Int = 3, stride: Int = 2, groups: Int? = nil, padding: PaddingMode = .reflect,
        softmax: AdaptiveSoftmax = .joint, seed: UInt64 = 0, on device: Device
    ) throws {
        let configuration = try AdaptiveBlurPool2DConfiguration(
            channels: channels, kernelSize: kernelSize, stride: stride, groups: groups, padding: padding,
            softmax: softmax)
        try self.init(
            configuration, parameters: AdaptiveBlurPool2DParameters(configuration: configuration, seed: seed), on: device)
    }

    /// Builds the layer from a configuration and parameters (validated against it).
    public init(
        _ configuration: AdaptiveBlurPool2DConfiguration, parameters: AdaptiveBlurPool2DParameters<Float>,
        on device: Device
    ) throws {
        try parameters.validate(for: configuration)
        self.configuration = configuration
        self.device = device
        self.parameters = parameters
        constants = try Self.upload(parameters, device: device)
    }

    /// Replaces the parameters (validated) and updates the device constants.
    public func setParameters(_ parameters: AdaptiveBlurPool2DParameters<Float>) throws {
        try parameters.validate(for: configuration)
        constants = try Self.upload(parameters, device: device)
        self.parameters = parameters
    }

    /// Loads a PyTorch `state_dict` saved as safetensors; `prefix` selects one layer of a whole
    /// model ("layer2.0.downsample.0."). Throws `.invalidParameters` for missing, unexpected or
    /// misshapen tensors (an integer tensor under one of its names is a wrong dtype), and the
    /// file errors of ``Safetensors``.
    public func load(safetensors url: URL, prefix: String = "") throws {
        let names = AdaptiveBlurPool2DParameters<Float>.names.map { prefix + $0 }
        let stateDict = try Safetensors.readContents(contentsOf: url).parameters(
            expecting: names, layer: AdaptiveBlurPool2DConfiguration.operatorName)
        try setParameters(
            AdaptiveBlurPool2DParameters(stateDict: stateDict, configuration: configuration, prefix: prefix))
    }

    /// BatchNorm with running statistics folded into y = a * scale + shift, in Double.
    static func folded(_ parameters: AdaptiveBlurPool2DParameters<Float>) -> (scale: [Float], shift: [Float]) {
        let epsilon = AdaptiveBlurPool2DConfiguration.epsilon
        let count = parameters.bnWeight.count
        var scale = [Float](repeating: 0, count: count)
        var shift = [Float](repeating: 0, count: count)
        for o in 0..<count {
            let s = Double(parameters.bnWeight.values[o]) / (Double(parameters.runningVar.values[o]) + epsilon).squareRoot()
            scale[o] = Float(s)
            shift[o] = Float(Double(parameters.bnBias.values[o]) - Double(parameters.runningMean.values[o]) * s)
        }
        return (scale, shift)
    }

    /// Replaces the running statistics only (training forward): rewrites the folded scale and
    /// shift in place, so a training step allocates no new constants.
    func setRunningStatistics(_ parameters: AdaptiveBlurPool2DParameters<Float>) throws {
        let (scale, shift) = Self.folded(parameters)
        try device.context.write(scale, to: constants.scale)
        try device.context.write(shift, to: constants.shift)
        self.parameters = parameters
    }

    private static func upload(_ parameters: AdaptiveBlurPool2DParameters<Float>, device: Device) throws -> Constants {
        let count = parameters.bnWeight.count
        let (scale, shift) = folded(parameters)
        let context = device.context
        let weight = try context.makeBuffer(byteCount: parameters.convWeight.count * 4)
        try context.write(parameters.convWeight.values, to: weight)
        let inputs = count == 0 ? 0 : parameters.convWeight.count / count
        let padded = (count + 7) / 8 * 8
        var repacked = [Float](repeating: 0, count: max(inputs * padded, 1))
        for o in 0..<count {
            for input in 0..<inputs { repacked[input * padded + o] = parameters.convWeight.values[o * inputs + input] }
        }
        let tiledWeight = try context.makeBuffer(byteCount: repacked.count * 4)
        try context.write(repacked, to: tiledWeight)
        let scaleBuffer = try context.makeBuffer(byteCount: count * 4)
        try context.write(scale, to: scaleBuffer)
        let shiftBuffer = try context.makeBuffer(byteCount: count * 4)
        try context.write(shift, to: shiftBuffer)
        let gamma = try context.makeBuffer(byteCount: count * 4)
        try context.write(parameters.bnWeight.values, to: gamma)
        let beta = try context.makeBuffer(byteCount: count * 4)
        try context.write(parameters.bnBias.values, to: beta)
        return Constants(weight: weight, tiledWeight: tiledWeight, scale: scaleBuffer, shift: shiftBuffer, gamma: gamma, beta: beta)
    }

    /// The output shape for `input`, with the configuration's typed errors.
    public func outputShape(for input: DeviceTensor) throws -> Shape4D {
        try configuration.outputShape(for: input.nchw("\(AdaptiveBlurPool2DConfiguration.operatorName) input"))
    }

    /// Inference forward (running statistics): a new tensor with the output.
    public func callAsFunction(_ input: DeviceTensor) throws -> DeviceTensor {
        let output = try DeviceTensor(shape: outputShape(for: input).dimensions, on: input.device)
        try forward(input, into: output)
        return output
    }

    /// Inference forward that also returns the predicted filters, N x G*k*k x H' x W' (for
    /// visualisation; entry g*k*k + u*k + v is tap (u, v) of group g's filter).
    public func forwardWithFilters(_ input: DeviceTensor) throws -> (output: DeviceTensor, filters: DeviceTensor) {
        let shape = try input.nchw("\(AdaptiveBlurPool2DConfiguration.operatorName) input")
        let output = try DeviceTensor(shape: configuration.outputShape(for: shape).dimensions, on: input.device)
        let filters = try DeviceTensor(shape: configuration.filterShape(for: shape).dimensions, on: input.device)
        try forward(input, into: output, filters: filters)
        return (output, filters)
    }

    /// Inference forward into `output` (and the filters into `filters` when given); allocates
    /// nothing beyond the constant padding tables, built once per geometry and device.
    public func forward(_ input: DeviceTensor, into output: DeviceTensor, filters: DeviceTensor? = nil) throws {
        let layer = AdaptiveBlurPool2DConfiguration.operatorName
        let inputShape = try input.nchw("\(layer) input")
        let outputShape = try configuration.outputShape(for: inputShape)
        try Self.require(output, outputShape.dimensions, role: "output")
        for tensor in [output] + (filters.map { [$0] } ?? []) where tensor.device !== device || input.device !== device {
            throw NyquistError(
                .invalidConfiguration, "\(layer): tensors must live on the layer's device (\(device.name))")
        }
        if let filters {
            try Self.require(filters, configuration.filterShape(for: inputShape).dimensions, role: "filters")
        }
        let key = PlanKey(
            configuration: AdaptivePlanVariant(configuration, writeFilters: filters != nil), pass: .forward,
            input: inputShape)
        try device.compiledPass(key) {
            try forwardLaunches(inputShape, outputShape, writeFilters: filters != nil)
        }.run(
            on: device, input.buffer, constants.weight, constants.tiledWeight, constants.scale, constants.shift,
            output.buffer, (filters ?? output).buffer)
    }

    /// Inference forward's launch. Buffers: 0 input, 1 conv.weight, 2 conv.weight repacked for
    /// the tiled kernel, 3 folded scale, 4 folded shift, 5 output, 6 filters (or the output
    /// again when not written).
    private func forwardLaunches(_ inputShape: Shape4D, _ outputShape: Shape4D, writeFilters: Bool) throws
        -> [PreparedLaunch]
    {
        let (rows, columns) = try stridedTables(inputShape, outputShape)
        let launch = AdaptiveLaunch.choose(for: device, configuration: configuration)
        // The training passes' program: one build serves inference and training.
        let program = try device.program("adaptive_blur_pool.cl", defines: programDefines(writeFilters: writeFilters))
        let rowsPerItem = launch.tiled ? launch.positions : 1
        return [
            try device.context.prepare(
                launch.tiled ? "adaptive_forward_tiled" : "adaptive_forward", in: program,
                arguments: [
                    .bound(0), .bound(launch.tiled ? 2 : 1), .bound(3), .bound(4), .buffer(rows.source),
                    .buffer(columns.source), .bound(5), .bound(6), .int(inputShape.n), .int(inputShape.h),
                    .int(inputShape.w), .int(outputShape.h), .int(outputShape.w),
                ],
                global: [outputShape.w, (outputShape.h + rowsPerItem - 1) / rowsPerItem, inputShape.n],
                local: launch.local)
        ]
    }

    private static func require(_ tensor: DeviceTensor, _ expected: [Int], role: String) throws {
        guard tensor.shape == expected else {
            throw NyquistError(
                .invalidShape,
                "\(AdaptiveBlurPool2DConfiguration.operatorName): \(role) has shape \(tensor.shape), expected \(expected)")
        }
    }
}

/// An AdaptiveBlurPool plan's configuration with the variant of the pass (whether the filters
/// are written, whether the BatchNorm statistics are frozen): what its launches depend on
/// besides the pass and the input shape. The layer's parameters are bound per call, so two
/// layers with one configuration share plans.
struct AdaptivePlanVariant: Hashable, Sendable {
    let configuration: AdaptiveBlurPool2DConfiguration
    var writeFilters = false
    var frozenStatistics = false

    init(_ configuration: AdaptiveBlurPool2DConfiguration, writeFilters: Bool = false, frozenStatistics: Bool = false) {
        self.configuration = configuration
        self.writeFilters = writeFilters
        self.frozenStatistics = frozenStatistics
    }
}

/// Launch parameters of the AdaptiveBlurPool predictor kernels (Kernels/adaptive_blur_pool.cl),
/// read through ``Device/launchParameters(family:shapeClass:builtIn:accepts:)`` so a tuned
/// database entry, the built-in default and a test's override all take one path.
///
/// * `tiled`: the register-tiled predictor (adaptive_forward_tiled, adaptive_predictor_full_tiled)
///   keeps `positions` x P logits per item in private memory; it is used while that stays small
///   (P = G*k*k <= 128), otherwise the one-position kernels (two predictor evaluations for joint
///   softmax, O(k*k) private memory).
/// * `positions`: output positions per work item (rows of one column). Candidates 1, 2, 3, 4.
/// * `outVectors`: float8 blocks of output channels per register tile. Candidates 1, 2, 3, 4;
///   positions x outVectors accumulators plus outVectors weights must fit the vector registers
///   (16 on AVX2: 4 x 3 = 12 + 3).
/// * `local`: work-group shape, or nil to let the runtime choose (the tiled kernels use no local
///   memory, so on PoCL's CPU device it only sets the scheduling grain).
struct AdaptiveLaunch: Equatable {
    /// Whether the tiled predictor kernels run.
    var tiled: Bool
    /// Output positions per work item of the tiled kernels.
    var positions: Int
    /// float8 blocks of predictor channels per register tile.
    var outVectors: Int
    /// Work-group size of the forward kernels (nil: the runtime's choice).
    var local: [Int]?
    /// Whether backward runs the row-walking input and weight gradient kernels (fast on PoCL)
    /// or the one-element ones (coalesced on GPUs). Not a tuner candidate (the tuner times the
    /// forward); a database entry or override may set it, else it follows the device type.
    var rowGradients = true

    /// Largest P = G*k*k the tiled kernels accept (their private logits are positions x P).
    static let tiledChannelLimit = 128

    /// The tuner and database name of the family, with its one shape class ("all": the
    /// training kernels choose without knowing the map size, and must agree with the forward).
    static let family = "adaptive-forward"
    static let shapeClass = "all"

    /// Every candidate: the one-position kernels, and register tiles of positions x outVectors
    /// that fit 16 vector registers (positions x outVectors + outVectors <= 16).
    static let candidates: [LaunchParameters] =
        [LaunchParameters(tiled: false, positions: 1, outVectors: 1)]
        + [(1, 1), (2, 2), (2, 4), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3)].map {
            LaunchParameters(tiled: true, positions: $0.0, outVectors: $0.1)
        }

    /// Built-in defaults: 4 positions x 3 vectors, the driver's groups, on every device: the
    /// fastest candidate on PoCL (docs/kernels.md) and on an NVIDIA H200 (docs/performance.md,
    /// "GPU figures").
    static func builtIn(on device: Device) -> LaunchParameters {
        LaunchParameters(tiled: true, positions: 4, outVectors: 3)
    }

    /// The choice for `device` and `configuration`; `tiled` is refused above ``tiledChannelLimit``.
    static func choose(for device: Device, configuration: AdaptiveBlurPool2DConfiguration) -> AdaptiveLaunch {
        let parameters = device.launchParameters(
            family: family, shapeClass: shapeClass, builtIn: builtIn(on: device),
            accepts: {
                $0.tiled != nil && $0.positions != nil && $0.outVectors != nil && ($0.localSize.map { $0.count == 3 } ?? true)
            })
        return AdaptiveLaunch(
            tiled: (parameters.tiled ?? true) && configuration.predictorChannels <= tiledChannelLimit,
            positions: parameters.positions ?? 4, outVectors: parameters.outVectors ?? 3, local: parameters.localSize,
            rowGradients: parameters.rowGradients ?? !device.info.isGPU)
    }
}
