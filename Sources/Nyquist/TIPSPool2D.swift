import NyquistCL
import NyquistCore

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
/// The weights are kept on the host (this value stays `Sendable`) and uploaded per call
/// (10 C floats). Training forward can also build the L_undo target T(x') from a shift drawn
/// by a seeded ``ShiftGenerator``; backward then returns the gradient of
/// <output, gradOutput> + lambda_FM L_FM + lambda_undo L_undo with respect to the input and both
/// weights (T(x') is a constant), and ``losses(_:)`` gives the loss values.
public struct TIPSPool2D: PoolingLayer {
    /// The options (shared with `Reference.tipsPool2D`).
    public let configuration: TIPSPool2DConfiguration
    /// `conv1.weight` (C,1,k,k) and `conv2.weight` (C,1,1,1), by PyTorch name.
    public let parameters: [String: HostTensor]

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
    }

    /// A layer with given weights, e.g. `Safetensors.read(...)` of a PyTorch state_dict (extra
    /// entries are ignored); throws ``NyquistError/Kind/invalidParameters`` when a weight is
    /// missing or misshapen.
    public init(_ configuration: TIPSPool2DConfiguration, parameters: [String: HostTensor]) throws {
        try configuration.validate(parameters: parameters)
        self.configuration = configuration
        self.parameters = parameters.filter { configuration.parameterShapes[$0.key] != nil }
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
        let state = try savedState(saved, inputShape, needPsi: true)
        guard let psi = state.psi else {
            throw NyquistError(.invalidConfiguration, "\(TIPSPool2DConfiguration.operatorName): psi is missing")
        }
        let padded = try configuration.paddedShape(for: inputShape)
        let planes = inputShape.n * inputShape.c
        let device = saved.input.device
        let partial = try DeviceTensor(shape: [planes, 2], on: device)
        let target = saved.tensors[SavedName.target]
        try device.context.dispatch(
            "tips_losses", in: try program(device),
            arguments: [
                .buffer(psi.buffer), .buffer(state.tau.buffer), .buffer((target ?? psi).buffer),
                .buffer(partial.buffer), .int(planes), .int(padded.h), .int(padded.w), .int(target == nil ? 0 : 1),
            ],
            global: [planes])
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

    private struct State {
        /// nil when backward recomputes psi from the input (tips_backward_band) and none was saved.
        let psi: DeviceTensor?
        let tau: DeviceTensor
        let q: DeviceTensor
    }

    private func program(_ device: Device, fill: ShiftFill = .circular) throws -> OpenCLProgram {
        try device.program(
            "tips.cl",
            defines: [
                "GROUP_SIZE": PolyphaseLaunch.choose(for: device).groupSize, "KERNEL_SIZE": configuration.kernelSize,
                "SHIFT_FILL": fill == .circular ? 0 : 1,
            ])
    }

    private func upload(_ name: String, _ device: Device) throws -> DeviceTensor {
        guard let host = parameters[name] else {
            throw NyquistError(.invalidParameters, "\(TIPSPool2DConfiguration.operatorName): parameter \(name) is missing")
        }
        return try DeviceTensor(host, on: device)
    }

    /// One fused pass per plane (Kernels/tips.cl, tips_forward); psi is allocated and
    /// written only when `keepPsi` (training, ``outputs(_:)``): inference needs only its sums.
    private func run(_ input: DeviceTensor, _ inputShape: Shape4D, output: DeviceTensor, keepPsi: Bool = true) throws
        -> (outputs: TIPSOutputs, q: DeviceTensor)
    {
        let device = input.device
        let launch = PolyphaseLaunch.choose(for: device)
        let program = try device.program(
            "tips.cl",
            defines: [
                "GROUP_SIZE": launch.groupSize, "KERNEL_SIZE": configuration.kernelSize, "TIPS_WRITE_PSI": keepPsi ? 1 : 0,
            ])
        let padded = try configuration.paddedShape(for: inputShape)
        let planes = inputShape.n * inputShape.c
        let perGroup = launch.planesPerGroup(planeElements: padded.h * padded.w)
        let psi = keepPsi ? try DeviceTensor(shape: padded.dimensions, on: device) : output
        let tau = try DeviceTensor(shape: [inputShape.n, inputShape.c, 4], on: device)
        let q = try DeviceTensor(shape: [inputShape.n, inputShape.c, 4], on: device)
        let w1 = try upload(TIPSPool2DConfiguration.conv1Name, device)
        let w2 = try upload(TIPSPool2DConfiguration.conv2Name, device)
        try device.context.dispatch(
            "tips_forward", in: program,
            arguments: [
                .buffer(input.buffer), .buffer(w1.buffer), .buffer(w2.buffer), .buffer(psi.buffer), .buffer(q.buffer),
                .buffer(tau.buffer), .buffer(output.buffer), .int(planes), .int(inputShape.c), .int(inputShape.h),
                .int(inputShape.w), .int(perGroup),
            ],
            global: [(planes + perGroup - 1) / perGroup * launch.groupSize], local: [launch.groupSize])
        return (TIPSOutputs(output: output, psi: psi, tau: tau), q)
    }

    private func target(_ input: DeviceTensor, _ inputShape: Shape4D, _ shift: MapShift) throws -> DeviceTensor {
        let device = input.device
        let padded = try configuration.paddedShape(for: inputShape)
        let target = try DeviceTensor(shape: padded.dimensions, on: device)
        // Shifts are taken modulo the padded size for wrapping; zero-filled shifts beyond the map
        // leave it all zeros. Clamp before narrowing to 32 bits.
        let limit = Int(Int32.max / 4)
        try device.context.dispatch(
            "tips_target", in: try program(device, fill: shift.fill),
            arguments: [
                .buffer(input.buffer), .buffer(target.buffer), .int(inputShape.n * inputShape.c), .int(inputShape.h),
                .int(inputShape.w), .int(min(max(shift.dy, -limit), limit)), .int(min(max(shift.dx, -limit), limit)),
            ],
            global: [padded.w, padded.h, inputShape.n * inputShape.c])
        return target
    }

    /// psi, tau and q from a training forward, or recomputed (psi only when `needPsi`: the fused
    /// backward recomputes it from the input anyway).
    private func savedState(_ saved: SavedForBackward, _ inputShape: Shape4D, needPsi: Bool) throws -> State {
        if let psi = saved.tensors[SavedName.psi], let tau = saved.tensors[SavedName.tau],
            let q = saved.tensors[SavedName.q]
        {
            let padded = try configuration.paddedShape(for: inputShape)
            guard psi.shape == padded.dimensions, tau.shape == [inputShape.n, inputShape.c, 4], q.shape == tau.shape else {
                throw NyquistError(
                    .invalidShape, "\(TIPSPool2DConfiguration.operatorName): saved psi/tau/q do not fit input \(inputShape)")
            }
            return State(psi: psi, tau: tau, q: q)
        }
        let output = try DeviceTensor(shape: configuration.outputShape(for: inputShape).dimensions, on: saved.input.device)
        let (outputs, q) = try run(saved.input, inputShape, output: output, keepPsi: needPsi)
        return State(psi: needPsi ? outputs.psi : nil, tau: outputs.tau, q: q)
    }

    /// The fused backward's bands: whole rows (at least 3, so the band holding x' row 2 also
    /// holds the reflected row 0) of one plane, or whole small planes batched, about
    /// `backwardBandElements` x' elements per work-group; nil (the unfused passes) when that is
    /// 0 or even 3 rows of dz do not fit in the device's local memory.
    private func bandLaunch(_ launch: PolyphaseLaunch, padded: Shape4D, device: Device) -> (
        rows: Int, planesPerGroup: Int, localBytes: Int
    )? {
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

    private func backward(
        _ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor, lossWeights: TIPSLossWeights
    ) throws -> [String: DeviceTensor] {
        let (inputShape, _) = try validateBackward(gradOutput, saved, gradInput)
        let layer = TIPSPool2DConfiguration.operatorName
        let target = saved.tensors[SavedName.target]
        if lossWeights.undo != 0 && target == nil {
            throw NyquistError(
                .invalidConfiguration,
                "\(layer) backward: L_undo has weight \(lossWeights.undo) but the training forward saved no target")
        }
        let device = gradOutput.device
        let context = device.context
        let padded = try configuration.paddedShape(for: inputShape)
        let (n, c) = (inputShape.n, inputShape.c)
        let planes = n * c
        let k = configuration.kernelSize
        let launch = PolyphaseLaunch.choose(for: device)
        let band = bandLaunch(launch, padded: padded, device: device)
        let state = try savedState(saved, inputShape, needPsi: band == nil)
        let program = try program(device)
        let w1 = try upload(TIPSPool2DConfiguration.conv1Name, device)
        let w2 = try upload(TIPSPool2DConfiguration.conv2Name, device)
        let gradQ = try DeviceTensor(shape: [n, c, 4], on: device)
        let share = try DeviceTensor(shape: [n, c], on: device)
        let gradW1 = try DeviceTensor(shape: [c, 1, k, k], on: device)
        let gradW2 = try DeviceTensor(shape: [c, 1, 1, 1], on: device)
        let group = launch.groupSize
        try context.dispatch(
            "tips_grad_tau", in: program,
            arguments: [
                .buffer(saved.input.buffer), .buffer(gradOutput.buffer), .buffer(state.q.buffer), .buffer(state.tau.buffer),
                .buffer(w2.buffer), .buffer(gradQ.buffer), .buffer(share.buffer), .int(c), .int(inputShape.h),
                .int(inputShape.w), .float(Float(lossWeights.fm / Double(planes))),
            ],
            global: [planes * group], local: [group])
        try context.dispatch(
            "tips_grad_w2", in: program, arguments: [.buffer(share.buffer), .buffer(gradW2.buffer), .int(n), .int(c)],
            global: [c])
        let undoScale = target == nil ? 0 : Float(2 * lossWeights.undo / Double(padded.count))
        if let band {
            // dz, d conv1 row terms and dx in one pass over bands of rows (psi recomputed from the
            // input), then the row terms summed in a fixed order: per x' row, not per band, so
            // the band size cannot change d conv1's bits.
            let bands = (padded.h + band.rows - 1) / band.rows
            let partial = try DeviceTensor(shape: [planes * padded.h, k * k], on: device)
            let groups = (planes + band.planesPerGroup - 1) / band.planesPerGroup * bands
            try context.dispatch(
                "tips_backward_band", in: program,
                arguments: [
                    .buffer(saved.input.buffer), .buffer(gradOutput.buffer), .buffer(state.tau.buffer),
                    .buffer(gradQ.buffer), .buffer((target ?? gradQ).buffer), .buffer(w1.buffer), .buffer(gradInput.buffer),
                    .buffer(partial.buffer), .int(planes), .int(c), .int(inputShape.h), .int(inputShape.w),
                    .int(band.rows), .int(band.planesPerGroup), .int(target == nil ? 0 : 1), .float(undoScale),
                    .local(band.localBytes),
                ],
                global: [groups * group], local: [group])
            try context.dispatch(
                "tips_grad_w1_sum", in: program,
                arguments: [.buffer(partial.buffer), .buffer(gradW1.buffer), .int(n), .int(c), .int(padded.h)],
                global: [c * k * k])
            return [TIPSPool2DConfiguration.conv1Name: gradW1, TIPSPool2DConfiguration.conv2Name: gradW2]
        }
        guard let psi = state.psi else {
            throw NyquistError(.invalidConfiguration, "\(layer) backward: psi is missing")
        }
        let gradZ = try DeviceTensor(shape: padded.dimensions, on: device)
        try context.dispatch(
            "tips_grad_z", in: program,
            arguments: [
                .buffer(psi.buffer), .buffer(gradQ.buffer), .buffer((target ?? psi).buffer),
                .buffer(gradZ.buffer), .int(planes), .int(padded.h), .int(padded.w), .float(undoScale),
            ],
            global: [padded.w, padded.h, planes])
        // The same row terms and sum as the fused path (tips_grad_w1_rows shares its body).
        let rowTerms = try DeviceTensor(shape: [planes * padded.h, k * k], on: device)
        try context.dispatch(
            "tips_grad_w1_rows", in: program,
            arguments: [
                .buffer(saved.input.buffer), .buffer(gradZ.buffer), .buffer(rowTerms.buffer), .int(planes),
                .int(inputShape.h), .int(inputShape.w),
            ],
            global: [k * k, padded.h, planes])
        try context.dispatch(
            "tips_grad_w1_sum", in: program,
            arguments: [.buffer(rowTerms.buffer), .buffer(gradW1.buffer), .int(n), .int(c), .int(padded.h)],
            global: [c * k * k])
        try context.dispatch(
            "tips_grad_input", in: program,
            arguments: [
                .buffer(gradOutput.buffer), .buffer(state.tau.buffer), .buffer(gradZ.buffer), .buffer(w1.buffer),
                .buffer(gradInput.buffer), .int(planes), .int(c), .int(inputShape.h), .int(inputShape.w),
            ],
            global: [(padded.w + 7) / 8, inputShape.h, planes])
        return [TIPSPool2DConfiguration.conv1Name: gradW1, TIPSPool2DConfiguration.conv2Name: gradW2]
    }
}
