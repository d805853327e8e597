import NyquistCL
import NyquistCore

/// The learnable parameters of a LiftPool layer on a device: predictor P and updater U as
/// ``DeviceTensor``s by PyTorch `state_dict` name (`predict.0.weight` (C, 1, K),
/// `predict.0.bias` (C), `predict.2.weight` (C, 1, 1), `predict.2.bias` (C), the same under
/// `update.`).
///
/// A LiftDownPool and the LiftUpPool that inverts it share one instance (SPEC.md section 4:
/// the same P and U serve every lifting of a layer and its inverse).
public final class LiftPoolDeviceParameters {
    /// The configuration the parameters are shaped for.
    public let configuration: LiftPoolConfiguration
    /// The eight tensors by PyTorch name.
    public private(set) var tensors: [String: DeviceTensor] {
        didSet { buffers = Self.ordered(tensors) }
    }
    /// The device they live on.
    public let device: Device
    /// The eight buffers in ``LiftPoolParameters/names`` order (P's four, then U's): numbers 0-7
    /// of every LiftPool plan, kept in step with `tensors` so a call binds them without lookups.
    private(set) var buffers: [OpenCLBuffer]

    /// Uploads `host` (e.g. `LiftPoolParameters(configuration, seed: 0)` for the default
    /// initialisation, or one loaded from a safetensors `state_dict`).
    public init(_ host: LiftPoolParameters<Float>, _ configuration: LiftPoolConfiguration, on device: Device) throws {
        self.configuration = configuration
        self.device = device
        let uploaded = try Self.upload(host, configuration, device)
        tensors = uploaded
        buffers = Self.ordered(uploaded)
    }

    /// Replaces the values with those of a PyTorch `state_dict` (`Safetensors.read`); throws
    /// `.invalidParameters` naming a missing or misshapen entry and then leaves the values as they were.
    public func load(stateDict: [String: HostTensor]) throws {
        tensors = try Self.upload(LiftPoolParameters(configuration, stateDict: stateDict), configuration, device)
    }

    /// Copies the values back to the host.
    public func toHost() throws -> LiftPoolParameters<Float> {
        var dict: [String: HostTensor] = [:]
        for (name, tensor) in tensors { dict[name] = try tensor.toHost() }
        return try LiftPoolParameters(configuration, stateDict: dict)
    }

    /// Eight gradient tensors shaped like the parameters, in ``LiftPoolParameters/names`` order
    /// (the first kernel that writes them overwrites, so they need no clearing).
    func zeroGradients() throws -> [DeviceTensor] {
        try LiftPoolParameters<Float>.names.map { name in
            try DeviceTensor(
                shape: LiftPoolParameters<Float>.shape(of: name, channels: configuration.channels, kernelSize: configuration.kernelSize) ?? [],
                on: device)
        }
    }

    /// The buffers of `tensors` in ``LiftPoolParameters/names`` order (`upload` made every one).
    private static func ordered(_ tensors: [String: DeviceTensor]) -> [OpenCLBuffer] {
        LiftPoolParameters<Float>.names.compactMap { tensors[$0]?.buffer }
    }

    private static func upload(_ host: LiftPoolParameters<Float>, _ configuration: LiftPoolConfiguration, _ device: Device)
        throws -> [String: DeviceTensor]
    {
        guard host.channels == configuration.channels, host.kernelSize == configuration.kernelSize else {
            throw NyquistError(
                .invalidParameters,
                "\(LiftPoolConfiguration.operatorName): parameters are for C=\(host.channels), K=\(host.kernelSize) but the layer is \(configuration)")
        }
        var result: [String: DeviceTensor] = [:]
        for (name, tensor) in try host.stateDict() { result[name] = try DeviceTensor(tensor, on: device) }
        return result
    }
}

/// The regularisers of a training forward (SPEC.md section 4), in `Double` on the host.
public struct LiftRegularisers: Sendable, Equatable {
    /// c_u: sum over the layer's liftings of mean((s - x_o)^2).
    public let cu: Double
    /// c_p: sum over the layer's liftings of mean(d^2).
    public let cp: Double
    /// lambda_u c_u + lambda_p c_p, the layer's contribution to the training loss.
    public let loss: Double

    /// Combines c_u and c_p with the configuration's weights.
    public init(cu: Double, cp: Double, _ configuration: LiftPoolConfiguration) {
        self.cu = cu
        self.cp = cp
        loss = configuration.lambdaU * cu + configuration.lambdaP * cp
    }

    /// `c_u`, `c_p` and `loss` by the names of `nyquist run`'s regularisers.json.
    public var scalars: [String: Double] { ["c_u": cu, "c_p": cp, "loss": loss] }
}

/// Gradients of a LiftUpPool backward.
public struct LiftUpGradients: LayerGradients {
    /// Gradients of the bands in the forward's order (1-D: s, d; 2-D: LL, LH, HL, HH).
    public let bands: [DeviceTensor]
    /// Gradients of the eight parameters by PyTorch name.
    public let parameters: [String: DeviceTensor]

    /// The gradient of the coarse band (s or LL), the main input.
    public var input: DeviceTensor { bands[0] }

    /// The detail bands' gradients by band name (`d`; or `lh`, `hl`, `hh`).
    public var extras: [String: DeviceTensor] {
        let names = bands.count == 2 ? ["d"] : ["lh", "hl", "hh"]
        return Dictionary(uniqueKeysWithValues: zip(names, bands.dropFirst()))
    }
}
