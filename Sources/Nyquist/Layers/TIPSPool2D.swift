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
}
