import NyquistCL
import NyquistCore

/// LiftDownPool2D (Zhao & Snoek 2021; SPEC.md section 4): learnable lifting along W, then along
/// H of both bands, with the same predictor P and updater U; returns the four sub-bands and the
/// pooled output y = LL + LH + HL + HH, each N x C x ceil(H/2) x ceil(W/2).
///
/// Layer internals are our choices where the paper leaves them open (see
/// ``LiftPoolConfiguration``). Two global-memory passes: the row lifting writes s_h and d_h,
/// one kernel then lifts both along the columns and writes the four bands and y (see
/// Kernels/lift_pool.cl for why the passes are not fused further).
///
/// ```swift
/// let pool = try LiftDownPool2D(channels: 64, on: device)
/// let bands = try pool(x)        // bands.output, bands.ll, ...
/// let back = try LiftUpPool2D(inverting: pool)(LiftUpPool2DInput(bands, height: x.shape[2], width: x.shape[3]))
/// ```
public final class LiftDownPool2D: Layer {
    /// The options (shared with `Reference.liftDownPool2D`).
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
    public func callAsFunction(_ input: DeviceTensor) throws -> LiftDownPool2DOutput {
        let output = try LiftDownPool2DOutput(
            shape: configuration.outputShape(for: input.nchw("\(LiftPoolConfiguration.operatorName) input")),
            on: input.device)
        try forward(input, into: output)
        return output
    }

    /// Writes the forward result for `input` into `output`'s five tensors.
    public func forward(_ input: DeviceTensor, into output: LiftDownPool2DOutput) throws {
        let shape = try validate(input, output)
        let (sh, dh) = try rowBands(shape)
        try plan(.forward, shape) {
            CompiledPass(try LiftPlans.down2DForward(configuration, shape, on: weights.device))
        }.run(on: weights.device, buffers: weights.buffers + [input, sh, dh].map(\.buffer) + output.buffers)
    }

    /// Training forward: the bands with the regularisers c_u, c_p (each summed over the three
    /// liftings) and loss = lambda_u c_u + lambda_p c_p, and what ``backward(_:_:)`` needs (the
    /// input, s_h, d_h and the bands). The regularisers are reduced on the device in a fixed
    /// order (per-work-group partial sums, added on the host in `Double` when first read):
    /// reading them waits for the forward, the call itself does not.
    public func forwardTraining(_ input: DeviceTensor) throws -> (output: LiftDownPool2DOutput, saved: LiftDownPool2DSaved) {
        let shape = try input.nchw("\(LiftPoolConfiguration.operatorName) input")
        let device = weights.device
        let bands = try LiftDownPool2DOutput(shape: configuration.outputShape(for: shape), on: input.device)
        try validate(input, bands)
        let (sh, dh) = try rowBands(shape)
        let partials = try DeviceTensor(shape: [LiftPlans.regulariserPartials2D(shape)], on: device)
        try plan(.trainingForward, shape) {
            CompiledPass(try LiftPlans.down2DTrainingForward(configuration, shape, on: device))
        }.run(on: device, buffers: weights.buffers + [input, sh, dh].map(\.buffer) + bands.buffers + [partials.buffer])
        let lifting = configuration
        let output = bands.with(
            Deferred(computing: {
                let sums = LiftPlans.regularisers2D(shape, partials: try partials.toHost().values)
                return LiftRegularisers(cu: sums.cu, cp: sums.cp, lifting)
            }))
        return (output, LiftDownPool2DSaved(input: input, sh: sh, dh: dh, bands: output))
    }

    /// Backward: gradients of the input and of the eight parameters (by PyTorch name) from
    /// gradients on the pooled output, on any band and on the regulariser loss.
    public func backward(_ outputGradients: LiftDownPool2DOutputGradients, _ saved: LiftDownPool2DSaved) throws -> Gradients {
        let shape = try saved.input.nchw("\(LiftPoolConfiguration.operatorName) saved input")
        let bandShape = try configuration.outputShape(for: shape).dimensions
        let device = weights.device
        let gradLoss = outputGradients.regulariserLoss
        let upstream = [
            outputGradients.output, outputGradients.ll, outputGradients.lh, outputGradients.hl, outputGradients.hh,
        ]
        var given = 0
        for (index, tensor) in upstream.enumerated() {
            guard let tensor else { continue }
            try LiftPass.require(tensor, bandShape, device: device, role: Self.upstreamRoles[index])
            given |= 1 << index
        }
        let gradients = try weights.zeroGradients()
        let gsh = try DeviceTensor(shape: saved.sh.shape, on: device)
        let gdh = try DeviceTensor(shape: saved.dh.shape, on: device)
        let gx = try DeviceTensor(shape: saved.input.shape, on: device)
        // A missing upstream gradient binds a saved band in its place (never read).
        let upstreamBuffers = upstream.map { $0?.buffer ?? saved.bands.ll.buffer }
        try plan(.backward, shape, upstream: given) {
            try LiftPlans.down2DBackward(configuration, shape, upstream: given, on: device)
        }.run(
            on: device,
            buffers: weights.buffers + [saved.input, saved.sh, saved.dh].map(\.buffer) + saved.bands.bands.map(\.buffer)
                + upstreamBuffers + [gsh, gdh, gx].map(\.buffer) + gradients.map(\.buffer), scalars: [gradLoss])
        return Gradients(input: gx, parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
    }

    /// The roles of the backward's upstream gradients in errors, in argument order.
    private static let upstreamRoles = ["gradient of the output", "gradient of LL", "gradient of LH", "gradient of HL", "gradient of HH"]

    /// Checks the input and the five output tensors; returns the input's shape.
    @discardableResult
    private func validate(_ input: DeviceTensor, _ output: LiftDownPool2DOutput) throws -> Shape4D {
        let shape = try input.nchw("\(LiftPoolConfiguration.operatorName) input")
        let bandShape = try configuration.outputShape(for: shape).dimensions
        for tensor in [output.output, output.ll, output.lh, output.hl, output.hh] {
            try LiftPass.require(tensor, bandShape, device: weights.device, role: "output band")
        }
        try LiftPass.require(input, shape.dimensions, device: weights.device, role: "input")
        return shape
    }

    /// New tensors for the row lifting's bands s_h, d_h of an input of `shape`.
    private func rowBands(_ shape: Shape4D) throws -> (DeviceTensor, DeviceTensor) {
        let rowsShape = [shape.n, shape.c, shape.h, LiftPoolConfiguration.bandLength(shape.w)]
        return (try DeviceTensor(shape: rowsShape, on: weights.device), try DeviceTensor(shape: rowsShape, on: weights.device))
    }

    /// The compiled `pass` of this layer for an input of `shape`, built by `build` once.
    private func plan(
        _ pass: PlanPass, _ shape: Shape4D, upstream: Int = 0, build: () throws -> CompiledPass
    ) throws -> CompiledPass {
        try weights.device.compiledPass(
            PlanKey(
                configuration: LiftPlanConfiguration(
                    configuration: configuration, layer: .down2D, upstream: upstream),
                pass: pass, input: shape),
            build: build)
    }
}

/// The bands of a 2-D LiftDownPool on the device, each N x C x ceil(H/2) x ceil(W/2).
/// The first letter names the horizontal band (along W), the second the vertical one.
public struct LiftDownPool2DOutput: LayerOutput {
    /// The pooled output y = LL + LH + HL + HH.
    public let output: DeviceTensor
    /// Low-low band: s of the column lifting of s_h.
    public let ll: DeviceTensor
    /// d of the column lifting of s_h.
    public let lh: DeviceTensor
    /// s of the column lifting of d_h.
    public let hl: DeviceTensor
    /// d of the column lifting of d_h.
    public let hh: DeviceTensor
    /// The regularisers of a training forward (read back from the device when first read); nil
    /// after inference.
    public var regularisers: LiftRegularisers? {
        get throws { try deferredRegularisers?.value() }
    }
    let deferredRegularisers: Deferred<LiftRegularisers>?

    /// Allocates the five tensors of `shape` on `device`.
    public init(shape: Shape4D, on device: Device) throws {
        try self.init(
            output: DeviceTensor(shape: shape.dimensions, on: device), ll: DeviceTensor(shape: shape.dimensions, on: device),
            lh: DeviceTensor(shape: shape.dimensions, on: device), hl: DeviceTensor(shape: shape.dimensions, on: device),
            hh: DeviceTensor(shape: shape.dimensions, on: device))
    }

    /// Bundles existing tensors (e.g. guarded ones in tests).
    public init(
        output: DeviceTensor, ll: DeviceTensor, lh: DeviceTensor, hl: DeviceTensor, hh: DeviceTensor,
        regularisers: LiftRegularisers? = nil
    ) {
        self.output = output
        self.ll = ll
        self.lh = lh
        self.hl = hl
        self.hh = hh
        deferredRegularisers = regularisers.map { Deferred(value: $0) }
    }

    private init(bands: LiftDownPool2DOutput, regularisers: Deferred<LiftRegularisers>) {
        output = bands.output
        ll = bands.ll
        lh = bands.lh
        hl = bands.hl
        hh = bands.hh
        deferredRegularisers = regularisers
    }

    /// The same tensors with the regularisers of a training forward.
    func with(_ regularisers: Deferred<LiftRegularisers>) -> LiftDownPool2DOutput {
        LiftDownPool2DOutput(bands: self, regularisers: regularisers)
    }

    /// The bands under their names (`ll`, `lh`, `hl`, `hh`).
    public var extras: [String: DeviceTensor] { ["ll": ll, "lh": lh, "hl": hl, "hh": hh] }

    /// `c_u`, `c_p` and `loss` after a training forward (the names of `nyquist run`'s
    /// regularisers.json).
    public var scalars: [String: Double] {
        get throws { try regularisers?.scalars ?? [:] }
    }

    /// The four bands in LiftUpPool's order: LL, LH, HL, HH.
    public var bands: [DeviceTensor] { [ll, lh, hl, hh] }

    /// The buffers of the four bands, then of the output (LiftDownPool2D's plan order).
    var buffers: [OpenCLBuffer] { [ll.buffer, lh.buffer, hl.buffer, hh.buffer, output.buffer] }
}

/// What LiftDownPool2D's backward needs: the input, the row lifting's bands and the four bands.
public struct LiftDownPool2DSaved {
    /// The forward's input.
    public let input: DeviceTensor
    /// s_h, the row lifting's approximation band (N x C x H x ceil(W/2)).
    public let sh: DeviceTensor
    /// d_h, the row lifting's detail band.
    public let dh: DeviceTensor
    /// The forward's bands.
    public let bands: LiftDownPool2DOutput
}

/// The gradients LiftDownPool2D's backward starts from: on the pooled output, on any band
/// (nil: zero), and the weight of the regulariser loss in the training objective.
public struct LiftDownPool2DOutputGradients {
    /// Gradient of the pooled output.
    public let output: DeviceTensor?
    /// Gradients of the bands.
    public let ll: DeviceTensor?
    /// Gradient of LH.
    public let lh: DeviceTensor?
    /// Gradient of HL.
    public let hl: DeviceTensor?
    /// Gradient of HH.
    public let hh: DeviceTensor?
    /// d objective / d loss: 1 when the regulariser loss is added to the objective, 0 leaves it out.
    public let regulariserLoss: Double

    /// Bundles the gradients (all optional; the regulariser loss counts with weight 1 by default).
    public init(
        output: DeviceTensor?, ll: DeviceTensor? = nil, lh: DeviceTensor? = nil, hl: DeviceTensor? = nil,
        hh: DeviceTensor? = nil, regulariserLoss: Double = 1
    ) {
        self.output = output
        self.ll = ll
        self.lh = lh
        self.hl = hl
        self.hh = hh
        self.regulariserLoss = regulariserLoss
    }
}
