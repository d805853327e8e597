import NyquistCL
import NyquistCore

/// LiftUpPool2D (SPEC.md section 4): the exact inverse of LiftDownPool2D with the same P and U.
/// Inverts the column liftings ((LL, LH) -> s_h, (HL, HH) -> d_h), then the row lifting, to a
/// target H x W (2h or 2h - 1 rows for bands of h rows: an odd size drops the padded sample).
/// Two launches (both column inversions in one, then the row inversion).
///
/// In a segmentation decoder the LL slot takes the decoder's feature map and LH, HL, HH the
/// detail bands stored by the matching LiftDownPool.
public final class LiftUpPool2D: Layer {
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

    /// Replaces the parameters (shared with the LiftDownPool this layer inverts).
    public func loadParameters(_ stateDict: [String: HostTensor]) throws { try weights.load(stateDict: stateDict) }

    /// Reconstructs the N x C x height x width map from four bands.
    public func callAsFunction(_ input: LiftUpPool2DInput) throws -> DeviceTensor {
        let output = try DeviceTensor(shape: outputShape(for: input).dimensions, on: input.ll.device)
        try forward(input, into: output)
        return output
    }

    /// Writes the reconstruction into `output`, whose H and W must be the input's target size.
    public func forward(_ input: LiftUpPool2DInput, into output: DeviceTensor) throws {
        guard try output.nchw("\(LiftPoolConfiguration.inverseOperatorName) output") == outputShape(for: input) else {
            throw NyquistError(
                .invalidShape,
                "\(LiftPoolConfiguration.inverseOperatorName): output has shape \(output.shape), expected "
                    + "\(try outputShape(for: input).dimensions)")
        }
        _ = try reconstruct(ll: input.ll, lh: input.lh, hl: input.hl, hh: input.hh, into: output)
    }

    /// Training forward: the reconstruction and what ``backward(_:_:)`` needs (the bands and
    /// the column inversions s_h, d_h). LiftUpPool has no regulariser (our choice).
    public func forwardTraining(_ input: LiftUpPool2DInput) throws -> (output: DeviceTensor, saved: LiftUpPool2DSaved) {
        let output = try DeviceTensor(shape: outputShape(for: input).dimensions, on: input.ll.device)
        let (sh, dh) = try reconstruct(ll: input.ll, lh: input.lh, hl: input.hl, hh: input.hh, into: output)
        return (output, LiftUpPool2DSaved(bands: [input.ll, input.lh, input.hl, input.hh], sh: sh, dh: dh))
    }

    /// Backward: gradients of the four bands (LL, LH, HL, HH) and of the eight parameters from
    /// the gradient of the reconstruction (a dropped padded sample passes no gradient).
    public func backward(_ gradOutput: DeviceTensor, _ saved: LiftUpPool2DSaved) throws -> LiftUpGradients {
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

    /// The reconstruction's shape for `input`, with the configuration's typed errors.
    public func outputShape(for input: LiftUpPool2DInput) throws -> Shape4D {
        let bandShape = try input.ll.nchw("\(LiftPoolConfiguration.inverseOperatorName) band LL")
        return try configuration.checkInverse(bandShape: bandShape, targetHeight: input.height, targetWidth: input.width)
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

/// What LiftUpPool2D's backward needs: the four bands and the column inversions s_h, d_h.
public struct LiftUpPool2DSaved {
    /// LL, LH, HL, HH as given to the forward.
    public let bands: [DeviceTensor]
    /// s_h, the inversion of (LL, LH) along H.
    public let sh: DeviceTensor
    /// d_h, the inversion of (HL, HH) along H.
    public let dh: DeviceTensor
}

/// What LiftUpPool2D reconstructs from: the four bands and the target size.
public struct LiftUpPool2DInput {
    /// The coarse band (in a decoder: the decoder's feature map).
    public let ll: DeviceTensor
    /// The detail bands of the matching LiftDownPool.
    public let lh: DeviceTensor
    /// HL band.
    public let hl: DeviceTensor
    /// HH band.
    public let hh: DeviceTensor
    /// Target height: 2h or 2h - 1 for bands of h rows.
    public let height: Int
    /// Target width: 2w or 2w - 1 for bands of w columns.
    public let width: Int

    /// Four bands and a target size (default: twice the bands' size).
    public init(ll: DeviceTensor, lh: DeviceTensor, hl: DeviceTensor, hh: DeviceTensor, height: Int? = nil, width: Int? = nil) {
        self.ll = ll
        self.lh = lh
        self.hl = hl
        self.hh = hh
        self.height = height ?? 2 * (ll.shape.count == 4 ? ll.shape[2] : 0)
        self.width = width ?? 2 * (ll.shape.count == 4 ? ll.shape[3] : 0)
    }

    /// The bands of a LiftDownPool2D and a target size (default: twice the bands' size).
    public init(_ bands: LiftDownPool2DOutput, height: Int? = nil, width: Int? = nil) {
        self.init(ll: bands.ll, lh: bands.lh, hl: bands.hl, hh: bands.hh, height: height, width: width)
    }
}
