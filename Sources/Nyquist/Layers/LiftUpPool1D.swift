import NyquistCL
import NyquistCore

/// LiftUpPool1D (SPEC.md section 4): the exact inverse of LiftDownPool1D, (N, C, M) bands s and
/// d to (N, C, L) with L = 2M or 2M - 1. One pass.
public final class LiftUpPool1D: Layer {
    /// The options (shared with `Reference.liftUpPool1D`).
    public let configuration: LiftPoolConfiguration
    /// P and U on the device.
    public let weights: LiftPoolDeviceParameters

    /// Builds the layer on existing device parameters.
    public init(_ weights: LiftPoolDeviceParameters) {
        configuration = weights.configuration
        self.weights = weights
    }

    /// The inverse of `pool`: shares its parameters.
    public convenience init(inverting pool: LiftDownPool1D) {
        self.init(pool.weights)
    }

    /// The parameters by PyTorch name.
    public var parameters: [String: DeviceTensor] { weights.tensors }

    /// Replaces the parameters (shared with the LiftDownPool this layer inverts).
    public func loadParameters(_ stateDict: [String: HostTensor]) throws { try weights.load(stateDict: stateDict) }

    /// Reconstructs the (N, C, length) signal from bands s and d.
    public func callAsFunction(_ input: LiftUpPool1DInput) throws -> DeviceTensor {
        let (s, d, length) = (input.s, input.d, input.length)
        let layer = LiftPoolConfiguration.inverseOperatorName
        let bandShape = try LiftPoolConfiguration.shape1D(s.shape, role: "\(layer) band s")
        let shape = try configuration.checkInverse(bandShape: bandShape, targetHeight: 1, targetWidth: length)
        let device = weights.device
        try LiftPass.require(s, s.shape, device: device, role: "band s", layer: layer)
        try LiftPass.require(d, s.shape, device: device, role: "band d", layer: layer)
        let output = try DeviceTensor(shape: [shape.n, shape.c, length], on: device)
        try plan(.forward, shape) {
            CompiledPass(try LiftPlans.up1DForward(configuration, shape, on: device))
        }.run(on: device, buffers: weights.buffers + [s, d, output].map(\.buffer))
        return output
    }

    /// Training forward: the reconstruction, and the input as what backward needs (the bands
    /// are all it needs).
    public func forwardTraining(_ input: LiftUpPool1DInput) throws -> (output: DeviceTensor, saved: LiftUpPool1DInput) {
        (try self(input), input)
    }

    /// Backward: gradients of s, d and the eight parameters from the gradient of the
    /// reconstruction.
    public func backward(_ gradOutput: DeviceTensor, _ saved: LiftUpPool1DInput) throws -> LiftUpGradients {
        let (s, d) = (saved.s, saved.d)
        let layer = LiftPoolConfiguration.inverseOperatorName
        let bandShape = try LiftPoolConfiguration.shape1D(s.shape, role: "\(layer) band s")
        let gradShape = try LiftPoolConfiguration.shape1D(gradOutput.shape, role: "\(layer) gradOutput")
        let shape = try configuration.checkInverse(bandShape: bandShape, targetHeight: 1, targetWidth: gradShape.w)
        let device = weights.device
        try LiftPass.require(s, s.shape, device: device, role: "band s", layer: layer)
        try LiftPass.require(d, s.shape, device: device, role: "band d", layer: layer)
        try LiftPass.require(gradOutput, [shape.n, shape.c, shape.w], device: device, role: "gradOutput", layer: layer)
        let gradients = try weights.zeroGradients()
        let gs = try DeviceTensor(shape: s.shape, on: device)
        let gd = try DeviceTensor(shape: s.shape, on: device)
        try plan(.backward, shape) {
            try LiftPlans.up1DBackward(configuration, shape, on: device)
        }.run(on: device, buffers: weights.buffers + [s, d, gradOutput, gs, gd].map(\.buffer) + gradients.map(\.buffer))
        return LiftUpGradients(bands: [gs, gd], parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
    }

    /// The compiled `pass` of this layer for an output of `shape` (N x C x 1 x L), built by
    /// `build` once.
    private func plan(_ pass: PlanPass, _ shape: Shape4D, build: () throws -> CompiledPass) throws -> CompiledPass {
        try weights.device.compiledPass(
            PlanKey(configuration: LiftPlanConfiguration(configuration: configuration, layer: .up1D), pass: pass, input: shape),
            build: build)
    }
}

/// What LiftUpPool1D reconstructs from: bands s and d and the target length.
public struct LiftUpPool1DInput {
    /// Approximation band (N, C, M).
    public let s: DeviceTensor
    /// Detail band (N, C, M).
    public let d: DeviceTensor
    /// Target length: 2M or 2M - 1.
    public let length: Int

    /// Two bands and a target length (default: twice the bands' length).
    public init(s: DeviceTensor, d: DeviceTensor, length: Int? = nil) {
        self.s = s
        self.d = d
        self.length = length ?? 2 * (s.shape.last ?? 0)
    }

    /// The bands of a LiftDownPool1D and a target length (default: twice the bands' length).
    public init(_ bands: LiftDownPool1DOutput, length: Int? = nil) {
        self.init(s: bands.s, d: bands.d, length: length)
    }
}
