import NyquistCL
import NyquistCore
import Synchronization

/// What a TIPS forward produces: the output, psi and tau (SPEC.md section 5).
public struct TIPSOutputs {
    /// N x C x H'/2 x W'/2.
    public let output: DeviceTensor
    /// psi = ReLU(depthwise conv of x'), N x C x H' x W'.
    public let psi: DeviceTensor
    /// The mixing weights, N x C x 4 (softmax over p0..p3).
    public let tau: DeviceTensor
}

/// TIPSPool2D (Saha & Gokhale 2025, "Translation Invariant Polyphase Sampling"): a learned,
/// per-(sample, channel) soft mixture of the four polyphase components of a stride-2 sampling.
///
/// Odd sizes are reflect-padded by one row at the TOP / one column at the LEFT (x', H' x W',
/// even); reflecting needs a second row, so an input with 1 row or 1 column is rejected.
/// psi = ReLU(depthwise k x k correlation of x' with `conv1.weight` (C,1,k,k), zero padding
/// (k-1)/2, no bias); q = the mean of psi over each quadrant (top-left, top-right, bottom-left,
/// bottom-right); tau = softmax over the four q * `conv2.weight` (C,1,1,1);
/// output = sum_k tau_k p_k(x') with p0 = (0,0), p1 = (1,0), p2 = (0,1), p3 = (1,1).
///
/// The weights are kept on the host (this value stays `Sendable`) and uploaded to a device on
/// its first call there, then kept (10 C floats per device). Training forward can also build the
/// L_undo target T(x') from a shift drawn by a seeded ``ShiftGenerator``; backward then returns
/// the gradient of <output, gradOutput> + lambda_FM L_FM + lambda_undo L_undo with respect to the
/// input and both weights (T(x') is a constant), and ``losses(_:)`` gives the loss values.
public struct TIPSPool2D: PoolingLayer {
    /// The options (shared with `Reference.tipsPool2D`).
    public let configuration: TIPSPool2DConfiguration
    /// `conv1.weight` (C,1,k,k) and `conv2.weight` (C,1,1,1), by PyTorch name.
    public let parameters: [String: HostTensor]
    /// The weights' device copies, made on a device's first call and shared by copies of this
    /// value (the parameters never change).
    private let deviceWeights: TIPSDeviceWeights

    /// Names of the tensors training forward saves.
    public enum SavedName {
        /// psi (N,C,H',W').
        public static let psi = "psi"
        /// tau (N,C,4).
        public static let tau = "tau"
        /// Quadrant means q (N,C,4).
        public static let q = "q"
        /// The L_undo target T(x') (N,C,H',W'); absent without L_undo.
        public static let target = "target"
    }

    /// A layer with PyTorch's default initialisation of a standalone module (conv1 uniform in
    /// +-1/k, conv2 uniform in +-1) drawn from `seed`.
    public init(channels: Int, kernelSize: Int = 3, seed: UInt64 = 0) throws {
        let configuration = try TIPSPool2DConfiguration(channels: channels, kernelSize: kernelSize)
        self.configuration = configuration
        parameters = configuration.defaultParameters(seed: seed)
        deviceWeights = TIPSDeviceWeights(parameters)
    }

    /// A layer with given weights, e.g. `Safetensors.read(...)` of a PyTorch state_dict (extra
    /// entries are ignored); throws ``NyquistError/Kind/invalidParameters`` when a weight is
    /// missing or misshapen.
    public init(_ configuration: TIPSPool2DConfiguration, parameters: [String: HostTensor]) throws {
        try configuration.validate(parameters: parameters)
        self.configuration = configuration
        self.parameters = parameters.filter { configuration.parameterShapes[$0.key] != nil }
        deviceWeights = TIPSDeviceWeights(self.parameters)
    }

    /// Writes the output for `input` into `output` (psi and tau are computed but not returned;
    /// ``outputs(_:)`` returns them).
    public func forward(_ input: DeviceTensor, into output: DeviceTensor) throws {
        let (inputShape, _) = try validateForward(input, output)
        _ = try run(input, inputShape, output: output, keepPsi: false)
    }

    /// Inference forward with every result: output, psi and tau.
    public func outputs(_ input: DeviceTensor) throws -> TIPSOutputs {
        let inputShape = try input.nchw("\(TIPSPool2DConfiguration.operatorName) input")
        let output = try DeviceTensor(shape: configuration.outputShape(for: inputShape).dimensions, on: input.device)
        return try run(input, inputShape, output: output).outputs
    }

    /// Training forward: the results and what backward needs. With `undoShift` the L_undo target
    /// T(x') (x' shifted by it, wrapped or zero-filled) is built and saved.
    public func forwardTraining(_ input: DeviceTensor, undoShift: MapShift?) throws -> (
        outputs: TIPSOutputs, saved: SavedForBackward
    ) {
        let inputShape = try input.nchw("\(TIPSPool2DConfiguration.operatorName) input")
        let output = try DeviceTensor(shape: configuration.outputShape(for: inputShape).dimensions, on: input.device)
        let (outputs, q) = try run(input, inputShape, output: output)
        var tensors = [SavedName.psi: outputs.psi, SavedName.tau: outputs.tau, SavedName.q: q]
        if let undoShift { tensors[SavedName.target] = try target(input, inputShape, undoShift) }
        return (outputs, SavedForBackward(input: input, tensors: tensors))
    }

    /// The loss values of a training forward: L_FM = mean over (n, c) of (1 - ||tau||_2) and
    /// L_undo = mean((psi - T(x'))^2) (`nil` when no target was saved). Reads back one pair of
    /// per-plane partial sums and adds them in Double, in a fixed order.
    public func losses(_ saved: SavedForBackward) throws -> (fm: Double, undo: Double?) {
        let inputShape = try saved.input.nchw("\(TIPSPool2DConfiguration.operatorName) saved input")
        let device = saved.input.device
        let state: (psi: DeviceTensor, tau: DeviceTensor, q: DeviceTensor)
        if let savedState = try savedState(saved, inputShape) {
            state = savedState
        } else {
            let output = try DeviceTensor(shape: configuration.outputShape(for: inputShape).dimensions, on: device)
            let (outputs, q) = try run(saved.input, inputShape, output: output)
            state = (outputs.psi, outputs.tau, q)
        }
        let padded = try configuration.paddedShape(for: inputShape)
        let planes = inputShape.n * inputShape.c
        let partial = try DeviceTensor(shape: [planes, 2], on: device)
        let target = saved.tensors[SavedName.target]
        let key = PlanKey(configuration: configuration, pass: .losses(withTarget: target != nil), input: inputShape)
        try device.compiledPass(key) {
            try Self.lossesLaunches(configuration, input: inputShape, withTarget: target != nil, on: device)
        }.run(on: device, state.psi.buffer, state.tau.buffer, (target ?? state.psi).buffer, partial.buffer)
        let values = try partial.toHost().values
        var fm = 0.0
        var undo = 0.0
        for plane in 0..<planes {
            fm += Double(values[2 * plane])
            undo += Double(values[2 * plane + 1])
        }
        return (fm / Double(planes), target == nil ? nil : undo / Double(padded.count))
    }

    /// Gradients of <output, gradOutput> (no losses): input, `conv1.weight`, `conv2.weight`.
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward) throws -> Gradients {
        try backward(gradOutput, saved, lossWeights: .none)
    }

    /// Gradients of <output, gradOutput> + lossWeights.fm * L_FM + lossWeights.undo * L_undo
    /// with respect to the input and both weights (by PyTorch name). L_undo needs the target
    /// saved by ``forwardTraining(_:undoShift:)``.
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, lossWeights: TIPSLossWeights) throws
        -> Gradients
    {
        let gradInput = try DeviceTensor(shape: saved.input.shape, on: saved.input.device)
        let weights = try backward(gradOutput, saved, into: gradInput, lossWeights: lossWeights)
        return Gradients(input: gradInput, parameters: weights)
    }

    /// Writes the gradient of <output, gradOutput> with respect to the input into `gradInput`
    /// (no losses); the weight gradients are computed and dropped, use
    /// ``backward(_:_:lossWeights:)`` to get them.
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws {
        _ = try backward(gradOutput, saved, into: gradInput, lossWeights: .none)
    }

    // MARK: Internals

    /// Inference or training forward (psi allocated and written only when `keepPsi`: inference
    /// needs only its sums), one fused pass per plane.
    private func run(_ input: DeviceTensor, _ inputShape: Shape4D, output: DeviceTensor, keepPsi: Bool = true) throws
        -> (outputs: TIPSOutputs, q: DeviceTensor)
    {
        let device = input.device
        let weights = try deviceWeights.buffers(on: device)
        let tau = try DeviceTensor(shape: [inputShape.n, inputShape.c, 4], on: device)
        let q = try DeviceTensor(shape: [inputShape.n, inputShape.c, 4], on: device)
        let psi =
            keepPsi ? try DeviceTensor(shape: configuration.paddedShape(for: inputShape).dimensions, on: device) : output
        let key = PlanKey(configuration: configuration, pass: keepPsi ? .trainingForward : .forward, input: inputShape)
        try device.compiledPass(key) {
            // Buffers: 0 input, 1 conv1 weight, 2 conv2 weight, 3 output, 4 tau, 5 q, 6 psi
            // (training; inference does not bind it, and tips_forward does not write psi there).
            [
                try Self.forwardLaunch(
                    configuration, input: inputShape, keepPsi: keepPsi,
                    buffers: (
                        input: .bound(0), conv1: .bound(1), conv2: .bound(2), psi: keepPsi ? .bound(6) : .bound(3),
                        q: .bound(5), tau: .bound(4), output: .bound(3)
                    ), on: device)
            ]
        }.run(on: device, input.buffer, weights.conv1, weights.conv2, output.buffer, tau.buffer, q.buffer, psi.buffer)
        return (TIPSOutputs(output: output, psi: psi, tau: tau), q)
    }

    /// T(x') for `shift` into a new tensor of x''s shape.
    private func target(_ input: DeviceTensor, _ inputShape: Shape4D, _ shift: MapShift) throws -> DeviceTensor {
        let device = input.device
        let padded = try configuration.paddedShape(for: inputShape)
        let target = try DeviceTensor(shape: padded.dimensions, on: device)
        let shift = Self.normalised(shift, padded: padded)
        try device.compiledPass(PlanKey(configuration: configuration, pass: .target(shift), input: inputShape)) {
            try Self.targetLaunches(configuration, input: inputShape, shift: shift, on: device)
        }.run(on: device, input.buffer, target.buffer)
        return target
    }

    /// `shift` with the same target and its components within the padded size, so that the
    /// shifts of one training run share a few plans: wrapped shifts modulo the padded size,
    /// zero-filled ones clamped to it (a shift by the whole size or more leaves only zeros).
    static func normalised(_ shift: MapShift, padded: Shape4D) -> MapShift {
        switch shift.fill {
        case .circular:
            return MapShift(
                dy: (shift.dy % padded.h + padded.h) % padded.h, dx: (shift.dx % padded.w + padded.w) % padded.w,
                fill: .circular)
        case .zero:
            return MapShift(
                dy: min(max(shift.dy, -padded.h), padded.h), dx: min(max(shift.dx, -padded.w), padded.w), fill: .zero)
        }
    }

    /// psi, tau and q saved by a training forward (checked against the input), or nil when the
    /// saved values hold only the input.
    private func savedState(_ saved: SavedForBackward, _ inputShape: Shape4D) throws -> (
        psi: DeviceTensor, tau: DeviceTensor, q: DeviceTensor
    )? {
        guard let psi = saved.tensors[SavedName.psi], let tau = saved.tensors[SavedName.tau],
            let q = saved.tensors[SavedName.q]
        else { return nil }
        let padded = try configuration.paddedShape(for: inputShape)
        guard psi.shape == padded.dimensions, tau.shape == [inputShape.n, inputShape.c, 4], q.shape == tau.shape else {
            throw NyquistError(
                .invalidShape, "\(TIPSPool2DConfiguration.operatorName): saved psi/tau/q do not fit input \(inputShape)")
        }
        return (psi, tau, q)
    }

    private func backward(
        _ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor, lossWeights: TIPSLossWeights
    ) throws -> [String: DeviceTensor] {
        let (inputShape, outputShape) = try validateBackward(gradOutput, saved, gradInput)
        let target = saved.tensors[SavedName.target]
        if lossWeights.undo != 0 && target == nil {
            throw NyquistError(
                .invalidConfiguration,
                "\(TIPSPool2DConfiguration.operatorName) backward: L_undo has weight \(lossWeights.undo) but the "
                    + "training forward saved no target")
        }
        let device = gradOutput.device
        let padded = try configuration.paddedShape(for: inputShape)
        let (n, c, k) = (inputShape.n, inputShape.c, configuration.kernelSize)
        let state = try savedState(saved, inputShape)
        let variant = TIPSBackwardVariant(
            configuration: configuration, fmScale: Float(lossWeights.fm / Double(n * c)),
            undoScale: target == nil ? nil : Float(2 * lossWeights.undo / Double(padded.count)), recompute: state == nil)
        let plan = try device.compiledPass(PlanKey(configuration: variant, pass: .backward, input: inputShape)) {
            try Self.backwardLaunches(variant, input: inputShape, on: device)
        }
        let weights = try deviceWeights.buffers(on: device)
        let tau = try state?.tau ?? DeviceTensor(shape: [n, c, 4], on: device)
        let q = try state?.q ?? DeviceTensor(shape: [n, c, 4], on: device)
        let gradW1 = try DeviceTensor(shape: [c, 1, k, k], on: device)
        let gradW2 = try DeviceTensor(shape: [c, 1, 1, 1], on: device)
        let gradQ = try DeviceTensor(shape: [n, c, 4], on: device)
        let shares = try DeviceTensor(shape: [n, c], on: device)
        let rowTerms = try DeviceTensor(shape: [n * c * padded.h, k * k], on: device)
        // Buffers only some variants bind are allocated only for those (the plan decided which
        // path it takes when it was built); the others get a filler no launch reads.
        let filler = gradOutput
        let output = state == nil ? try DeviceTensor(shape: outputShape.dimensions, on: device) : filler
        let unfused = plan.launches.contains { $0.bufferCount > TIPSBackwardVariant.gradZBuffer }
        let psi = unfused ? try state?.psi ?? DeviceTensor(shape: padded.dimensions, on: device) : filler
        let gradZ = unfused ? try DeviceTensor(shape: padded.dimensions, on: device) : filler
        try plan.run(
            on: device, saved.input.buffer, gradOutput.buffer, weights.conv1, weights.conv2, gradInput.buffer,
            gradW1.buffer, gradW2.buffer, tau.buffer, q.buffer, (target ?? filler).buffer, gradQ.buffer, shares.buffer,
            rowTerms.buffer, output.buffer, psi.buffer, gradZ.buffer)
        return [TIPSPool2DConfiguration.conv1Name: gradW1, TIPSPool2DConfiguration.conv2Name: gradW2]
    }

    // MARK: Plans

    /// The program of every TIPS pass but the forward: GROUP_SIZE (which tips_grad_tau and the
    /// fused backward are compiled for) and the kernel size, and the target's fill.
    private static func program(
        _ configuration: TIPSPool2DConfiguration, _ launch: PolyphaseLaunch, fill: ShiftFill = .circular,
        on device: Device
    ) throws -> OpenCLProgram {
        try device.program(
            "tips.cl",
            defines: [
                "GROUP_SIZE": launch.groupSize, "KERNEL_SIZE": configuration.kernelSize,
                "SHIFT_FILL": fill == .circular ? 0 : 1,
            ])
    }

    /// tips_forward (Kernels/tips.cl) with its buffer arguments as the caller numbers them: one
    /// work-group per plane, or per batch of small planes.
    private static func forwardLaunch(
        _ configuration: TIPSPool2DConfiguration, input: Shape4D, keepPsi: Bool,
        buffers: (
            input: LaunchArgument, conv1: LaunchArgument, conv2: LaunchArgument, psi: LaunchArgument, q: LaunchArgument,
            tau: LaunchArgument, output: LaunchArgument
        ), on device: Device
    ) throws -> PreparedLaunch {
        let launch = PolyphaseLaunch.choose(for: device)
        let program = try device.program(
            "tips.cl",
            defines: [
                "GROUP_SIZE": launch.groupSize, "KERNEL_SIZE": configuration.kernelSize,
                "TIPS_WRITE_PSI": keepPsi ? 1 : 0,
            ])
        let padded = try configuration.paddedShape(for: input)
        let planes = input.n * input.c
        let perGroup = launch.planesPerGroup(planeElements: padded.h * padded.w)
        return try device.context.prepare(
            "tips_forward", in: program,
            arguments: [
                buffers.input, buffers.conv1, buffers.conv2, buffers.psi, buffers.q, buffers.tau, buffers.output,
                .int(planes), .int(input.c), .int(input.h), .int(input.w), .int(perGroup),
            ],
            global: [(planes + perGroup - 1) / perGroup * launch.groupSize], local: [launch.groupSize])
    }

    /// T(x') for a normalised `shift`. Buffers: 0 input, 1 target.
    private static func targetLaunches(
        _ configuration: TIPSPool2DConfiguration, input: Shape4D, shift: MapShift, on device: Device
    ) throws -> [PreparedLaunch] {
        let padded = try configuration.paddedShape(for: input)
        let program = try program(configuration, PolyphaseLaunch.choose(for: device), fill: shift.fill, on: device)
        return [
            try device.context.prepare(
                "tips_target", in: program,
                arguments: [
                    .bound(0), .bound(1), .int(input.n * input.c), .int(input.h), .int(input.w), .int(shift.dy),
                    .int(shift.dx),
                ],
                global: [padded.w, padded.h, input.n * input.c])
        ]
    }

    /// The per-plane loss sums. Buffers: 0 psi, 1 tau, 2 target (psi again without one, not
    /// read), 3 the partial sums.
    private static func lossesLaunches(
        _ configuration: TIPSPool2DConfiguration, input: Shape4D, withTarget: Bool, on device: Device
    ) throws -> [PreparedLaunch] {
        let padded = try configuration.paddedShape(for: input)
        let planes = input.n * input.c
        return [
            try device.context.prepare(
                "tips_losses", in: try program(configuration, PolyphaseLaunch.choose(for: device), on: device),
                arguments: [
                    .bound(0), .bound(1), .bound(2), .bound(3), .int(planes), .int(padded.h), .int(padded.w),
                    .int(withTarget ? 1 : 0),
                ],
                global: [planes])
        ]
    }

    /// The fused backward's bands: whole rows (at least 3, so the band holding x' row 2 also
    /// holds the reflected row 0) of one plane, or whole small planes batched, about
    /// `backwardBandElements` x' elements per work-group; nil (the unfused passes) when that is
    /// 0 or even 3 rows of dz do not fit in the device's local memory.
    private static func bandLaunch(
        _ configuration: TIPSPool2DConfiguration, _ launch: PolyphaseLaunch, padded: Shape4D, device: Device
    ) -> (rows: Int, planesPerGroup: Int, localBytes: Int)? {
        guard launch.backwardBandElements > 0 else { return nil }
        let halo = configuration.kernelSize - 1
        let stride = padded.w + halo
        let available = device.info.localMemorySize / 4 / stride - halo
        let planeElements = padded.h * padded.w
        var rows: Int
        var perGroup = 1
        if planeElements <= launch.backwardBandElements {
            rows = padded.h
            perGroup = launch.backwardBandElements / planeElements
        } else {
            rows = min(padded.h, max(3, launch.backwardBandElements / padded.w))
        }
        rows = min(rows, max(available, min(3, padded.h)))
        if rows < padded.h { perGroup = 1 }
        guard rows >= min(3, padded.h), rows <= available else { return nil }
        return (rows, perGroup, (rows + halo) * stride * 4)
    }

    /// The backward's launches: the forward again when nothing but the input was saved, dtau
    /// and dq, then either the fused band pass (dz, d conv1 row terms and dx; psi recomputed
    /// from the input) or the unfused passes (dz in memory), then the weight gradients summed
    /// in a fixed order. Buffers: 0 input, 1 gradOutput, 2 conv1 weight, 3 conv2 weight,
    /// 4 gradInput, 5 d conv1, 6 d conv2, 7 tau, 8 q (saved, or written by the forward),
    /// 9 target (a filler without one), 10 dq, 11 the planes' d conv2 shares, 12 d conv1 row
    /// terms (temporaries), 13 the forward's output (a temporary; only when recomputing),
    /// 14 psi (saved or recomputed) and 15 dz (a temporary): the unfused passes only, and the
    /// highest numbers, so that the caller sees from the plan whether to allocate them.
    private static func backwardLaunches(_ variant: TIPSBackwardVariant, input: Shape4D, on device: Device) throws
        -> [PreparedLaunch]
    {
        let configuration = variant.configuration
        let context = device.context
        let padded = try configuration.paddedShape(for: input)
        let (n, c, k) = (input.n, input.c, configuration.kernelSize)
        let planes = n * c
        let launch = PolyphaseLaunch.choose(for: device)
        let band = bandLaunch(configuration, launch, padded: padded, device: device)
        let program = try program(configuration, launch, on: device)
        var launches: [PreparedLaunch] = []
        if variant.recompute {
            // psi is needed in memory only by the unfused passes; otherwise its argument is the
            // output's buffer, which tips_forward then does not write.
            launches.append(
                try forwardLaunch(
                    configuration, input: input, keepPsi: band == nil,
                    buffers: (
                        input: .bound(0), conv1: .bound(2), conv2: .bound(3),
                        psi: band == nil ? .bound(14) : .bound(13), q: .bound(8), tau: .bound(7), output: .bound(13)
                    ), on: device))
        }
        launches.append(
            try context.prepare(
                "tips_grad_tau", in: program,
                arguments: [
                    .bound(0), .bound(1), .bound(8), .bound(7), .bound(3), .bound(10), .bound(11), .int(c),
                    .int(input.h), .int(input.w), .float(variant.fmScale),
                ],
                global: [planes * launch.groupSize], local: [launch.groupSize]))
        let undoScale = variant.undoScale ?? 0
        let hasTarget = variant.undoScale != nil
        // The d conv1 row terms summed over n, then rows, and d conv2 from the planes' shares.
        let weightSums = try context.prepare(
            "tips_grad_weights_sum", in: program,
            arguments: [.bound(12), .bound(11), .bound(5), .bound(6), .int(n), .int(c), .int(padded.h)],
            global: [c * k * k])
        if let band {
            // dz, d conv1 row terms and dx in one pass over bands of rows (psi recomputed from the
            // input); the row terms are per x' row, not per band, so the band size cannot change
            // d conv1's bits.
            let bands = (padded.h + band.rows - 1) / band.rows
            let groups = (planes + band.planesPerGroup - 1) / band.planesPerGroup * bands
            launches.append(
                try context.prepare(
                    "tips_backward_band", in: program,
                    arguments: [
                        .bound(0), .bound(1), .bound(7), .bound(10), .bound(9), .bound(2), .bound(4), .bound(12),
                        .int(planes), .int(c), .int(input.h), .int(input.w), .int(band.rows), .int(band.planesPerGroup),
                        .int(hasTarget ? 1 : 0), .float(undoScale), .local(band.localBytes),
                    ],
                    global: [groups * launch.groupSize], local: [launch.groupSize]))
            return launches + [weightSums]
        }
        // Without a target tips_grad_z reads psi in its place, whose difference with itself the
        // zero undo scale multiplies (as before the fused pass existed).
        launches.append(
            try context.prepare(
                "tips_grad_z", in: program,
                arguments: [
                    .bound(14), .bound(10), hasTarget ? .bound(9) : .bound(14), .bound(15), .int(planes),
                    .int(padded.h), .int(padded.w), .float(undoScale),
                ],
                global: [padded.w, padded.h, planes]))
        // The same row terms and sums as the fused path (tips_grad_w1_rows shares its body).
        launches.append(
            try context.prepare(
                "tips_grad_w1_rows", in: program,
                arguments: [.bound(0), .bound(15), .bound(12), .int(planes), .int(input.h), .int(input.w)],
                global: [k * k, padded.h, planes]))
        launches.append(weightSums)
        launches.append(
            try context.prepare(
                "tips_grad_input", in: program,
                arguments: [
                    .bound(1), .bound(7), .bound(15), .bound(2), .bound(4), .int(planes), .int(c), .int(input.h),
                    .int(input.w),
                ],
                global: [(padded.w + 7) / 8, input.h, planes]))
        return launches
    }
}

/// What a TIPSPool2D backward plan bakes in besides the input shape: the loss scales of
/// tips_grad_tau and the L_undo term (nil without a target; compared by bit pattern, as the
/// kernels see them) and whether it recomputes the forward's psi, tau and q.
private struct TIPSBackwardVariant: Hashable, Sendable {
    let configuration: TIPSPool2DConfiguration
    let fmScaleBits: UInt32
    let undoScaleBits: UInt32?
    let recompute: Bool

    /// dz's buffer number: the highest any backward launch binds, and bound by the unfused
    /// passes only.
    static let gradZBuffer = 15

    init(configuration: TIPSPool2DConfiguration, fmScale: Float, undoScale: Float?, recompute: Bool) {
        self.configuration = configuration
        fmScaleBits = fmScale.bitPattern
        undoScaleBits = undoScale?.bitPattern
        self.recompute = recompute
    }

    var fmScale: Float { Float(bitPattern: fmScaleBits) }
    var undoScale: Float? { undoScaleBits.map(Float.init(bitPattern:)) }
}

/// A TIPSPool2D's weights on the devices it ran on: uploaded on a device's first call and kept,
/// so that a call binds them instead of uploading them. An entry holds its device weakly (the
/// cache must not keep a device alive) and is dropped once the device is gone.
final class TIPSDeviceWeights: Sendable {
    private let conv1: [Float]?
    private let conv2: [Float]?
    private let uploads = Mutex<[Upload]>([])

    private struct Upload: Sendable {
        weak var device: Device?
        let conv1: OpenCLBuffer
        let conv2: OpenCLBuffer
    }

    init(_ parameters: [String: HostTensor]) {
        conv1 = parameters[TIPSPool2DConfiguration.conv1Name]?.values
        conv2 = parameters[TIPSPool2DConfiguration.conv2Name]?.values
    }

    /// The weights on `device`, uploaded on the first request.
    func buffers(on device: Device) throws -> (conv1: OpenCLBuffer, conv2: OpenCLBuffer) {
        try uploads.withLock { uploads in
            if let found = uploads.first(where: { $0.device === device }) { return (found.conv1, found.conv2) }
            let upload = Upload(
                device: device, conv1: try Self.upload(conv1, TIPSPool2DConfiguration.conv1Name, device),
                conv2: try Self.upload(conv2, TIPSPool2DConfiguration.conv2Name, device))
            uploads.removeAll { $0.device == nil }
            uploads.append(upload)
            return (upload.conv1, upload.conv2)
        }
    }

    private static func upload(_ values: [Float]?, _ name: String, _ device: Device) throws -> OpenCLBuffer {
        guard let values, !values.isEmpty else {
            throw NyquistError(
                .invalidParameters, "\(TIPSPool2DConfiguration.operatorName): parameter \(name) is missing")
        }
        let buffer = try device.context.makeBuffer(byteCount: values.count * 4)
        try device.context.write(values, to: buffer)
        return buffer
    }
}
