import Foundation
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
/// with ``Layer/load(safetensors:prefix:)``.
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
public final class AdaptiveBlurPool2D: Layer {
    /// The options (shared with `Reference.adaptiveBlurPool2D`).
    public let configuration: AdaptiveBlurPool2DConfiguration
    /// The device the layer's constants and outputs live on.
    public let device: Device
    /// The learnable parameters and running statistics, host copy (the device tensors of
    /// ``parameters`` hold the same values). A training forward updates the running statistics
    /// on the device; reading this after one reads them back, which waits for it.
    public var hostParameters: AdaptiveBlurPool2DParameters<Float> {
        get throws {
            if hostStatisticsStale {
                storedHostParameters.runningMean = try constants.runningMean.toHost()
                storedHostParameters.runningVar = try constants.runningVar.toHost()
                hostStatisticsStale = false
            }
            return storedHostParameters
        }
    }
    private var storedHostParameters: AdaptiveBlurPool2DParameters<Float>
    /// Whether the running statistics on the device moved since the host copy was made.
    var hostStatisticsStale = false
    private(set) var constants: Constants

    /// The learnable parameters and running statistics on the device, by PyTorch name.
    public var parameters: [String: DeviceTensor] {
        [
            "conv.weight": constants.weight, "bn.weight": constants.gamma, "bn.bias": constants.beta,
            "bn.running_mean": constants.runningMean, "bn.running_var": constants.runningVar,
        ]
    }

    /// The parameters in the form the kernels read them, as device tensors.
    struct Constants {
        /// conv.weight as stored (G*k*k, C, k, k).
        let weight: DeviceTensor
        /// conv.weight repacked for the tiled predictor: [(c * k*k + tap) * P8 + o], P8 = G*k*k
        /// rounded up to a multiple of 8, zero filled.
        let tiledWeight: DeviceTensor
        /// gamma / sqrt(running_var + eps) per predictor channel.
        let scale: DeviceTensor
        /// beta - running_mean * scale per predictor channel.
        let shift: DeviceTensor
        /// bn.weight (gamma) and bn.bias (beta), for training.
        let gamma: DeviceTensor
        let beta: DeviceTensor
        /// bn.running_mean and bn.running_var (read by the frozen-statistics training forward).
        let runningMean: DeviceTensor
        let runningVar: DeviceTensor
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
        storedHostParameters = parameters
        constants = try Self.upload(parameters, device: device)
    }

    /// Replaces the parameters (validated) and updates the device constants.
    public func setParameters(_ parameters: AdaptiveBlurPool2DParameters<Float>) throws {
        try parameters.validate(for: configuration)
        constants = try Self.upload(parameters, device: device)
        storedHostParameters = parameters
        hostStatisticsStale = false
    }

    /// Replaces the parameters with a PyTorch `state_dict`'s (`conv.weight`, `bn.weight`,
    /// `bn.bias`, `bn.running_mean`, `bn.running_var`); throws `.invalidParameters` for missing
    /// or misshapen tensors.
    public func loadParameters(_ stateDict: [String: HostTensor]) throws {
        try setParameters(AdaptiveBlurPool2DParameters(stateDict: stateDict, configuration: configuration, prefix: ""))
    }

    /// BatchNorm with running statistics folded into y = a * scale + shift, in `Float` with each
    /// operation rounded on its own, as the training forward's kernel folds the statistics it
    /// updates (running_statistics in adaptive_blur_pool.cl): loading a layer saved after
    /// training gives the same bits on a device whose division and square root are correctly
    /// rounded (CPU devices; GPUs may differ in the last place).
    static func folded(_ parameters: AdaptiveBlurPool2DParameters<Float>) -> (scale: [Float], shift: [Float]) {
        let epsilon = Float(AdaptiveBlurPool2DConfiguration.epsilon)
        let count = parameters.bnWeight.count
        var scale = [Float](repeating: 0, count: count)
        var shift = [Float](repeating: 0, count: count)
        for o in 0..<count {
            let s = parameters.bnWeight.values[o] / (parameters.runningVar.values[o] + epsilon).squareRoot()
            let product = parameters.runningMean.values[o] * s
            scale[o] = s
            shift[o] = parameters.bnBias.values[o] - product
        }
        return (scale, shift)
    }


    private static func upload(_ parameters: AdaptiveBlurPool2DParameters<Float>, device: Device) throws -> Constants {
        let count = parameters.bnWeight.count
        let (scale, shift) = folded(parameters)
        let weight = try DeviceTensor(parameters.convWeight, on: device)
        let inputs = count == 0 ? 0 : parameters.convWeight.count / count
        let padded = (count + 7) / 8 * 8
        var repacked = [Float](repeating: 0, count: max(inputs * padded, 1))
        for o in 0..<count {
            for input in 0..<inputs { repacked[input * padded + o] = parameters.convWeight.values[o * inputs + input] }
        }
        let tiledWeight = try DeviceTensor(HostTensor(shape: [repacked.count], values: repacked), on: device)
        let scaleBuffer = try DeviceTensor(HostTensor(shape: [count], values: scale), on: device)
        let shiftBuffer = try DeviceTensor(HostTensor(shape: [count], values: shift), on: device)
        let gamma = try DeviceTensor(parameters.bnWeight, on: device)
        let beta = try DeviceTensor(parameters.bnBias, on: device)
        return Constants(
            weight: weight, tiledWeight: tiledWeight, scale: scaleBuffer, shift: shiftBuffer, gamma: gamma, beta: beta,
            runningMean: try DeviceTensor(parameters.runningMean, on: device),
            runningVar: try DeviceTensor(parameters.runningVar, on: device))
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
            on: device, input.buffer, constants.weight.buffer, constants.tiledWeight.buffer, constants.scale.buffer,
            constants.shift.buffer,
            output.buffer, (filters ?? output).buffer)
    }

    private static func require(_ tensor: DeviceTensor, _ expected: [Int], role: String) throws {
        guard tensor.shape == expected else {
            throw NyquistError(
                .invalidShape,
                "\(AdaptiveBlurPool2DConfiguration.operatorName): \(role) has shape \(tensor.shape), expected \(expected)")
        }
    }
}
