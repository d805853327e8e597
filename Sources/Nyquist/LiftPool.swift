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

/// The bands of a 2-D LiftDownPool on the device, each N x C x ceil(H/2) x ceil(W/2).
/// The first letter names the horizontal band (along W), the second the vertical one.
public struct LiftDownPool2DOutput {
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

    /// Allocates the five tensors of `shape` on `device`.
    public init(shape: Shape4D, on device: Device) throws {
        try self.init(
            output: DeviceTensor(shape: shape.dimensions, on: device), ll: DeviceTensor(shape: shape.dimensions, on: device),
            lh: DeviceTensor(shape: shape.dimensions, on: device), hl: DeviceTensor(shape: shape.dimensions, on: device),
            hh: DeviceTensor(shape: shape.dimensions, on: device))
    }

    /// Bundles existing tensors (e.g. guarded ones in tests).
    public init(output: DeviceTensor, ll: DeviceTensor, lh: DeviceTensor, hl: DeviceTensor, hh: DeviceTensor) {
        self.output = output
        self.ll = ll
        self.lh = lh
        self.hl = hl
        self.hh = hh
    }

    /// The four bands in LiftUpPool's order: LL, LH, HL, HH.
    public var bands: [DeviceTensor] { [ll, lh, hl, hh] }

    /// The buffers of the four bands, then of the output (LiftDownPool2D's plan order).
    var buffers: [OpenCLBuffer] { [ll.buffer, lh.buffer, hl.buffer, hh.buffer, output.buffer] }
}

/// The bands of a 1-D LiftDownPool on the device, each (N, C, ceil(L/2)).
public struct LiftDownPool1DOutput {
    /// The pooled output s + d (our choice for 1-D: the sum of the sub-bands, as in 2-D).
    public let output: DeviceTensor
    /// Approximation (low) band s.
    public let s: DeviceTensor
    /// Detail (high) band d.
    public let d: DeviceTensor

    /// Allocates the three tensors of `shape` on `device`.
    public init(shape: [Int], on device: Device) throws {
        try self.init(
            output: DeviceTensor(shape: shape, on: device), s: DeviceTensor(shape: shape, on: device),
            d: DeviceTensor(shape: shape, on: device))
    }

    /// Bundles existing tensors.
    public init(output: DeviceTensor, s: DeviceTensor, d: DeviceTensor) {
        self.output = output
        self.s = s
        self.d = d
    }
}

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
/// let back = try LiftUpPool2D(inverting: pool)(bands, height: x.shape[2], width: x.shape[3])
/// ```
public final class LiftDownPool2D {
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

    /// Training forward: the bands, the regularisers c_u, c_p (each summed over the three
    /// liftings) and loss = lambda_u c_u + lambda_p c_p, and what ``backward(_:gradOutput:gradLL:gradLH:gradHL:gradHH:gradLoss:)``
    /// needs (the input, s_h, d_h and the bands). The regularisers are reduced on the device in a
    /// fixed order (per-work-group partial sums, added on the host in `Double`), so reading them
    /// waits for the forward.
    public func forwardTraining(_ input: DeviceTensor) throws -> (
        bands: LiftDownPool2DOutput, regularisers: LiftRegularisers, saved: LiftDownPool2DSaved
    ) {
        let shape = try input.nchw("\(LiftPoolConfiguration.operatorName) input")
        let device = weights.device
        let bands = try LiftDownPool2DOutput(shape: configuration.outputShape(for: shape), on: input.device)
        try validate(input, bands)
        let (sh, dh) = try rowBands(shape)
        let partials = try DeviceTensor(shape: [LiftPlans.regulariserPartials2D(shape)], on: device)
        try plan(.trainingForward, shape) {
            CompiledPass(try LiftPlans.down2DTrainingForward(configuration, shape, on: device))
        }.run(on: device, buffers: weights.buffers + [input, sh, dh].map(\.buffer) + bands.buffers + [partials.buffer])
        let sums = LiftPlans.regularisers2D(shape, partials: try partials.toHost().values)
        let regularisers = LiftRegularisers(cu: sums.cu, cp: sums.cp, configuration)
        return (bands, regularisers, LiftDownPool2DSaved(input: input, sh: sh, dh: dh, bands: bands))
    }

    /// Backward: gradients of the input and of the eight parameters (by PyTorch name) from
    /// gradients on the pooled output and on any band (nil: zero) and on the regulariser loss
    /// (`gradLoss`, 1 when the loss is added to the training objective; 0 leaves it out).
    public func backward(
        _ saved: LiftDownPool2DSaved, gradOutput: DeviceTensor?, gradLL: DeviceTensor? = nil, gradLH: DeviceTensor? = nil,
        gradHL: DeviceTensor? = nil, gradHH: DeviceTensor? = nil, gradLoss: Double = 1
    ) throws -> Gradients {
        let shape = try saved.input.nchw("\(LiftPoolConfiguration.operatorName) saved input")
        let bandShape = try configuration.outputShape(for: shape).dimensions
        let device = weights.device
        let upstream = [gradOutput, gradLL, gradLH, gradHL, gradHH]
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
        try plan(.backward, shape, upstream: given, gradLoss: gradLoss) {
            try LiftPlans.down2DBackward(configuration, shape, upstream: given, gradLoss: gradLoss, on: device)
        }.run(
            on: device,
            buffers: weights.buffers + [saved.input, saved.sh, saved.dh].map(\.buffer) + saved.bands.bands.map(\.buffer)
                + upstreamBuffers + [gsh, gdh, gx].map(\.buffer) + gradients.map(\.buffer))
        return Gradients(input: gx, parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
    }

    /// The roles of the backward's upstream gradients in errors, in argument order.
    private static let upstreamRoles = ["gradOutput", "gradLL", "gradLH", "gradHL", "gradHH"]

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
        _ pass: PlanPass, _ shape: Shape4D, upstream: Int = 0, gradLoss: Double = 0,
        build: () throws -> CompiledPass
    ) throws -> CompiledPass {
        try weights.device.compiledPass(
            PlanKey(
                configuration: LiftPlanConfiguration(
                    configuration: configuration, layer: .down2D, upstream: upstream, gradLoss: gradLoss.bitPattern),
                pass: pass, input: shape),
            build: build)
    }
}

/// LiftDownPool1D (SPEC.md section 4) on (N, C, L): one learnable lifting; bands s and d and the
/// pooled output s + d, each (N, C, ceil(L/2)). One global-memory pass.
public final class LiftDownPool1D {
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

    /// Training forward: the bands, the regularisers of the lifting and what
    /// ``backward(_:gradOutput:gradS:gradD:gradLoss:)`` needs.
    public func forwardTraining(_ input: DeviceTensor) throws -> (
        bands: LiftDownPool1DOutput, regularisers: LiftRegularisers, saved: LiftDownPool1DSaved
    ) {
        let device = weights.device
        let bands = try LiftDownPool1DOutput(shape: configuration.outputShape1D(for: input.shape), on: input.device)
        let shape = try validate(input, bands)
        let pass = LiftPlans.pass1D(shape)
        let partials = try DeviceTensor(shape: [2 * pass.regulariserGroups], on: device)
        try plan(.trainingForward, shape) {
            CompiledPass(try LiftPlans.down1DTrainingForward(configuration, shape, on: device))
        }.run(on: device, buffers: weights.buffers + [input, bands.s, bands.d, bands.output, partials].map(\.buffer))
        let sums = pass.regularisers(try partials.toHost().values[...])
        return (bands, LiftRegularisers(cu: sums.cu, cp: sums.cp, configuration), LiftDownPool1DSaved(input: input, bands: bands))
    }

    /// Backward: gradients of the input and the eight parameters from gradients on the output,
    /// on s and d (nil: zero) and on the regulariser loss (`gradLoss`).
    public func backward(
        _ saved: LiftDownPool1DSaved, gradOutput: DeviceTensor?, gradS: DeviceTensor? = nil, gradD: DeviceTensor? = nil,
        gradLoss: Double = 1
    ) throws -> Gradients {
        let bandShape = try configuration.outputShape1D(for: saved.input.shape)
        let shape = try LiftPoolConfiguration.shape1D(saved.input.shape, role: "saved input")
        let device = weights.device
        let upstream = [gradOutput, gradS, gradD]
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
        try plan(.backward, shape, upstream: given, gradLoss: gradLoss) {
            try LiftPlans.down1DBackward(configuration, shape, upstream: given, gradLoss: gradLoss, on: device)
        }.run(
            on: device,
            buffers: weights.buffers + [saved.input, saved.bands.s, saved.bands.d].map(\.buffer) + upstreamBuffers
                + [gx.buffer] + gradients.map(\.buffer))
        return Gradients(input: gx, parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
    }

    /// The roles of the backward's upstream gradients in errors, in argument order.
    private static let upstreamRoles = ["gradOutput", "gradS", "gradD"]

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
        _ pass: PlanPass, _ shape: Shape4D, upstream: Int = 0, gradLoss: Double = 0,
        build: () throws -> CompiledPass
    ) throws -> CompiledPass {
        try weights.device.compiledPass(
            PlanKey(
                configuration: LiftPlanConfiguration(
                    configuration: configuration, layer: .down1D, upstream: upstream, gradLoss: gradLoss.bitPattern),
                pass: pass, input: shape),
            build: build)
    }
}

/// LiftUpPool2D (SPEC.md section 4): the exact inverse of LiftDownPool2D with the same P and U.
/// Inverts the column liftings ((LL, LH) -> s_h, (HL, HH) -> d_h), then the row lifting, to a
/// target H x W (2h or 2h - 1 rows for bands of h rows: an odd size drops the padded sample).
/// Two launches (both column inversions in one, then the row inversion).
///
/// In a segmentation decoder the LL slot takes the decoder's feature map and LH, HL, HH the
/// detail bands stored by the matching LiftDownPool.
public final class LiftUpPool2D {
    /// The options (shared with `Reference.liftUpPool2D`).
    public let configuration: LiftPoolConfiguration
    /// P and U on the device (shared with the LiftDownPool it inverts, when built from one).
    public let weights: LiftPoolDeviceParameters

    /// Builds the layer on existing device parameters.
    public init(_ weights: LiftPoolDeviceParameters) {
        configuration = weights.configuration
        self.weights = weights
    }

    /// The inverse of `pool`: shares its parameters.
    public convenience init(inverting pool: LiftDownPool2D) {
        self.init(pool.weights)
    }

    /// Builds the layer with the given parameters.
    public convenience init(_ configuration: LiftPoolConfiguration, parameters: LiftPoolParameters<Float>, on device: Device)
        throws
    {
        self.init(try LiftPoolDeviceParameters(parameters, configuration, on: device))
    }

    /// The parameters by PyTorch name.
    public var parameters: [String: DeviceTensor] { weights.tensors }

    /// Reconstructs the N x C x `height` x `width` map from the bands of a LiftDownPool2D.
    public func callAsFunction(_ bands: LiftDownPool2DOutput, height: Int, width: Int) throws -> DeviceTensor {
        try callAsFunction(ll: bands.ll, lh: bands.lh, hl: bands.hl, hh: bands.hh, height: height, width: width)
    }

    /// Reconstructs the N x C x `height` x `width` map from four bands.
    public func callAsFunction(ll: DeviceTensor, lh: DeviceTensor, hl: DeviceTensor, hh: DeviceTensor, height: Int, width: Int)
        throws -> DeviceTensor
    {
        let bandShape = try ll.nchw("\(LiftPoolConfiguration.inverseOperatorName) band LL")
        let shape = try configuration.checkInverse(bandShape: bandShape, targetHeight: height, targetWidth: width)
        let output = try DeviceTensor(shape: shape.dimensions, on: ll.device)
        try forward(ll: ll, lh: lh, hl: hl, hh: hh, into: output)
        return output
    }

    /// Writes the reconstruction into `output`, whose H and W are the target size.
    public func forward(ll: DeviceTensor, lh: DeviceTensor, hl: DeviceTensor, hh: DeviceTensor, into output: DeviceTensor)
        throws
    {
        _ = try reconstruct(ll: ll, lh: lh, hl: hl, hh: hh, into: output)
    }

    /// Training forward: the reconstruction and what ``backward(_:gradOutput:)`` needs (the
    /// bands and the column inversions s_h, d_h). LiftUpPool has no regulariser (our choice).
    public func forwardTraining(ll: DeviceTensor, lh: DeviceTensor, hl: DeviceTensor, hh: DeviceTensor, height: Int, width: Int)
        throws -> (output: DeviceTensor, saved: LiftUpPool2DSaved)
    {
        let bandShape = try ll.nchw("\(LiftPoolConfiguration.inverseOperatorName) band LL")
        let shape = try configuration.checkInverse(bandShape: bandShape, targetHeight: height, targetWidth: width)
        let output = try DeviceTensor(shape: shape.dimensions, on: ll.device)
        let (sh, dh) = try reconstruct(ll: ll, lh: lh, hl: hl, hh: hh, into: output)
        return (output, LiftUpPool2DSaved(bands: [ll, lh, hl, hh], sh: sh, dh: dh))
    }

    /// Backward: gradients of the four bands (LL, LH, HL, HH) and of the eight parameters from
    /// the gradient of the reconstruction (a dropped padded sample passes no gradient).
    public func backward(_ saved: LiftUpPool2DSaved, gradOutput: DeviceTensor) throws -> LiftUpGradients {
        let bandShape = try saved.bands[0].nchw("\(LiftPoolConfiguration.inverseOperatorName) band LL")
        let height = saved.sh.shape[2]
        let device = weights.device
        let grad = try gradOutput.nchw("\(LiftPoolConfiguration.inverseOperatorName) gradOutput")
        _ = try configuration.checkInverse(bandShape: bandShape, targetHeight: grad.h, targetWidth: grad.w)
        guard grad.n == bandShape.n, grad.h == height else {
            throw NyquistError(
                .invalidShape, "\(LiftPoolConfiguration.inverseOperatorName): gradOutput \(grad) does not fit the saved forward")
        }
        try LiftPass.require(gradOutput, grad.dimensions, device: device, role: "gradOutput", layer: LiftPoolConfiguration.inverseOperatorName)
        let gradients = try weights.zeroGradients()
        let gsh = try DeviceTensor(shape: saved.sh.shape, on: device)
        let gdh = try DeviceTensor(shape: saved.dh.shape, on: device)
        let bands = try (0..<4).map { _ in try DeviceTensor(shape: bandShape.dimensions, on: device) }
        try plan(.backward, grad) {
            try LiftPlans.up2DBackward(configuration, grad, on: device)
        }.run(
            on: device,
            buffers: weights.buffers + saved.bands.map(\.buffer) + [saved.sh, saved.dh, gradOutput, gsh, gdh].map(\.buffer)
                + (bands + gradients).map(\.buffer))
        return LiftUpGradients(bands: bands, parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
    }

    /// Checks the bands and `output` and runs the forward; returns the column inversions s_h, d_h.
    private func reconstruct(ll: DeviceTensor, lh: DeviceTensor, hl: DeviceTensor, hh: DeviceTensor, into output: DeviceTensor)
        throws -> (DeviceTensor, DeviceTensor)
    {
        let bandShape = try ll.nchw("\(LiftPoolConfiguration.inverseOperatorName) band LL")
        let outputShape = try output.nchw("\(LiftPoolConfiguration.inverseOperatorName) output")
        let shape = try configuration.checkInverse(bandShape: bandShape, targetHeight: outputShape.h, targetWidth: outputShape.w)
        guard shape == outputShape else {
            throw NyquistError(
                .invalidShape, "\(LiftPoolConfiguration.inverseOperatorName): output \(outputShape) does not fit bands \(bandShape)")
        }
        let device = weights.device
        for band in [ll, lh, hl, hh] {
            try LiftPass.require(band, bandShape.dimensions, device: device, role: "band", layer: LiftPoolConfiguration.inverseOperatorName)
        }
        try LiftPass.require(output, outputShape.dimensions, device: device, role: "output", layer: LiftPoolConfiguration.inverseOperatorName)
        let rowsShape = [shape.n, shape.c, shape.h, bandShape.w]
        let sh = try DeviceTensor(shape: rowsShape, on: device)
        let dh = try DeviceTensor(shape: rowsShape, on: device)
        try plan(.forward, shape) {
            CompiledPass(try LiftPlans.up2DForward(configuration, shape, on: device))
        }.run(on: device, buffers: weights.buffers + [ll, lh, hl, hh, sh, dh, output].map(\.buffer))
        return (sh, dh)
    }

    /// The compiled `pass` of this layer for an output of `shape`, built by `build` once.
    private func plan(_ pass: PlanPass, _ shape: Shape4D, build: () throws -> CompiledPass) throws -> CompiledPass {
        try weights.device.compiledPass(
            PlanKey(configuration: LiftPlanConfiguration(configuration: configuration, layer: .up2D), pass: pass, input: shape),
            build: build)
    }
}

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

/// What LiftUpPool2D's backward needs: the four bands and the column inversions s_h, d_h.
public struct LiftUpPool2DSaved {
    /// LL, LH, HL, HH as given to the forward.
    public let bands: [DeviceTensor]
    /// s_h, the inversion of (LL, LH) along H.
    public let sh: DeviceTensor
    /// d_h, the inversion of (HL, HH) along H.
    public let dh: DeviceTensor
}

/// Gradients of a LiftUpPool backward.
public struct LiftUpGradients {
    /// Gradients of the bands in the forward's order (1-D: s, d; 2-D: LL, LH, HL, HH).
    public let bands: [DeviceTensor]
    /// Gradients of the eight parameters by PyTorch name.
    public let parameters: [String: DeviceTensor]
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

/// What LiftDownPool1D's backward needs: the input and the bands.
public struct LiftDownPool1DSaved {
    /// The forward's input.
    public let input: DeviceTensor
    /// The forward's bands.
    public let bands: LiftDownPool1DOutput
}
