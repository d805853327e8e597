import NyquistCore

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
/// Training forward also returns the losses L_FM and (with an `undoShift`, a shift drawn by a
/// seeded ``ShiftGenerator``) L_undo; backward returns the gradient of
/// <output, gradOutput> + <psi, gradPsi> + <tau, gradTau> + lambda_FM L_FM + lambda_undo L_undo
/// with respect to the input and both weights, the lambdas and the optional external gradients
/// of psi and tau (losses computed outside the layer, as PyTorch users of TIPS do) given in
/// ``TIPSPool2DOutputGradients`` (T(x') is a constant).
///
/// ```swift
/// let tips = try TIPSPool2D(channels: 64, on: device)
/// let (y, saved) = try tips.forwardTraining(x, undoShift: MapShift(dy: 1, dx: -2, fill: .circular))
/// // y.output, y.psi, y.tau, y.losses
/// let gradients = try tips.backward(
///     TIPSPool2DOutputGradients(output: gradY, lossWeights: TIPSLossWeights(fm: 0.1, undo: 0.1)), saved)
/// ```
///
/// A layer holds device tensors: like ``DeviceTensor`` it is not `Sendable`; use one per task.
public final class TIPSPool2D: Layer {
    /// The options (shared with `Reference.tipsPool2D`).
    public let configuration: TIPSPool2DConfiguration
    /// The device the weights live on.
    public let device: Device
    /// `conv1.weight` (C,1,k,k) and `conv2.weight` (C,1,1,1), by PyTorch name.
    public private(set) var parameters: [String: DeviceTensor]

    /// A layer with PyTorch's default initialisation of a standalone module (conv1 uniform in
    /// +-1/k, conv2 uniform in +-1) drawn from `seed`.
    public convenience init(channels: Int, kernelSize: Int = 3, seed: UInt64 = 0, on device: Device) throws {
        let configuration = try TIPSPool2DConfiguration(channels: channels, kernelSize: kernelSize)
        try self.init(configuration, parameters: configuration.defaultParameters(seed: seed), on: device)
    }

    /// A layer with given weights, e.g. `Safetensors.read(...)` of a PyTorch state_dict; throws
    /// ``NyquistError/Kind/invalidParameters`` when a weight is missing or misshapen or a name is
    /// not one of the two.
    public init(_ configuration: TIPSPool2DConfiguration, parameters: [String: HostTensor], on device: Device) throws {
        self.configuration = configuration
        self.device = device
        self.parameters = try Self.upload(parameters, configuration, on: device)
    }

    /// Replaces both weights; throws `.invalidParameters` for a missing, misshapen or unexpected
    /// tensor and then leaves the weights as they were.
    public func loadParameters(_ stateDict: [String: HostTensor]) throws {
        parameters = try Self.upload(stateDict, configuration, on: device)
    }

    private static func upload(_ stateDict: [String: HostTensor], _ configuration: TIPSPool2DConfiguration, on device: Device)
        throws -> [String: DeviceTensor]
    {
        try configuration.validate(parameters: stateDict)
        var tensors: [String: DeviceTensor] = [:]
        for name in TIPSPool2DConfiguration.parameterNames {
            guard let tensor = stateDict[name] else { continue }
            tensors[name] = try DeviceTensor(tensor, on: device)
        }
        return tensors
    }

    /// The weight buffers (both present: `upload` checked them).
    private var weightBuffers: (conv1: DeviceTensor, conv2: DeviceTensor) {
        get throws {
            guard let conv1 = parameters[TIPSPool2DConfiguration.conv1Name],
                let conv2 = parameters[TIPSPool2DConfiguration.conv2Name]
            else { throw NyquistError(.invalidParameters, "\(TIPSPool2DConfiguration.operatorName): a weight is missing") }
            return (conv1, conv2)
        }
    }

    /// Writes the output for `input` into `output`; psi is not kept (its sums are all that is
    /// needed), tau goes to a temporary.
    public func forward(_ input: DeviceTensor, into output: DeviceTensor) throws {
        let (inputShape, _) = try validateForward(input, output)
        _ = try run(input, inputShape, output: output, keepPsi: false)
    }

    /// Inference forward: the output and tau; psi is not written (``TIPSPool2DOutput/psi`` is
    /// nil) and there are no losses.
    public func callAsFunction(_ input: DeviceTensor) throws -> TIPSPool2DOutput {
        let inputShape = try input.nchw("\(TIPSPool2DConfiguration.operatorName) input")
        try requireDevice(input)
        let output = try DeviceTensor(shape: configuration.outputShape(for: inputShape).dimensions, on: device)
        return try run(input, inputShape, output: output, keepPsi: false).outputs
    }

    /// Training forward without L_undo: output, psi, tau and L_FM, and what backward needs.
    public func forwardTraining(_ input: DeviceTensor) throws -> (output: TIPSPool2DOutput, saved: TIPSPool2DSaved) {
        try forwardTraining(input, undoShift: nil)
    }

    /// Training forward: output, psi, tau and the losses, and what backward needs. With
    /// `undoShift` the L_undo target T(x') (x' shifted by it, wrapped or zero-filled) is built
    /// and saved, and L_undo is among the losses. The losses are reduced on the device and read
    /// back (per-plane partial sums added in Double in a fixed order) when first read: this call
    /// itself enqueues without waiting.
    public func forwardTraining(_ input: DeviceTensor, undoShift: MapShift?) throws -> (
        output: TIPSPool2DOutput, saved: TIPSPool2DSaved
    ) {
        let inputShape = try input.nchw("\(TIPSPool2DConfiguration.operatorName) input")
        try requireDevice(input)
        let output = try DeviceTensor(shape: configuration.outputShape(for: inputShape).dimensions, on: device)
        let (outputs, q) = try run(input, inputShape, output: output, keepPsi: true)
        let target = try undoShift.map { try self.target(input, inputShape, $0) }
        let saved = TIPSPool2DSaved(input: input, psi: outputs.psi, tau: outputs.tau, q: q, target: target)
        let losses = Deferred(computing: { try self.losses(saved, inputShape) })
        return (
            TIPSPool2DOutput(output: outputs.output, psi: outputs.psi, tau: outputs.tau, deferredLosses: losses), saved
        )
    }

    /// Gradients of <output, gradOutput> + <psi, gradients.psi> + <tau, gradients.tau>
    /// + lossWeights.fm * L_FM + lossWeights.undo * L_undo with respect to the input and both
    /// weights (by PyTorch name). L_undo needs the target saved by
    /// ``forwardTraining(_:undoShift:)``; a psi or tau gradient of the wrong shape throws
    /// ``NyquistError/Kind/invalidShape``.
    public func backward(_ outputGradients: TIPSPool2DOutputGradients, _ saved: TIPSPool2DSaved) throws -> Gradients {
        let gradInput = try DeviceTensor(shape: saved.input.shape, on: saved.input.device)
        let weights = try backward(outputGradients, saved, into: gradInput)
        return Gradients(input: gradInput, parameters: weights)
    }

    /// ``backward(_:_:)`` writing the input's gradient into `gradInput` (the input's shape);
    /// returns the weights' gradients by PyTorch name.
    @discardableResult
    public func backward(_ outputGradients: TIPSPool2DOutputGradients, _ saved: TIPSPool2DSaved, into gradInput: DeviceTensor)
        throws -> [String: DeviceTensor]
    {
        try backward(
            outputGradients.output, saved, into: gradInput, external: (outputGradients.psi, outputGradients.tau),
            lossWeights: outputGradients.lossWeights)
    }

    // MARK: Internals

    private func requireDevice(_ input: DeviceTensor) throws {
        guard input.device === device else {
            throw NyquistError(
                .invalidConfiguration,
                "\(TIPSPool2DConfiguration.operatorName): the input must live on the layer's device (\(device.name))")
        }
    }

    /// The loss values of a training forward: L_FM = mean over (n, c) of (1 - ||tau||_2) and
    /// L_undo = mean((psi - T(x'))^2) (nil when no target was saved).
    private func losses(_ saved: TIPSPool2DSaved, _ inputShape: Shape4D) throws -> TIPSLosses {
        guard let psi = saved.psi, let tau = saved.tau else {
            throw NyquistError(.invalidConfiguration, "\(TIPSPool2DConfiguration.operatorName): losses need psi and tau")
        }
        let padded = try configuration.paddedShape(for: inputShape)
        let planes = inputShape.n * inputShape.c
        let partial = try DeviceTensor(shape: [planes, 2], on: device)
        let target = saved.target
        let key = PlanKey(configuration: configuration, pass: .losses(withTarget: target != nil), input: inputShape)
        try device.compiledPass(key) {
            try Self.lossesLaunches(configuration, input: inputShape, withTarget: target != nil, on: device)
        }.run(on: device, psi.buffer, tau.buffer, (target ?? psi).buffer, partial.buffer)
        let values = try partial.toHost().values
        var fm = 0.0
        var undo = 0.0
        for plane in 0..<planes {
            fm += Double(values[2 * plane])
            undo += Double(values[2 * plane + 1])
        }
        return TIPSLosses(fm: fm / Double(planes), undo: target == nil ? nil : undo / Double(padded.count))
    }

    /// Inference or training forward (psi allocated and written only when `keepPsi`: inference
    /// needs only its sums), one fused pass per plane.
    private func run(_ input: DeviceTensor, _ inputShape: Shape4D, output: DeviceTensor, keepPsi: Bool) throws
        -> (outputs: TIPSPool2DOutput, q: DeviceTensor)
    {
        let weights = try weightBuffers
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
        }.run(
            on: device, input.buffer, weights.conv1.buffer, weights.conv2.buffer, output.buffer, tau.buffer, q.buffer,
            psi.buffer)
        return (TIPSPool2DOutput(output: output, psi: keepPsi ? psi : nil, tau: tau, deferredLosses: nil), q)
    }

    /// T(x') for `shift` into a new tensor of x''s shape.
    private func target(_ input: DeviceTensor, _ inputShape: Shape4D, _ shift: MapShift) throws -> DeviceTensor {
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
    private func savedState(_ saved: TIPSPool2DSaved, _ inputShape: Shape4D) throws -> (
        psi: DeviceTensor, tau: DeviceTensor, q: DeviceTensor
    )? {
        guard let psi = saved.psi, let tau = saved.tau, let q = saved.q else { return nil }
        let padded = try configuration.paddedShape(for: inputShape)
        guard psi.shape == padded.dimensions, tau.shape == [inputShape.n, inputShape.c, 4], q.shape == tau.shape else {
            throw NyquistError(
                .invalidShape, "\(TIPSPool2DConfiguration.operatorName): saved psi/tau/q do not fit input \(inputShape)")
        }
        return (psi, tau, q)
    }

    private func backward(
        _ gradOutput: DeviceTensor, _ saved: TIPSPool2DSaved, into gradInput: DeviceTensor,
        external: (psi: DeviceTensor?, tau: DeviceTensor?), lossWeights: TIPSLossWeights
    ) throws -> [String: DeviceTensor] {
        let (inputShape, outputShape) = try validateBackward(gradOutput, savedInput: saved.input, gradInput)
        try requireDevice(saved.input)
        // Kernels read these by the input's sizes: a smaller buffer would be read past its end.
        if let gradPsi = external.psi {
            try requireShape(gradPsi, configuration.paddedShape(for: inputShape).dimensions, role: "gradient of psi")
            try requireSameDevice(saved.input, gradPsi)
        }
        if let gradTau = external.tau {
            try requireShape(gradTau, [inputShape.n, inputShape.c, 4], role: "gradient of tau")
            try requireSameDevice(saved.input, gradTau)
        }
        let target = saved.target
        if lossWeights.undo != 0 && target == nil {
            throw NyquistError(
                .invalidConfiguration,
                "\(TIPSPool2DConfiguration.operatorName) backward: L_undo has weight \(lossWeights.undo) but the "
                    + "training forward saved no target")
        }
        let padded = try configuration.paddedShape(for: inputShape)
        let (n, c, k) = (inputShape.n, inputShape.c, configuration.kernelSize)
        let state = try savedState(saved, inputShape)
        let variant = TIPSBackwardVariant(
            configuration: configuration, withTarget: target != nil, recompute: state == nil,
            withGradPsi: external.psi != nil, withGradTau: external.tau != nil)
        let plan = try device.compiledPass(PlanKey(configuration: variant, pass: .backward, input: inputShape)) {
            try Self.backwardLaunches(variant, input: inputShape, on: device)
        }
        let weights = try weightBuffers
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
            on: device,
            buffers: [
                saved.input.buffer, gradOutput.buffer, weights.conv1.buffer, weights.conv2.buffer, gradInput.buffer,
                gradW1.buffer, gradW2.buffer, tau.buffer, q.buffer, (target ?? filler).buffer, gradQ.buffer, shares.buffer,
                rowTerms.buffer, output.buffer, (external.psi ?? filler).buffer, (external.tau ?? filler).buffer,
                psi.buffer, gradZ.buffer,
            ], scalars: [lossWeights.fm, lossWeights.undo])
        return [TIPSPool2DConfiguration.conv1Name: gradW1, TIPSPool2DConfiguration.conv2Name: gradW2]
    }
}

/// What a TIPS call produces (SPEC.md section 5).
public struct TIPSPool2DOutput: LayerOutput {
    /// N x C x H'/2 x W'/2.
    public let output: DeviceTensor
    /// psi = ReLU(depthwise conv of x'), N x C x H' x W'; nil after inference, which does not
    /// write it.
    public let psi: DeviceTensor?
    /// The mixing weights, N x C x 4 (softmax over p0..p3).
    public let tau: DeviceTensor
    /// L_FM and L_undo (computed and read back from the device when first read); nil after
    /// inference.
    public var losses: TIPSLosses? {
        get throws { try deferredLosses?.value() }
    }
    let deferredLosses: Deferred<TIPSLosses>?

    /// psi (when written) and tau.
    public var extras: [String: DeviceTensor] {
        var extras = ["tau": tau]
        if let psi { extras["psi"] = psi }
        return extras
    }

    /// `fm` and, with a target, `undo` (the names of `nyquist run`'s losses.json).
    public var scalars: [String: Double] {
        get throws { try scalars(of: losses) }
    }

    private func scalars(of losses: TIPSLosses?) -> [String: Double] {
        guard let losses else { return [:] }
        var scalars = ["fm": losses.fm]
        if let undo = losses.undo { scalars["undo"] = undo }
        return scalars
    }
}

/// The loss values of a TIPS training forward.
public struct TIPSLosses: Sendable, Equatable {
    /// L_FM = mean over (n, c) of (1 - ||tau||_2).
    public let fm: Double
    /// L_undo = mean((psi - T(x'))^2); nil without an undo shift.
    public let undo: Double?
}

/// What TIPS's backward needs: the input and the training forward's psi, tau, quadrant means q
/// and L_undo target.
public struct TIPSPool2DSaved {
    /// The forward's input.
    public let input: DeviceTensor
    /// psi (N,C,H',W'); nil: recomputed from the input.
    public let psi: DeviceTensor?
    /// tau (N,C,4).
    public let tau: DeviceTensor?
    /// Quadrant means q (N,C,4).
    public let q: DeviceTensor?
    /// The L_undo target T(x') (N,C,H',W'); nil without L_undo.
    public let target: DeviceTensor?

    /// Bundles what backward needs; with only the input, backward recomputes psi, tau and q
    /// (less memory kept between the passes, one more forward's work).
    public init(
        input: DeviceTensor, psi: DeviceTensor? = nil, tau: DeviceTensor? = nil, q: DeviceTensor? = nil,
        target: DeviceTensor? = nil
    ) {
        self.input = input
        self.psi = psi
        self.tau = tau
        self.q = q
        self.target = target
    }
}

/// The gradients TIPS's backward starts from: the output's, optionally psi's and tau's (of
/// losses computed outside the layer from the training forward's psi and tau), and the weights
/// of the two built-in losses in the training objective (d objective / d L). Every term given
/// is added.
public struct TIPSPool2DOutputGradients {
    /// Gradient of the objective with respect to the output.
    public let output: DeviceTensor
    /// Gradient of the objective with respect to psi, shaped as the saved psi: N x C x H' x W'
    /// (H', W' = H, W rounded up to even); nil: psi enters the objective only through the layer.
    public let psi: DeviceTensor?
    /// Gradient of the objective with respect to tau, N x C x 4 in the forward's tau order (the
    /// quadrants (0,0), (0,1), (1,0), (1,1), mixing p0..p3); nil: tau enters only through the
    /// layer.
    public let tau: DeviceTensor?
    /// lambda_FM and lambda_undo (default: neither loss).
    public let lossWeights: TIPSLossWeights

    /// Bundles the gradients.
    public init(
        output: DeviceTensor, psi: DeviceTensor? = nil, tau: DeviceTensor? = nil, lossWeights: TIPSLossWeights = .none
    ) {
        self.output = output
        self.psi = psi
        self.tau = tau
        self.lossWeights = lossWeights
    }
}
