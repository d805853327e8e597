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
        let program = try LiftPass.program(configuration, device)
        let rows = LiftPass(alongWidth: true, planes: shape.n * shape.c, channels: shape.c, height: shape.h, width: shape.w)
        try device.context.dispatch(
            "lift_down", in: program,
            arguments: [.buffer(input.buffer), .buffer(sh.buffer), .buffer(dh.buffer), .buffer(dh.buffer), .int(0)]
                + rows.arguments(inverse: false) + weights.arguments,
            global: rows.global)
        let columns = LiftPass(
            alongWidth: false, planes: shape.n * shape.c, channels: shape.c, height: shape.h, width: bandShape.w)
        try device.context.dispatch(
            "lift_down_pair", in: program,
            arguments: [sh, dh, output.ll, output.lh, output.hl, output.hh, output.output].map { .buffer($0.buffer) }
                + columns.arguments(inverse: false) + weights.arguments,
            global: columns.global)
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
        try weights.device.context.dispatch(
            "lift_down", in: try LiftPass.program(configuration, weights.device),
            arguments: [input, output.s, output.d, output.output].map { .buffer($0.buffer) } + [.int(1)]
                + rows.arguments(inverse: false) + weights.arguments,
            global: rows.global)
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
        let program = try LiftPass.program(configuration, device)
        let planes = shape.n * shape.c
        let columns = LiftPass(alongWidth: false, planes: planes, channels: shape.c, height: shape.h, width: bandShape.w)
        for (s, d, x) in [(ll, lh, sh), (hl, hh, dh)] {
            try device.context.dispatch(
                "lift_up", in: program,
                arguments: [s, d, x].map { .buffer($0.buffer) } + columns.arguments(inverse: true) + weights.arguments,
                global: columns.global)
        }
        let rows = LiftPass(alongWidth: true, planes: planes, channels: shape.c, height: shape.h, width: shape.w)
        try device.context.dispatch(
            "lift_up", in: program,
            arguments: [sh, dh, output].map { .buffer($0.buffer) } + rows.arguments(inverse: true) + weights.arguments,
            global: rows.global)
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
        try device.context.dispatch(
            "lift_up", in: try LiftPass.program(configuration, device),
            arguments: [s, d, output].map { .buffer($0.buffer) } + rows.arguments(inverse: true) + weights.arguments,
            global: rows.global)
        return output
    }
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
    func arguments(inverse: Bool) -> [KernelArgument] {
        let (input, output) = inverse ? (bands, full) : (full, bands)
        return [length, band, lines, planes, channels, alongWidth ? 1 : 0, input.0, input.1, input.2, output.0, output.1, output.2]
            .map { .int($0) }
    }

    /// One work item per band position: (m, line) along W, (line, m) along H, then planes.
    var global: [Int] { alongWidth ? [band, lines, planes] : [lines, band, planes] }

    static func program(_ configuration: LiftPoolConfiguration, _ device: Device) throws -> OpenCLProgram {
        try device.program("lift_pool.cl", defines: ["KERNEL_SIZE": configuration.kernelSize])
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
