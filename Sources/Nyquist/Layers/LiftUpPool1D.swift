import NyquistCL
import NyquistCore

/// LiftUpPool1D (SPEC.md section 4): the exact inverse of LiftDownPool1D, (N, C, M) bands s and
/// d to (N, C, L) with L = 2M or 2M - 1. One pass.
public final class LiftUpPool1D {
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

    /// Reconstructs the (N, C, `length`) signal from bands s and d.
    public func callAsFunction(s: DeviceTensor, d: DeviceTensor, length: Int) throws -> DeviceTensor {
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

    /// Backward: gradients of s, d and the eight parameters from the gradient of the
    /// reconstruction (the forward's inputs s and d are all it needs).
    public func backward(s: DeviceTensor, d: DeviceTensor, gradOutput: DeviceTensor) throws -> LiftUpGradients {
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
