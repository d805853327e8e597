import NyquistCL
import NyquistCore

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
        let device = input.device
        try checkIndices(indices, inputShape, on: device)
        let blurred = try blurTemporary(for: input, inputShape)
        if given {
            // Buffer 3 (the partial norms) is not bound without a choice: any buffer fills it.
            let key = PlanKey(configuration: configuration, pass: .forwardFromIndices, input: inputShape)
            try device.compiledPass(key) {
                try Self.forwardLaunches(
                    configuration, input: inputShape, output: outputShape, choosing: false, on: device)
            }.run(on: device, input.buffer, blurred.buffer, indices.buffer, indices.buffer, output.buffer)
        } else {
            let partialNorms = try partialNormsTemporary(inputShape, on: device)
            try device.compiledPass(PlanKey(configuration: configuration, pass: .forward, input: inputShape)) {
                try Self.forwardLaunches(
                    configuration, input: inputShape, output: outputShape, choosing: true, on: device)
            }.run(on: device, input.buffer, blurred.buffer, indices.buffer, partialNorms.buffer, output.buffer)
        }
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
        let (inputShape, _) = try validateBackward(gradOutput, saved, gradInput)
        let device = gradOutput.device
        let indices: DeviceTensor
        if let savedIndices = saved.tensors[Self.indicesName] {
            try checkIndices(savedIndices, inputShape, on: device)
            indices = savedIndices
        } else {
            indices = try DeviceTensor(shape: [inputShape.n], on: device)
            let blurred = try blurTemporary(for: saved.input, inputShape)
            let partialNorms = try partialNormsTemporary(inputShape, on: device)
            try device.compiledPass(PlanKey(configuration: configuration, pass: .chooseIndices, input: inputShape)) {
                try Self.chooseLaunches(configuration, input: inputShape, on: device)
            }.run(on: device, saved.input.buffer, blurred.buffer, indices.buffer, partialNorms.buffer)
        }
        // Without a blur the scatter writes gradInput itself (buffer 1) and buffer 0 is unused.
        let gradBlurred =
            configuration.filterSize > 1 ? try DeviceTensor(shape: gradInput.shape, on: device) : gradInput
        try device.compiledPass(PlanKey(configuration: configuration, pass: .backwardFromIndices, input: inputShape)) {
            try Self.backwardLaunches(configuration, input: inputShape, on: device)
        }.run(on: device, gradBlurred.buffer, gradInput.buffer, indices.buffer, gradOutput.buffer)
    }

    // MARK: Plans

    /// The forward launches: the blur (when configured), the phase choice (when `choosing`),
    /// then the gather. Buffers (shared with ``chooseLaunches(_:input:on:)``): 0 input, 1 the
    /// blurred input (a temporary; without a blur the input again, and unbound), 2 indices,
    /// 3 partial norms (a temporary of ``partialNormsTemporary(_:on:)``; bound only when
    /// choosing), 4 output.
    private static func forwardLaunches(
        _ configuration: APSPool2DConfiguration, input: Shape4D, output: Shape4D, choosing: Bool, on device: Device
    ) throws -> [PreparedLaunch] {
        let (launch, program) = try launchAndProgram(configuration, input: input, on: device)
        let source: LaunchArgument = configuration.blur == nil ? .bound(0) : .bound(1)
        let global = [(output.w + 7) / 8, output.h, input.n * input.c]
        let gather = try device.context.prepare(
            "aps_gather", in: program,
            arguments: [
                source, .bound(2), .bound(4), .int(input.n * input.c), .int(input.c), .int(input.h), .int(input.w),
                .int(output.h), .int(output.w),
            ],
            global: global, local: LaunchParameters(localSize: launch.localSize).local(for: global))
        let before = try choosing
            ? chooseLaunches(configuration, input: input, on: device) : blurLaunches(configuration, input, device)
        return before + [gather]
    }

    /// The blur (when configured), then each sample's phase in two launches: partial norms
    /// from `chunks` work-groups per sample, then one item per sample joins them in chunk order
    /// and takes the argmax. One work-group per sample would leave all but N of a GPU's compute
    /// units idle. Buffers: 0 input, 1 the blurred input, 2 indices, 3 partial norms.
    private static func chooseLaunches(_ configuration: APSPool2DConfiguration, input: Shape4D, on device: Device)
        throws -> [PreparedLaunch]
    {
        let (launch, program) = try launchAndProgram(configuration, input: input, on: device)
        let source: LaunchArgument = configuration.blur == nil ? .bound(0) : .bound(1)
        let group = launch.groupSize
        let chunks = chunksPerSample(input, groupSize: group, computeUnits: device.info.computeUnits)
        let norms = try device.context.prepare(
            "aps_partial_norms", in: program,
            arguments: [source, .bound(3), .int(input.c), .int(input.h), .int(input.w)],
            global: [chunks * group, input.n], local: [group, 1])
        let pick = try device.context.prepare(
            "aps_pick", in: program, arguments: [.bound(3), .bound(2), .int(input.n), .int(chunks)], global: [input.n])
        return try blurLaunches(configuration, input, device) + [norms, pick]
    }

    /// The backward launches: the gather's adjoint, then the blur's adjoint (when configured).
    /// Buffers: 0 the blurred input's gradient (a temporary; without a blur unbound),
    /// 1 gradInput, 2 indices, 3 gradOutput.
    private static func backwardLaunches(_ configuration: APSPool2DConfiguration, input: Shape4D, on device: Device)
        throws -> [PreparedLaunch]
    {
        let (launch, program) = try launchAndProgram(configuration, input: input, on: device)
        let output = try configuration.outputShape(for: input)
        let global = [(input.w + 15) / 16, input.h, input.n * input.c]
        let scatter = try device.context.prepare(
            "aps_scatter", in: program,
            arguments: [
                .bound(3), .bound(2), configuration.blur == nil ? .bound(1) : .bound(0), .int(input.n * input.c),
                .int(input.c), .int(input.h), .int(input.w), .int(output.h), .int(output.w),
            ],
            global: global, local: LaunchParameters(localSize: launch.localSize).local(for: global))
        guard let blur = configuration.blur else { return [scatter] }
        // The window's adjoint reads buffer 0 and writes buffer 1, as numbered here.
        let window = try BlurPool2D.window(
            blur, mapHeight: input.h, mapWidth: input.w, output: try blur.outputShape(for: input))
        return [scatter] + (try window.backwardLaunches(on: device, planes: input.n * input.c))
    }

    /// The blur's launches from buffer 0 into buffer 1 (none without a blur). The blur is
    /// stride 1 with circular padding: its output has the input's shape.
    private static func blurLaunches(_ configuration: APSPool2DConfiguration, _ input: Shape4D, _ device: Device)
        throws -> [PreparedLaunch]
    {
        guard let blur = configuration.blur else { return [] }
        let window = try BlurPool2D.window(
            blur, mapHeight: input.h, mapWidth: input.w, output: try blur.outputShape(for: input))
        return try window.forwardLaunches(
            on: device, planes: input.n * input.c, inputHeight: input.h, inputWidth: input.w, maxMap: false)
    }

    /// The launch parameters for `input` and the program they select.
    private static func launchAndProgram(_ configuration: APSPool2DConfiguration, input: Shape4D, on device: Device)
        throws -> (PolyphaseLaunch, OpenCLProgram)
    {
        let launch = PolyphaseLaunch.chooseAPS(for: device, height: input.h + input.h % 2)
        let norm: Int
        switch configuration.norm {
        case .l2: norm = 0
        case .l1: norm = 1
        case .linf: norm = 2
        }
        return (launch, try device.program("aps.cl", defines: ["GROUP_SIZE": launch.groupSize, "NORM": norm]))
    }

    // MARK: Temporaries

    /// A temporary for the blurred input; without a blur no launch binds it and the input
    /// itself fills its place.
    private func blurTemporary(for input: DeviceTensor, _ shape: Shape4D) throws -> DeviceTensor {
        configuration.filterSize > 1 ? try DeviceTensor(shape: shape.dimensions, on: input.device) : input
    }

    /// Room for the partial norms of every chunk count the plan may pick: the chunk count
    /// follows the group size, a launch parameter the plan reads when it is built, and is
    /// largest with groups of one item.
    private func partialNormsTemporary(_ shape: Shape4D, on device: Device) throws -> DeviceTensor {
        let chunks = Self.chunksPerSample(shape, groupSize: 1, computeUnits: device.info.computeUnits)
        return try DeviceTensor(shape: [shape.n * chunks * 4], on: device)
    }

    /// Work-groups per sample for the norm pass: about four per compute unit over the whole
    /// batch, and never more than the sample has rows for (each work-group item takes whole
    /// padded rows). A power of two no larger than the sample's reduction lanes
    /// (``reductionLanes(rows:)``): each work-group then owns whole branches of the lanes' fixed
    /// tree, so the count (which follows the group size and the device) never changes the norms.
    static func chunksPerSample(_ shape: Shape4D, groupSize: Int, computeUnits: Int) -> Int {
        let rows = shape.c * (shape.h + (shape.h & 1))
        let useful = max(1, (rows + groupSize - 1) / groupSize)
        let wanted = max(1, (4 * max(computeUnits, 1) + shape.n - 1) / max(shape.n, 1))
        var chunks = 1
        while chunks * 2 <= min(useful, wanted, reductionLanes(rows: rows)) { chunks *= 2 }
        return chunks
    }

    /// The lanes of a per-sample sum over `rows` padded rows: reduce_lanes of Kernels/reduce_lanes.h
    /// (the power of two at or above `rows`, at most 256).
    static func reductionLanes(rows: Int) -> Int {
        var lanes = 1
        while lanes < rows && lanes < 256 { lanes *= 2 }
        return lanes
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

/// Launch parameters of the polyphase kernels (Kernels/aps.cl, Kernels/tips.cl), read through
/// ``Device/launchParameters(family:shapeClass:builtIn:accepts:)`` so a tuned database entry,
/// the built-in default and a test's override all take one path.
///
/// Two families:
/// * `aps` (APSPool2D): `groupSize` of aps_partial_norms (several work-groups per sample) and the work-group
///   shape of aps_gather / aps_scatter. Shape classes by the padded height, which sets how many
///   rows each aps_partial_norms item sums: "large" (>= 32 rows), "small".
/// * `tips-forward` (TIPSPool2D): `groupSize` of tips_forward (also compiled into the TIPS
///   backward kernels, tips_grad_tau and tips_backward_band) and `elementsPerGroup`, and
///   `bandElements` of the fused backward (not a tuner candidate: the tuner times the forward;
///   an override or database entry may set it). One shape class, "all": plane batching already
///   adapts to the plane size.
///
/// `groupSize` is a power of two (candidates 16 ... 256, capped by the device's maximum
/// work-group size). On PoCL's CPU device a work-group runs as a loop over its items on one
/// core, so the size mostly sets how finely a plane's rows are shared out. Measurements:
/// docs/kernels.md, docs/performance.md.
struct PolyphaseLaunch: Equatable {
    /// Items per work-group of the per-sample and per-plane kernels.
    var groupSize: Int
    /// tips_forward batches planes smaller than this many elements into one work-group, so
    /// that launching a work-group (microseconds on PoCL) does not dominate small maps.
    /// Candidates 1024 ... 16384; 1 gives one plane per work-group.
    var elementsPerGroup = 4096
    /// Work-group shape of aps_gather and aps_scatter (nil: the dispatch default, the driver's
    /// choice on a GPU and `OpenCLContext.canonicalLocalSize(for:)` elsewhere).
    var localSize: [Int]? = nil
    /// TIPS backward (tips_backward_band) gives each work-group about this many x' elements:
    /// bands of whole rows (at least 3) of one plane, or whole small planes batched; 0 takes
    /// the unfused passes (dz written to memory), as do maps whose band does not fit in local
    /// memory.
    var backwardBandElements = 4096

    /// Planes per work-group of tips_forward for planes of `planeElements` elements.
    func planesPerGroup(planeElements: Int) -> Int {
        max(1, elementsPerGroup / max(planeElements, 1))
    }

    /// The tuner and database name of the APSPool2D family.
    static let apsFamily = "aps"
    /// The tuner and database name of the TIPSPool2D forward family.
    static let tipsFamily = "tips-forward"
    /// The one shape class of ``tipsFamily``.
    static let tipsShapeClass = "all"

    /// The APS shape class of a map whose padded height is `height` rows.
    static func apsShapeClass(height: Int) -> String { height >= 32 ? "large" : "small" }

    /// The largest power of two up to `size` that `device` allows in one work-group.
    static func cappedGroupSize(_ size: Int, on device: Device) -> Int {
        var capped = size
        while capped > 1 && capped > device.info.maxWorkGroupSize { capped /= 2 }
        return capped
    }

    /// Built-in defaults. CPU devices (PoCL): groups of 64, tips_forward batching planes up to
    /// 4096 elements, the driver's gather/scatter groups (measured: docs/kernels.md). GPUs
    /// (unmeasured): groups of 256 and one plane per tips_forward group, since launching a
    /// work-group is cheap there and wider reductions fill the compute units.
    static func builtIn(family: String, on device: Device) -> LaunchParameters {
        let isGPU = device.info.isGPU
        let group = cappedGroupSize(isGPU ? 256 : 64, on: device)
        if family == tipsFamily { return LaunchParameters(groupSize: group, elementsPerGroup: isGPU ? 1 : 4096) }
        return LaunchParameters(groupSize: group)
    }

    /// Whether `parameters` set this family's knobs within what `device` allows.
    static func accepts(_ parameters: LaunchParameters, family: String, on device: Device) -> Bool {
        guard let group = parameters.groupSize, group <= device.info.maxWorkGroupSize else { return false }
        if family == tipsFamily { return parameters.elementsPerGroup != nil }
        return (parameters.localSize?.reduce(1, *) ?? 1) <= device.info.maxWorkGroupSize
    }

    /// Every candidate of `family` (the tuner times them, the parity tests run them all).
    static func candidates(family: String) -> [LaunchParameters] {
        if family == tipsFamily {
            return [16, 64, 128, 256].flatMap { group in
                [1, 1024, 4096, 16384].map { LaunchParameters(groupSize: group, elementsPerGroup: $0) }
            }
        }
        return [16, 32, 64, 128, 256].flatMap { group in
            [nil, [64, 1, 1], [16, 4, 1], [8, 8, 1]].map { LaunchParameters(localSize: $0, groupSize: group) }
        }
    }

    private static func choose(family: String, shapeClass: String, on device: Device) -> PolyphaseLaunch {
        let parameters = device.launchParameters(
            family: family, shapeClass: shapeClass, builtIn: builtIn(family: family, on: device),
            accepts: { accepts($0, family: family, on: device) })
        // accepts() guarantees the group size; the fallbacks only keep the types honest.
        return PolyphaseLaunch(
            groupSize: parameters.groupSize ?? cappedGroupSize(64, on: device),
            elementsPerGroup: parameters.elementsPerGroup ?? 4096, localSize: parameters.localSize,
            backwardBandElements: parameters.bandElements ?? 4096)
    }

    /// The TIPSPool2D choice for `device` (forward and backward share its program).
    static func choose(for device: Device) -> PolyphaseLaunch {
        choose(family: tipsFamily, shapeClass: tipsShapeClass, on: device)
    }

    /// The APSPool2D choice for `device` and a map whose padded height is `height` rows.
    static func chooseAPS(for device: Device, height: Int) -> PolyphaseLaunch {
        choose(family: apsFamily, shapeClass: apsShapeClass(height: height), on: device)
    }
}
