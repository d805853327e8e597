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
    public private(set) var tensors: [String: DeviceTensor]
    /// The device they live on.
    public let device: Device

    /// Uploads `host` (e.g. `LiftPoolParameters(configuration, seed: 0)` for the default
    /// initialisation, or one loaded from a safetensors `state_dict`).
    public init(_ host: LiftPoolParameters<Float>, _ configuration: LiftPoolConfiguration, on device: Device) throws {
        self.configuration = configuration
        self.device = device
        tensors = try Self.upload(host, configuration, device)
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

    /// The eight buffers in kernel-argument order (P's four, then U's).
    var arguments: [KernelArgument] {
        LiftPoolParameters<Float>.names.compactMap { tensors[$0].map { .buffer($0.buffer) } }
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
        _ = try run(input, into: output)
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
        let bands = try LiftDownPool2DOutput(shape: configuration.outputShape(for: shape), on: input.device)
        let (sh, dh) = try run(input, into: bands)
        let device = weights.device
        let program = try LiftPass.program(configuration, device)
        let planes = shape.n * shape.c
        let rows = LiftPass(alongWidth: true, planes: planes, channels: shape.c, height: shape.h, width: shape.w)
        let columns = LiftPass(alongWidth: false, planes: planes, channels: shape.c, height: shape.h, width: sh.shape[3])
        let sums = [
            try rows.regularisers(x: input, s: sh, d: dh, program: program, device: device),
            try columns.regularisers(x: sh, s: bands.ll, d: bands.lh, program: program, device: device),
            try columns.regularisers(x: dh, s: bands.hl, d: bands.hh, program: program, device: device),
        ]
        let regularisers = LiftRegularisers(
            cu: sums.reduce(0) { $0 + $1.cu }, cp: sums.reduce(0) { $0 + $1.cp }, configuration)
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
        let bandShape = try configuration.outputShape(for: shape)
        let device = weights.device
        for (role, tensor) in [("gradOutput", gradOutput), ("gradLL", gradLL), ("gradLH", gradLH), ("gradHL", gradHL), ("gradHH", gradHH)] {
            if let tensor { try LiftPass.require(tensor, bandShape.dimensions, device: device, role: role) }
        }
        let program = try LiftPass.program(configuration, device)
        let planes = shape.n * shape.c
        let rows = LiftPass(alongWidth: true, planes: planes, channels: shape.c, height: shape.h, width: shape.w)
        let columns = LiftPass(alongWidth: false, planes: planes, channels: shape.c, height: shape.h, width: bandShape.w)
        let gradients = try weights.zeroGradients()
        let gsh = try DeviceTensor(shape: saved.sh.shape, on: device)
        let gdh = try DeviceTensor(shape: saved.dh.shape, on: device)
        let gx = try DeviceTensor(shape: saved.input.shape, on: device)
        try columns.backward(
            x: saved.sh, s: saved.bands.ll, d: saved.bands.lh, gs: gradLL, gd: gradLH, gy: gradOutput, into: gsh,
            gradients: gradients, accumulate: false, gradLoss: gradLoss, configuration, weights, program)
        try columns.backward(
            x: saved.dh, s: saved.bands.hl, d: saved.bands.hh, gs: gradHL, gd: gradHH, gy: gradOutput, into: gdh,
            gradients: gradients, accumulate: true, gradLoss: gradLoss, configuration, weights, program)
        try rows.backward(
            x: saved.input, s: saved.sh, d: saved.dh, gs: gsh, gd: gdh, gy: nil, into: gx, gradients: gradients,
            accumulate: true, gradLoss: gradLoss, configuration, weights, program)
        return Gradients(input: gx, parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
    }

    /// The two passes of the forward; returns the row lifting's bands s_h, d_h.
    private func run(_ input: DeviceTensor, into output: LiftDownPool2DOutput) throws -> (DeviceTensor, DeviceTensor) {
        let shape = try input.nchw("\(LiftPoolConfiguration.operatorName) input")
        let bandShape = try configuration.outputShape(for: shape)
        for tensor in [output.output, output.ll, output.lh, output.hl, output.hh] {
            try LiftPass.require(tensor, bandShape.dimensions, device: weights.device, role: "output band")
        }
        try LiftPass.require(input, shape.dimensions, device: weights.device, role: "input")
        let device = weights.device
        let rowsShape = [shape.n, shape.c, shape.h, bandShape.w]
        let sh = try DeviceTensor(shape: rowsShape, on: device)
        let dh = try DeviceTensor(shape: rowsShape, on: device)
        let rows = LiftPass(alongWidth: true, planes: shape.n * shape.c, channels: shape.c, height: shape.h, width: shape.w)
        let rowsLaunch = try rows.runLaunch(configuration, on: device)
        try device.context.dispatch(
            "lift_down", in: rowsLaunch.program,
            arguments: [.buffer(input.buffer), .buffer(sh.buffer), .buffer(dh.buffer), .buffer(dh.buffer), .int(0)]
                + rows.arguments(inverse: false) + weights.arguments,
            global: rowsLaunch.global)
        let columns = LiftPass(
            alongWidth: false, planes: shape.n * shape.c, channels: shape.c, height: shape.h, width: bandShape.w)
        let columnsLaunch = try columns.runLaunch(configuration, on: device)
        try device.context.dispatch(
            "lift_down_pair", in: columnsLaunch.program,
            arguments: [sh, dh, output.ll, output.lh, output.hl, output.hh, output.output].map { .buffer($0.buffer) }
                + columns.arguments(inverse: false) + weights.arguments,
            global: columnsLaunch.global)
        return (sh, dh)
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
        let bandShape = try configuration.outputShape1D(for: input.shape)
        let shape = try LiftPoolConfiguration.shape1D(input.shape, role: "input")
        for tensor in [output.output, output.s, output.d] {
            try LiftPass.require(tensor, bandShape, device: weights.device, role: "output band")
        }
        try LiftPass.require(input, input.shape, device: weights.device, role: "input")
        let rows = LiftPass(alongWidth: true, planes: shape.n * shape.c, channels: shape.c, height: 1, width: shape.w)
        let launch = try rows.runLaunch(configuration, on: weights.device)
        try weights.device.context.dispatch(
            "lift_down", in: launch.program,
            arguments: [input, output.s, output.d, output.output].map { .buffer($0.buffer) } + [.int(1)]
                + rows.arguments(inverse: false) + weights.arguments,
            global: launch.global)
    }

    /// Training forward: the bands, the regularisers of the lifting and what
    /// ``backward(_:gradOutput:gradS:gradD:gradLoss:)`` needs.
    public func forwardTraining(_ input: DeviceTensor) throws -> (
        bands: LiftDownPool1DOutput, regularisers: LiftRegularisers, saved: LiftDownPool1DSaved
    ) {
        let bands = try callAsFunction(input)
        let shape = try LiftPoolConfiguration.shape1D(input.shape, role: "input")
        let rows = LiftPass(alongWidth: true, planes: shape.n * shape.c, channels: shape.c, height: 1, width: shape.w)
        let sums = try rows.regularisers(
            x: input, s: bands.s, d: bands.d, program: try LiftPass.program(configuration, weights.device), device: weights.device)
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
        for (role, tensor) in [("gradOutput", gradOutput), ("gradS", gradS), ("gradD", gradD)] {
            if let tensor { try LiftPass.require(tensor, bandShape, device: device, role: role) }
        }
        let rows = LiftPass(alongWidth: true, planes: shape.n * shape.c, channels: shape.c, height: 1, width: shape.w)
        let gradients = try weights.zeroGradients()
        let gx = try DeviceTensor(shape: saved.input.shape, on: device)
        try rows.backward(
            x: saved.input, s: saved.bands.s, d: saved.bands.d, gs: gradS, gd: gradD, gy: gradOutput, into: gx,
            gradients: gradients, accumulate: false, gradLoss: gradLoss, configuration, weights,
            try LiftPass.program(configuration, device))
        return Gradients(input: gx, parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
    }
}

/// LiftUpPool2D (SPEC.md section 4): the exact inverse of LiftDownPool2D with the same P and U.
/// Inverts the column liftings ((LL, LH) -> s_h, (HL, HH) -> d_h), then the row lifting, to a
/// target H x W (2h or 2h - 1 rows for bands of h rows: an odd size drops the padded sample).
/// Three passes (two column inversions, one row inversion).
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
        let planes = shape.n * shape.c
        let columns = LiftPass(alongWidth: false, planes: planes, channels: shape.c, height: shape.h, width: bandShape.w)
        let columnsLaunch = try columns.runLaunch(configuration, on: device)
        for (s, d, x) in [(ll, lh, sh), (hl, hh, dh)] {
            try device.context.dispatch(
                "lift_up", in: columnsLaunch.program,
                arguments: [s, d, x].map { .buffer($0.buffer) } + columns.arguments(inverse: true) + weights.arguments,
                global: columnsLaunch.global)
        }
        let rows = LiftPass(alongWidth: true, planes: planes, channels: shape.c, height: shape.h, width: shape.w)
        let rowsLaunch = try rows.runLaunch(configuration, on: device)
        try device.context.dispatch(
            "lift_up", in: rowsLaunch.program,
            arguments: [sh, dh, output].map { .buffer($0.buffer) } + rows.arguments(inverse: true) + weights.arguments,
            global: rowsLaunch.global)
    }

    /// Training forward: the reconstruction and what ``backward(_:gradOutput:)`` needs (the
    /// bands and the column inversions s_h, d_h). LiftUpPool has no regulariser (our choice).
    public func forwardTraining(ll: DeviceTensor, lh: DeviceTensor, hl: DeviceTensor, hh: DeviceTensor, height: Int, width: Int)
        throws -> (output: DeviceTensor, saved: LiftUpPool2DSaved)
    {
        let output = try callAsFunction(ll: ll, lh: lh, hl: hl, hh: hh, height: height, width: width)
        let bandShape = try ll.nchw("\(LiftPoolConfiguration.inverseOperatorName) band LL")
        let device = weights.device
        let columns = LiftPass(
            alongWidth: false, planes: bandShape.n * bandShape.c, channels: bandShape.c, height: height, width: bandShape.w)
        let rowsShape = [bandShape.n, bandShape.c, height, bandShape.w]
        let sh = try DeviceTensor(shape: rowsShape, on: device)
        let dh = try DeviceTensor(shape: rowsShape, on: device)
        let columnsLaunch = try columns.runLaunch(configuration, on: device)
        for (s, d, x) in [(ll, lh, sh), (hl, hh, dh)] {
            try device.context.dispatch(
                "lift_up", in: columnsLaunch.program,
                arguments: [s, d, x].map { .buffer($0.buffer) } + columns.arguments(inverse: true) + weights.arguments,
                global: columnsLaunch.global)
        }
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
        let program = try LiftPass.program(configuration, device)
        let planes = bandShape.n * bandShape.c
        let rows = LiftPass(alongWidth: true, planes: planes, channels: bandShape.c, height: grad.h, width: grad.w)
        let columns = LiftPass(alongWidth: false, planes: planes, channels: bandShape.c, height: grad.h, width: bandShape.w)
        let gradients = try weights.zeroGradients()
        let gsh = try DeviceTensor(shape: saved.sh.shape, on: device)
        let gdh = try DeviceTensor(shape: saved.dh.shape, on: device)
        try rows.inverseBackward(
            s: saved.sh, d: saved.dh, gx: gradOutput, gs: gsh, gd: gdh, gradients: gradients, accumulate: false, configuration, weights, program)
        let bands = try (0..<4).map { _ in try DeviceTensor(shape: bandShape.dimensions, on: device) }
        try columns.inverseBackward(
            s: saved.bands[0], d: saved.bands[1], gx: gsh, gs: bands[0], gd: bands[1], gradients: gradients, accumulate: true,
            configuration, weights, program)
        try columns.inverseBackward(
            s: saved.bands[2], d: saved.bands[3], gx: gdh, gs: bands[2], gd: bands[3], gradients: gradients, accumulate: true,
            configuration, weights, program)
        return LiftUpGradients(bands: bands, parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
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
        let rows = LiftPass(alongWidth: true, planes: shape.n * shape.c, channels: shape.c, height: 1, width: length)
        let launch = try rows.runLaunch(configuration, on: device)
        try device.context.dispatch(
            "lift_up", in: launch.program,
            arguments: [s, d, output].map { .buffer($0.buffer) } + rows.arguments(inverse: true) + weights.arguments,
            global: launch.global)
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
        let rows = LiftPass(alongWidth: true, planes: shape.n * shape.c, channels: shape.c, height: 1, width: shape.w)
        let gradients = try weights.zeroGradients()
        let gs = try DeviceTensor(shape: s.shape, on: device)
        let gd = try DeviceTensor(shape: s.shape, on: device)
        try rows.inverseBackward(
            s: s, d: d, gx: gradOutput, gs: gs, gd: gd, gradients: gradients, accumulate: false, configuration, weights,
            try LiftPass.program(configuration, device))
        return LiftUpGradients(bands: [gs, gd], parameters: Dictionary(uniqueKeysWithValues: zip(LiftPoolParameters<Float>.names, gradients)))
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

/// Geometry of one lifting pass over `planes` maps of height x width (the full-size side), along
/// W (rows) or H (columns): the 12 integer kernel arguments and the global size.
struct LiftPass {
    let alongWidth: Bool
    let planes: Int
    let channels: Int
    let height: Int
    let width: Int

    /// Length L of the lifted axis and of its bands M.
    var length: Int { alongWidth ? width : height }
    var band: Int { LiftPoolConfiguration.bandLength(length) }
    var lines: Int { alongWidth ? height : width }

    /// (plane, line, step) strides of the full-size map and of the band map.
    var full: (Int, Int, Int) { (height * width, alongWidth ? width : 1, alongWidth ? 1 : width) }
    var bands: (Int, Int, Int) { alongWidth ? (height * band, band, 1) : (band * width, 1, width) }

    /// The geometry arguments; forward reads the full map and writes bands, inverse the opposite.
    func arguments(inverse: Bool) throws -> [KernelArgument] {
        let (input, output) = inverse ? (bands, full) : (full, bands)
        return try [length, band, lines, planes, channels, alongWidth ? 1 : 0, input.0, input.1, input.2, output.0, output.1, output.2]
            .map { try .int($0) }
    }

    /// The forward and inverse kernels: one work item per run of `run` band positions, (run,
    /// line) along W, (line, run) along H, then planes.
    func runGlobal(_ run: Int) -> [Int] {
        let runs = (band + run - 1) / run
        return alongWidth ? [runs, lines, planes] : [lines, runs, planes]
    }

    /// The per-position backward kernels: along W one work item per run of `run` positions (as
    /// `runGlobal`), along H one per group of `run` neighbouring lines at one position.
    func laneGlobal(_ run: Int) -> [Int] {
        alongWidth ? runGlobal(run) : [(lines + run - 1) / run, band, planes]
    }

    /// The program and global size of this pass's forward or inverse kernel on `device` (of its
    /// per-position backward kernels with `backward`: `laneGlobal`), with RUN chosen for this
    /// pass's band length.
    func runLaunch(_ configuration: LiftPoolConfiguration, on device: Device, backward: Bool = false) throws -> (
        program: OpenCLProgram, global: [Int]
    ) {
        let run = LiftLaunch.choose(for: device, band: band).run
        return (try Self.program(configuration, device, run: run), backward ? laneGlobal(run) : runGlobal(run))
    }

    /// Work-group size of the reductions (LIFT_GROUP in the kernels).
    static let group = 64

    /// Number of band elements of this lifting (E, the regularisers' mean divisor).
    var bandCount: Int { planes * lines * band }

    /// c_u and c_p of this lifting (means over its band elements) from x and its bands.
    func regularisers(x: DeviceTensor, s: DeviceTensor, d: DeviceTensor, program: OpenCLProgram, device: Device) throws
        -> (cu: Double, cp: Double)
    {
        let groups = min(64, (bandCount + Self.group - 1) / Self.group)
        let partials = try DeviceTensor(shape: [2 * groups], on: device)
        try device.context.dispatch(
            "lift_regulariser_partials", in: program,
            arguments: [x, s, d, partials].map { .buffer($0.buffer) } + arguments(inverse: false),
            global: [groups * Self.group], local: [Self.group])
        let values = try partials.toHost().values
        var cu = 0.0
        var cp = 0.0
        for group in 0..<groups {
            cu += Double(values[2 * group])
            cp += Double(values[2 * group + 1])
        }
        return (cu / Double(bandCount), cp / Double(bandCount))
    }

    /// Backward of one forward lifting x -> (s, d): writes the gradient of x into `gx` and
    /// writes (or, with `accumulate`, adds) the parameter gradients into `gradients`. Four
    /// passes: U's gate, gD (and P's gate), parameters, gx; each gate is evaluated once per band
    /// position and read by its K neighbours.
    func backward(
        x: DeviceTensor, s: DeviceTensor, d: DeviceTensor, gs: DeviceTensor?, gd: DeviceTensor?, gy: DeviceTensor?,
        into gx: DeviceTensor, gradients: [DeviceTensor], accumulate: Bool, gradLoss: Double,
        _ configuration: LiftPoolConfiguration, _ weights: LiftPoolDeviceParameters, _ program: OpenCLProgram
    ) throws {
        let device = weights.device
        let flags = (gs == nil ? 0 : 1) | (gd == nil ? 0 : 2) | (gy == nil ? 0 : 4)
        let count = Double(bandCount)
        let buffers: [KernelArgument] = try [x, s, d, gs ?? s, gd ?? s, gy ?? s].map { .buffer($0.buffer) } + [
            .int(flags), .float(Float(2 * gradLoss * configuration.lambdaU / count)),
            .float(Float(2 * gradLoss * configuration.lambdaP / count)),
        ]
        // The gates of U and P (pre-activation, gradient through the tanh), once per position.
        let (updatePre, updateGradient, predictPre, predictGradient, detail) = try (
            DeviceTensor(shape: s.shape, on: device), DeviceTensor(shape: s.shape, on: device),
            DeviceTensor(shape: s.shape, on: device), DeviceTensor(shape: s.shape, on: device),
            DeviceTensor(shape: s.shape, on: device)
        )
        let geometry = try arguments(inverse: false) + weights.arguments
        let (runProgram, global) = try runLaunch(configuration, on: device, backward: true)
        try device.context.dispatch(
            "lift_backward_update_gate", in: runProgram,
            arguments: buffers + [updatePre, updateGradient].map { .buffer($0.buffer) } + geometry, global: global)
        try device.context.dispatch(
            "lift_backward_detail", in: runProgram,
            arguments: buffers + [updatePre, updateGradient, detail, predictPre, predictGradient].map { .buffer($0.buffer) }
                + geometry,
            global: global)
        try device.context.dispatch(
            "lift_parameter_gradients", in: program,
            arguments: buffers + ([updatePre, updateGradient, predictPre, predictGradient] + gradients).map { .buffer($0.buffer) }
                + [.int(accumulate ? 1 : 0)] + geometry,
            global: [Self.group * channels], local: [Self.group])
        try device.context.dispatch(
            "lift_backward_input", in: runProgram,
            arguments: buffers + [predictPre, predictGradient, detail, gx].map { .buffer($0.buffer) } + geometry,
            global: global)
    }

    /// Backward of one inverse lifting (s, d) -> x: writes the gradients of s and d and writes
    /// (or adds) the parameter gradients. Five passes: x_e (and U's pre-activation), P's gate,
    /// gs (and U's gate), gd, parameters; each gate is evaluated once per band position.
    func inverseBackward(
        s: DeviceTensor, d: DeviceTensor, gx: DeviceTensor, gs: DeviceTensor, gd: DeviceTensor, gradients: [DeviceTensor],
        accumulate: Bool, _ configuration: LiftPoolConfiguration, _ weights: LiftPoolDeviceParameters,
        _ program: OpenCLProgram
    ) throws {
        let device = weights.device
        let geometry = try arguments(inverse: true) + weights.arguments
        let (runProgram, global) = try runLaunch(configuration, on: device, backward: true)
        let (even, updatePre, updateGradient, predictPre, predictGradient) = try (
            DeviceTensor(shape: s.shape, on: device), DeviceTensor(shape: s.shape, on: device),
            DeviceTensor(shape: s.shape, on: device), DeviceTensor(shape: s.shape, on: device),
            DeviceTensor(shape: s.shape, on: device)
        )
        try device.context.dispatch(
            "lift_up_even", in: runProgram, arguments: [s, d, even, updatePre].map { .buffer($0.buffer) } + geometry,
            global: global)
        try device.context.dispatch(
            "lift_up_predict_gate", in: runProgram,
            arguments: [even, gx, predictPre, predictGradient].map { .buffer($0.buffer) } + geometry, global: global)
        try device.context.dispatch(
            "lift_up_backward_even", in: runProgram,
            arguments: [predictPre, predictGradient, updatePre, gx, gs, updateGradient].map { .buffer($0.buffer) } + geometry,
            global: global)
        try device.context.dispatch(
            "lift_up_backward_detail", in: runProgram,
            arguments: [updatePre, updateGradient, gx, gd].map { .buffer($0.buffer) } + geometry, global: global)
        try device.context.dispatch(
            "lift_up_parameter_gradients", in: program,
            arguments: ([even, d, predictPre, predictGradient, updatePre, updateGradient] + gradients).map { .buffer($0.buffer) }
                + [.int(accumulate ? 1 : 0)] + geometry,
            global: [Self.group * channels], local: [Self.group])
    }

    /// The LiftPool program with RUN = `run`. Without `run` it is the reductions' program
    /// (parameter gradients, regularisers): their RUN is `LiftLaunch.reductionRun` whatever the
    /// knob says, because it sets the lanes the parameter-gradient sums are split over, so a
    /// tuned `run` would otherwise change the gradients' bits.
    static func program(_ configuration: LiftPoolConfiguration, _ device: Device, run: Int? = nil) throws
        -> OpenCLProgram
    {
        try device.program(
            "lift_pool.cl",
            defines: ["KERNEL_SIZE": configuration.kernelSize, "RUN": run ?? LiftLaunch.reductionRun])
    }

    /// Throws unless `tensor` has `shape` and lives on `device`.
    static func require(
        _ tensor: DeviceTensor, _ shape: [Int], device: Device, role: String,
        layer: String = LiftPoolConfiguration.operatorName
    ) throws {
        guard tensor.shape == shape else {
            throw NyquistError(.invalidShape, "\(layer): \(role) has shape \(tensor.shape), expected \(shape)")
        }
        guard tensor.device === device else {
            throw NyquistError(
                .invalidConfiguration, "\(layer): \(role) lives on \(tensor.device.name) but the parameters on \(device.name)")
        }
        guard tensor.count <= maximumDeviceElementCount else {
            throw NyquistError(.sizeLimit, "\(layer): \(role) \(shape) has more than 2^31 - 1 elements")
        }
    }
}

/// Launch parameters of the LiftPool kernels (Kernels/lift_pool.cl), read through
/// ``Device/launchParameters(family:shapeClass:builtIn:accepts:)`` (family `lift`) so a tuned
/// database entry, the built-in default and a test's override all take one path.
///
/// `run` is the number of consecutive band positions one work item of the forward and inverse
/// kernels computes (RUN), held as one vector of `run` lanes (float, float2, float4 or float8;
/// the backward kernels use the same lanes, along H across `run` neighbouring columns):
/// each evaluates the inner step (P for a forward lifting, U for an inverse one) on the run plus
/// a K/2 halo each side, so the inner step costs about (run + K - 1) / run evaluations per band
/// position instead of K, in vectors. Larger runs cut the recomputation and widen the
/// vectors but give fewer work items (and, along W, less coalescing on GPUs). Shape classes by
/// the band length of a pass (each pass of a 2-D layer chooses for its own axis): "wide" (>= 16
/// positions), "narrow" (where a long run leaves few work items).
struct LiftLaunch: Equatable {
    /// Lanes per work item of the LiftPool kernels (band positions in lift_down, lift_down_pair and
    /// lift_up).
    var run: Int

    /// The tuner and database name of the family.
    static let family = "lift"
    /// A band length of the "wide" class.
    static let wideBand = 16
    /// RUN of the reduction kernels, fixed (not a knob): the parameter-gradient sums visit a
    /// channel in units of this many lanes, so it fixes their order. 8, the CPU default `run`,
    /// so that CPUs build one program.
    static let reductionRun = 8

    /// The shape class of a pass whose bands are `band` positions long.
    static func shapeClass(band: Int) -> String { band >= wideBand ? "wide" : "narrow" }

    /// Every candidate (the tuner times them, the parity tests run them all).
    static let candidates = [1, 2, 4, 8].map { LaunchParameters(run: $0) }

    /// Built-in defaults. CPU devices (PoCL): runs of 8 (measured: docs/kernels.md). GPUs: runs
    /// of 2, trading some recomputation for more work items and shorter strides between
    /// neighbouring items along W; the H200 measurements behind this choice are in
    /// docs/performance.md ("GPU figures").
    static func builtIn(on device: Device) -> LaunchParameters {
        LaunchParameters(run: device.info.isGPU ? 2 : 8)
    }

    /// The choice for a pass whose bands are `band` positions long on `device`.
    static func choose(for device: Device, band: Int) -> LiftLaunch {
        let parameters = device.launchParameters(
            family: family, shapeClass: shapeClass(band: band), builtIn: builtIn(on: device),
            accepts: { $0.run != nil })
        return LiftLaunch(run: parameters.run ?? 8)
    }
}
