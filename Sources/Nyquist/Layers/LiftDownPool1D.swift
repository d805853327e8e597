import NyquistCL
import NyquistCore

/// LiftDownPool1D (SPEC.md section 4) on (N, C, L): one learnable lifting; bands s and d and the
/// pooled output s + d, each (N, C, ceil(L/2)). One global-memory pass.
public final class LiftDownPool1D: Layer {
    /// The options (shared with `Reference.liftDownPool1D`).
    public let configuration: LiftPoolConfiguration
    /// P and U on the device.
    public let weights: LiftPoolDeviceParameters

    /// Builds the layer with the given parameters.
    public init(_ configuration: LiftPoolConfiguration, parameters: LiftPoolParameters<Float>, on device: Device) throws {
        self.configuration = configuration
        weights = try LiftPoolDeviceParameters(parameters, configuration, on: device)
    }

    /// Builds the layer with the default initialisation drawn from `seed`.
    public convenience init(
        channels: Int, kernelSize: Int = 5, lambdaU: Double = 0.01, lambdaP: Double = 0.1, seed: UInt64 = 0,
        on device: Device
    ) throws {
        let configuration = try LiftPoolConfiguration(
            channels: channels, kernelSize: kernelSize, lambdaU: lambdaU, lambdaP: lambdaP)
        try self.init(configuration, parameters: LiftPoolParameters(configuration, seed: seed), on: device)
    }

    /// The parameters by PyTorch name.
    public var parameters: [String: DeviceTensor] { weights.tensors }

    /// Replaces the parameters (shared with the LiftUpPool that inverts this layer).
    public func loadParameters(_ stateDict: [String: HostTensor]) throws { try weights.load(stateDict: stateDict) }

    /// Inference forward: new tensors for the bands and the output.
    public func callAsFunction(_ input: DeviceTensor) throws -> LiftDownPool1DOutput {
        let output = try LiftDownPool1DOutput(shape: configuration.outputShape1D(for: input.shape), on: input.device)
        try forward(input, into: output)
        return output
    }

    /// Writes the forward result for `input` into `output`'s three tensors.
    public func forward(_ input: DeviceTensor, into output: LiftDownPool1DOutput) throws {
        let shape = try validate(input, output)
        try plan(.forward, shape) {
            CompiledPass(try LiftPlans.down1DForward(configuration, shape, on: weights.device))
        }.run(on: weights.device, buffers: weights.buffers + [input, output.s, output.d, output.output].map(\.buffer))
    }

    /// Training forward: the bands with the regularisers of the lifting, and what
    /// ``backward(_:_:)`` needs.
    public func forwardTraining(_ input: DeviceTensor) throws -> (output: LiftDownPool1DOutput, saved: LiftDownPool1DSaved) {
        let device = weights.device
        let bands = try LiftDownPool1DOutput(shape: configuration.outputShape1D(for: input.shape), on: input.device)
        let shape = try validate(input, bands)
        let pass = LiftPlans.pass1D(shape)
        let partials = try DeviceTensor(shape: [2 * pass.regulariserGroups], on: device)
        try plan(.trainingForward, shape) {
            CompiledPass(try LiftPlans.down1DTrainingForward(configuration, shape, on: device))
        }.run(on: device, buffers: weights.buffers + [input, bands.s, bands.d, bands.output, partials].map(\.buffer))
        let lifting = configuration
        let output = LiftDownPool1DOutput(
            output: bands.output, s: bands.s, d: bands.d,
            deferredRegularisers: Deferred(computing: {
                let sums = pass.regularisers(try partials.toHost().values[...])
                return LiftRegularisers(cu: sums.cu, cp: sums.cp, lifting)
            }))
        return (output, LiftDownPool1DSaved(input: input, bands: output))
    }

    /// Backward: gradients of the input and the eight parameters from gradients on the output,
    /// on s and d and on the regulariser loss.
    public func backward(_ outputGradients: LiftDownPool1DOutputGradients, _ saved: LiftDownPool1DSaved) throws -> Gradients {
        let bandShape = try configuration.outputShape1D(for: saved.input.shape)
        let shape = try LiftPoolConfiguration.shape1D(saved.input.shape, role: "saved input")
        let device = weights.device
        let gradLoss = outputGradients.regulariserLoss
        let upstream = [outputGradients.output, outputGradients.s, outputGradients.d]
        var given = 0
        for (index, tensor) in upstream.enumerated() {
            guard let tensor else { continue }
            try LiftPass.require(tensor, bandShape, device: device, role: Self.upstreamRoles[index])
            given |= 1 << index
        }
        let gradients = try weights.zeroGradients()
        let gx = try DeviceTensor(shape: saved.input.shape, on: device)
        // A missing upstream gradient binds a saved band in its place (never read).
        let upstreamBuffers = upstream.map { $0?.buffer ?? saved.bands.s.buffer }
        try plan(.backward, shape, upstream: given) {
            try LiftPlans.down1DBackward(configuration, shape, upstream: given, on: device)
        }.run(
            on: device,
            buffers: weights.buffers + [saved.input, saved.bands.s, saved.bands.d].map(\.buffer) + upstreamBuffers
                + [gx.buffer] + gradients.map(\.buffer), scalars: [gradLoss])
        return Gradients(input: gx, parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
    }

    /// The roles of the backward's upstream gradients in errors, in argument order.
    private static let upstreamRoles = ["gradient of the output", "gradient of s", "gradient of d"]

    /// Checks the input and the three output tensors; returns the input's shape as N x C x 1 x L.
    private func validate(_ input: DeviceTensor, _ output: LiftDownPool1DOutput) throws -> Shape4D {
        let bandShape = try configuration.outputShape1D(for: input.shape)
        let shape = try LiftPoolConfiguration.shape1D(input.shape, role: "input")
        for tensor in [output.output, output.s, output.d] {
            try LiftPass.require(tensor, bandShape, device: weights.device, role: "output band")
        }
        try LiftPass.require(input, input.shape, device: weights.device, role: "input")
        return shape
    }

    /// The compiled `pass` of this layer for an input of `shape`, built by `build` once.
    private func plan(
        _ pass: PlanPass, _ shape: Shape4D, upstream: Int = 0, build: () throws -> CompiledPass
    ) throws -> CompiledPass {
        try weights.device.compiledPass(
            PlanKey(
                configuration: LiftPlanConfiguration(
                    configuration: configuration, layer: .down1D, upstream: upstream),
                pass: pass, input: shape),
            build: build)
    }
}

/// The bands of a 1-D LiftDownPool on the device, each (N, C, ceil(L/2)).
public struct LiftDownPool1DOutput: LayerOutput {
    /// The pooled output s + d (our choice for 1-D: the sum of the sub-bands, as in 2-D).
    public let output: DeviceTensor
    /// Approximation (low) band s.
    public let s: DeviceTensor
    /// Detail (high) band d.
    public let d: DeviceTensor
    /// The regularisers of a training forward (read back from the device when first read); nil
    /// after inference.
    public var regularisers: LiftRegularisers? {
        get throws { try deferredRegularisers?.value() }
    }
    let deferredRegularisers: Deferred<LiftRegularisers>?

    /// Allocates the three tensors of `shape` on `device`.
    public init(shape: [Int], on device: Device) throws {
        try self.init(
            output: DeviceTensor(shape: shape, on: device), s: DeviceTensor(shape: shape, on: device),
            d: DeviceTensor(shape: shape, on: device))
    }

    /// Bundles existing tensors.
    public init(output: DeviceTensor, s: DeviceTensor, d: DeviceTensor, regularisers: LiftRegularisers? = nil) {
        self.output = output
        self.s = s
        self.d = d
        deferredRegularisers = regularisers.map { Deferred(value: $0) }
    }

    init(output: DeviceTensor, s: DeviceTensor, d: DeviceTensor, deferredRegularisers: Deferred<LiftRegularisers>) {
        self.output = output
        self.s = s
        self.d = d
        self.deferredRegularisers = deferredRegularisers
    }

    /// The bands under their names (`s`, `d`).
    public var extras: [String: DeviceTensor] { ["s": s, "d": d] }

    /// `c_u`, `c_p` and `loss` after a training forward.
    public var scalars: [String: Double] {
        get throws { try regularisers?.scalars ?? [:] }
    }
}

/// What LiftDownPool1D's backward needs: the input and the bands.
public struct LiftDownPool1DSaved {
    /// The forward's input.
    public let input: DeviceTensor
    /// The forward's bands.
    public let bands: LiftDownPool1DOutput
}

/// The gradients LiftDownPool1D's backward starts from: on the output, on s and d (nil: zero),
/// and the weight of the regulariser loss in the training objective.
public struct LiftDownPool1DOutputGradients {
    /// Gradient of the pooled output.
    public let output: DeviceTensor?
    /// Gradient of s.
    public let s: DeviceTensor?
    /// Gradient of d.
    public let d: DeviceTensor?
    /// d objective / d loss: 1 when the regulariser loss is added to the objective, 0 leaves it out.
    public let regulariserLoss: Double

    /// Bundles the gradients (the regulariser loss counts with weight 1 by default).
    public init(output: DeviceTensor?, s: DeviceTensor? = nil, d: DeviceTensor? = nil, regulariserLoss: Double = 1) {
        self.output = output
        self.s = s
        self.d = d
        self.regulariserLoss = regulariserLoss
    }
}
