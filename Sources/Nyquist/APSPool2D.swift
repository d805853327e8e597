import NyquistCL
import NyquistCore
import Synchronization

/// APSPool2D (Chaman & Dokmanic 2021, "Truly shift-invariant CNNs"): adaptive polyphase
/// sampling by 2, exactly invariant to circular shifts of even-sized inputs.
///
/// Optionally blurs (binomial filter of `filterSize`, stride 1, circular padding), pads odd sizes
/// circularly by one row at the bottom / one column at the right, and keeps, for each SAMPLE,
/// the one of the four phases p0 = (0,0), p1 = (1,0), p2 = (0,1), p3 = (1,1) with the largest
/// `norm` over all channels (ties: lowest index; the first NaN norm wins). Output
/// N x C x ceil(H/2) x ceil(W/2). No parameters.
///
/// The phase indices come back as a float tensor of shape [N] holding 0, 1, 2 or 3, and can be
/// passed back in (so a residual shortcut samples the same phase as the main branch):
///
/// ```swift
/// let pool = try APSPool2D(channels: 64)
/// let (y, indices) = try pool(x, indices: nil)
/// let (shortcut, _) = try APSPool2D(channels: 256)(z, indices: indices)
/// ```
///
/// Given indices are not read back to the host for checking (that would stall the queue): the
/// kernels clamp them to 0...3 (NaN reads as 0), so a bad index gives a wrong phase, never an
/// out-of-bounds access. Norms are accumulated in Float on the device (l2 as a sum of squares,
/// which overflows to +Inf for values above about 1e19, where the Double reference does not).
public struct APSPool2D: PoolingLayer {
    /// The options (shared with `Reference.apsPool2D`).
    public let configuration: APSPool2DConfiguration

    /// Builds the layer; the default is plain APS (no blur) with the l2 norm.
    public init(channels: Int, filterSize: Int = 1, norm: PolyphaseNorm = .l2) throws {
        configuration = try APSPool2DConfiguration(channels: channels, filterSize: filterSize, norm: norm)
    }

    /// Builds the layer from a configuration.
    public init(_ configuration: APSPool2DConfiguration) {
        self.configuration = configuration
    }

    /// Name of the saved phase indices in ``SavedForBackward/tensors``.
    public static let indicesName = "indices"

    /// Writes the output for `input` into `output`, choosing each sample's phase by its norm
    /// (the chosen indices go to a scratch tensor; use ``callAsFunction(_:indices:)`` to keep them).
    public func forward(_ input: DeviceTensor, into output: DeviceTensor) throws {
        let indices = try DeviceTensor(shape: [max(input.shape.first ?? 1, 1)], on: input.device)
        try forward(input, into: output, indices: indices, given: false)
    }

    /// Forward into `output`; with `given` false the chosen phases are written to `indices`
    /// (shape [N]), with `given` true they are read from it.
    public func forward(_ input: DeviceTensor, into output: DeviceTensor, indices: DeviceTensor, given: Bool) throws {
        let (inputShape, outputShape) = try validateForward(input, output)
        try checkIndices(indices, inputShape, on: input.device)
        let source = try blurred(input, inputShape)
        let program = try self.program(input.device)
        if !given { try choose(source, inputShape, indices: indices, program: program) }
        try input.device.context.dispatch(
            "aps_gather", in: program,
            arguments: [
                .buffer(source.buffer), .buffer(indices.buffer), .buffer(output.buffer), .int(inputShape.n * inputShape.c),
                .int(inputShape.c), .int(inputShape.h), .int(inputShape.w), .int(outputShape.h), .int(outputShape.w),
            ],
            global: [(outputShape.w + 7) / 8, outputShape.h, inputShape.n * inputShape.c])
    }

    /// Inference forward returning the output and the phase indices; pass `indices` (shape [N],
    /// from another APS layer) to sample those phases instead of choosing.
    public func callAsFunction(_ input: DeviceTensor, indices given: DeviceTensor?) throws -> (
        output: DeviceTensor, indices: DeviceTensor
    ) {
        let output = try DeviceTensor(shape: outputShape(for: input).dimensions, on: input.device)
        let indices = try given ?? DeviceTensor(shape: [input.shape.first ?? 1], on: input.device)
        try forward(input, into: output, indices: indices, given: given != nil)
        return (output, indices)
    }

    /// Training forward: output, phase indices, and what backward needs (the input and the
    /// indices, under ``indicesName``).
    public func forwardTraining(_ input: DeviceTensor, indices given: DeviceTensor?) throws -> (
        output: DeviceTensor, indices: DeviceTensor, saved: SavedForBackward
    ) {
        let (output, indices) = try self(input, indices: given)
        return (output, indices, SavedForBackward(input: input, tensors: [Self.indicesName: indices]))
    }

    /// Gradient with respect to the input: each output gradient goes back to the element of the
    /// chosen phase it copies (then through the odd-size pad and the blur's adjoint). Uses the
    /// saved indices, or re-chooses from the saved input when there are none (the protocol's
    /// `forwardTraining(_:)` saves only the input).
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateBackward(gradOutput, saved, gradInput)
        let device = gradOutput.device
        let program = try self.program(device)
        let indices: DeviceTensor
        if let savedIndices = saved.tensors[Self.indicesName] {
            try checkIndices(savedIndices, inputShape, on: device)
            indices = savedIndices
        } else {
            indices = try DeviceTensor(shape: [inputShape.n], on: device)
            try choose(try blurred(saved.input, inputShape), inputShape, indices: indices, program: program)
        }
        let gradBlurred = configuration.blur == nil ? gradInput : try DeviceTensor(shape: gradInput.shape, on: device)
        try device.context.dispatch(
            "aps_scatter", in: program,
            arguments: [
                .buffer(gradOutput.buffer), .buffer(indices.buffer), .buffer(gradBlurred.buffer),
                .int(inputShape.n * inputShape.c), .int(inputShape.c), .int(inputShape.h), .int(inputShape.w),
                .int(outputShape.h), .int(outputShape.w),
            ],
            global: [(inputShape.w + 15) / 16, inputShape.h, inputShape.n * inputShape.c])
        if let blur = configuration.blur {
            try BlurPool2D(blur).backward(gradBlurred, SavedForBackward(input: saved.input), into: gradInput)
        }
    }

    // MARK: Internals

    private func program(_ device: Device) throws -> OpenCLProgram {
        let norm: Int
        switch configuration.norm {
        case .l2: norm = 0
        case .l1: norm = 1
        case .linf: norm = 2
        }
        return try device.program("polyphase.cl", defines: ["GROUP_SIZE": PolyphaseLaunch.choose(for: device).groupSize, "NORM": norm])
    }

    private func blurred(_ input: DeviceTensor, _ shape: Shape4D) throws -> DeviceTensor {
        guard let blur = configuration.blur else { return input }
        let output = try DeviceTensor(shape: shape.dimensions, on: input.device)
        try BlurPool2D(blur).forward(input, into: output)
        return output
    }

    private func choose(_ source: DeviceTensor, _ shape: Shape4D, indices: DeviceTensor, program: OpenCLProgram)
        throws
    {
        let group = PolyphaseLaunch.choose(for: source.device).groupSize
        try source.device.context.dispatch(
            "aps_choose", in: program,
            arguments: [.buffer(source.buffer), .buffer(indices.buffer), .int(shape.c), .int(shape.h), .int(shape.w)],
            global: [shape.n * group], local: [group])
    }

    private func checkIndices(_ indices: DeviceTensor, _ shape: Shape4D, on device: Device) throws {
        guard indices.shape == [shape.n] else {
            throw NyquistError(
                .invalidShape,
                "\(APSPool2DConfiguration.operatorName): phase indices have shape \(indices.shape), expected [\(shape.n)] "
                    + "(one per sample)")
        }
        guard indices.device === device else {
            throw NyquistError(
                .invalidConfiguration, "\(APSPool2DConfiguration.operatorName): phase indices live on another device")
        }
    }
}

/// Launch parameters of the polyphase kernels (Kernels/polyphase.cl), chosen in one place so a
/// per-device tuner can replace the choice.
///
/// `groupSize` is the work-group size of every kernel that runs one work-group per sample or
/// plane (aps_choose, tips_forward, tips_grad_tau): a power of two. Candidates: 16, 32, 64,
/// 128, 256 (capped by the device's maximum work-group size). On PoCL's CPU device a work-group
/// runs as a loop over its items on one core, so the size mostly sets how finely a plane's rows
/// are shared out; on GPUs 64 to 256 suit. Measurements: docs/kernels.md.
struct PolyphaseLaunch: Equatable {
    /// Items per work-group of the per-sample and per-plane kernels.
    var groupSize: Int
    /// tips_forward batches planes smaller than this many elements into one work-group, so
    /// that launching a work-group (microseconds on PoCL) does not dominate small maps.
    /// Candidates 1024 ... 16384; 1 gives one plane per work-group.
    var elementsPerGroup = 4096
    /// TIPS backward (tips_backward_band) gives each work-group about this many x' elements:
    /// bands of whole rows (at least 3) of one plane, or whole small planes batched; 0 takes
    /// the unfused passes (dz written to memory), as do maps whose band does not fit in local
    /// memory.
    var backwardBandElements = 4096

    /// Planes per work-group of tips_forward for planes of `planeElements` elements.
    func planesPerGroup(planeElements: Int) -> Int {
        max(1, elementsPerGroup / max(planeElements, 1))
    }

    /// Choices that replace ``choose(for:)`` on one device each, keyed by the Device's
    /// identity (for a tuner, or a test of another candidate); absent: the built-in choice.
    /// Per device rather than process-wide, so that pinning a candidate never changes the
    /// choice of a call running meanwhile on another Device: a program built with one value
    /// and launched with another would compute garbage.
    static let override = Mutex<[ObjectIdentifier: PolyphaseLaunch]>([:])

    /// The choice for `device`: 64, or the largest power of two the device allows below it.
    static func choose(for device: Device) -> PolyphaseLaunch {
        if let chosen = override.withLock({ $0[ObjectIdentifier(device)] }) { return chosen }
        var size = 64
        while size > 1 && size > device.info.maxWorkGroupSize { size /= 2 }
        return PolyphaseLaunch(groupSize: size)
    }
}
