import NyquistCL
import NyquistCore

// TIPSPool2D's launches (their buffer numbering is part of each builder's contract), the
// variant a backward plan is keyed by, and the per-device copies of its weights.

extension TIPSPool2D {

    /// The program of every TIPS pass but the forward: GROUP_SIZE (which tips_grad_tau and the
    /// fused backward are compiled for) and the kernel size, the target's fill, and whether the
    /// backward adds external gradients of psi and tau (compiled out otherwise, so a plain
    /// backward loads nothing for them).
    static func program(
        _ configuration: TIPSPool2DConfiguration, _ launch: TIPSKnobs, fill: ShiftFill = .circular,
        gradPsi: Bool = false, gradTau: Bool = false, on device: Device
    ) throws -> OpenCLProgram {
        try device.program(
            "tips.cl",
            defines: [
                "GROUP_SIZE": launch.groupSize, "KERNEL_SIZE": configuration.kernelSize,
                "SHIFT_FILL": fill == .circular ? 0 : 1, "TIPS_GRAD_PSI": gradPsi ? 1 : 0,
                "TIPS_GRAD_TAU": gradTau ? 1 : 0,
            ])
    }

    /// tips_forward (Kernels/tips.cl) with its buffer arguments as the caller numbers them: one
    /// work-group per plane, or per batch of small planes.
    static func forwardLaunch(
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
    static func targetLaunches(
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
    static func lossesLaunches(
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
    static func bandLaunch(
        _ configuration: TIPSPool2DConfiguration, _ launch: TIPSKnobs, padded: Shape4D, device: Device
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
    /// 14 the external gradient of psi and 15 of tau (read only by the variants that have them;
    /// a filler otherwise), 16 psi (saved or recomputed) and 17 dz (a temporary): the unfused
    /// passes only, and the highest numbers, so that the caller sees from the plan whether to
    /// allocate them.
    /// Scalars (per call): 0 lambda_FM, 1 lambda_undo; the launches scale them by the counts
    /// the losses average over.
    static func backwardLaunches(_ variant: TIPSBackwardVariant, input: Shape4D, on device: Device) throws
        -> [PreparedLaunch]
    {
        let configuration = variant.configuration
        let context = device.context
        let padded = try configuration.paddedShape(for: input)
        let (n, c, k) = (input.n, input.c, configuration.kernelSize)
        let planes = n * c
        let launch = PolyphaseLaunch.choose(for: device)
        let band = bandLaunch(configuration, launch, padded: padded, device: device)
        let program = try program(
            configuration, launch, gradPsi: variant.withGradPsi, gradTau: variant.withGradTau, on: device)
        var launches: [PreparedLaunch] = []
        if variant.recompute {
            // psi is needed in memory only by the unfused passes; otherwise its argument is the
            // output's buffer, which tips_forward then does not write.
            launches.append(
                try forwardLaunch(
                    configuration, input: input, keepPsi: band == nil,
                    buffers: (
                        input: .bound(0), conv1: .bound(2), conv2: .bound(3),
                        psi: band == nil ? .bound(16) : .bound(13), q: .bound(8), tau: .bound(7), output: .bound(13)
                    ), on: device))
        }
        launches.append(
            try context.prepare(
                "tips_grad_tau", in: program,
                arguments: [
                    .bound(0), .bound(1), .bound(8), .bound(7), .bound(15), .bound(3), .bound(10), .bound(11), .int(c),
                    .int(input.h), .int(input.w), .scaled(0, factor: 1 / Double(planes)),
                ],
                global: [planes * launch.groupSize], local: [launch.groupSize]))
        // d L_undo / d psi = 2 (psi - T) / |x'|; without a target the term is multiplied by 0.
        let hasTarget = variant.withTarget
        let undoScale = LaunchArgument.scaled(1, factor: hasTarget ? 2 / Double(padded.count) : 0)
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
                        .bound(0), .bound(1), .bound(7), .bound(10), .bound(9), .bound(14), .bound(2), .bound(4),
                        .bound(12),
                        .int(planes), .int(c), .int(input.h), .int(input.w), .int(band.rows), .int(band.planesPerGroup),
                        .int(hasTarget ? 1 : 0), undoScale, .local(band.localBytes),
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
                    .bound(16), .bound(10), hasTarget ? .bound(9) : .bound(16), .bound(14), .bound(17), .int(planes),
                    .int(padded.h), .int(padded.w), undoScale,
                ],
                global: [padded.w, padded.h, planes]))
        // The same row terms and sums as the fused path (tips_grad_w1_rows shares its body).
        launches.append(
            try context.prepare(
                "tips_grad_w1_rows", in: program,
                arguments: [.bound(0), .bound(17), .bound(12), .int(planes), .int(input.h), .int(input.w)],
                global: [k * k, padded.h, planes]))
        launches.append(weightSums)
        launches.append(
            try context.prepare(
                "tips_grad_input", in: program,
                arguments: [
                    .bound(1), .bound(7), .bound(17), .bound(2), .bound(4), .int(planes), .int(c), .int(input.h),
                    .int(input.w),
                ],
                global: [(padded.w + 7) / 8, input.h, planes]))
        return launches
    }
}

/// What a TIPSPool2D backward plan bakes in besides the input shape: whether there is an
/// L_undo target, whether it recomputes the forward's psi, tau and q, and which external
/// gradients (of psi, of tau) it adds (compiled in, so they are part of the plan's key; the loss
/// weights are per-call scalars, so a schedule of weights reuses one plan).
struct TIPSBackwardVariant: Hashable, Sendable {
    let configuration: TIPSPool2DConfiguration
    let withTarget: Bool
    let recompute: Bool
    var withGradPsi = false
    var withGradTau = false

    /// dz's buffer number: the highest any backward launch binds, and bound by the unfused
    /// passes only.
    static let gradZBuffer = 17
}
