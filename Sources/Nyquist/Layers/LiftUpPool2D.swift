import NyquistCL
import NyquistCore

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

/// What LiftUpPool2D's backward needs: the four bands and the column inversions s_h, d_h.
public struct LiftUpPool2DSaved {
    /// LL, LH, HL, HH as given to the forward.
    public let bands: [DeviceTensor]
    /// s_h, the inversion of (LL, LH) along H.
    public let sh: DeviceTensor
    /// d_h, the inversion of (HL, HH) along H.
    public let dh: DeviceTensor
}
