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
/// let y = try pool(x)                                   // y.output, y.indices
/// let shortcut = try APSPool2D(channels: 256)(z, indices: y.indices)
/// ```
///
/// Given indices are not read back to the host for checking (that would stall the queue): the
/// kernels clamp them to 0...3 (NaN reads as 0), so a bad index gives a wrong phase, never an
/// out-of-bounds access. Norms are accumulated in Float on the device (l2 as a sum of squares,
/// which overflows to +Inf for values above about 1e19, where the Double reference does not).
public struct APSPool2D: Layer, Sendable {
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

    /// Writes the output for `input` into `output`; with `given` false the chosen phases are
    /// written to `indices` (shape [N]), with `given` true they are read from it.
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

    /// Inference forward: the output and the phase indices chosen for each sample.
    public func callAsFunction(_ input: DeviceTensor) throws -> APSPool2DOutput {
        try callAsFunction(input, indices: nil)
    }

    /// Inference forward; pass `indices` (shape [N], from another APS layer) to sample those
    /// phases instead of choosing (they come back as the output's indices).
    public func callAsFunction(_ input: DeviceTensor, indices given: DeviceTensor?) throws -> APSPool2DOutput {
        let output = try DeviceTensor(shape: outputShape(for: input).dimensions, on: input.device)
        let indices = try given ?? DeviceTensor(shape: [input.shape.first ?? 1], on: input.device)
        try forward(input, into: output, indices: indices, given: given != nil)
        return APSPool2DOutput(output: output, indices: indices)
    }

    /// Training forward: the output and phase indices, and what backward needs (the input and
    /// the indices).
    public func forwardTraining(_ input: DeviceTensor) throws -> (output: APSPool2DOutput, saved: APSPool2DSaved) {
        try forwardTraining(input, indices: nil)
    }

    /// Training forward sampling the given phases (nil: choosing them).
    public func forwardTraining(_ input: DeviceTensor, indices given: DeviceTensor?) throws -> (
        output: APSPool2DOutput, saved: APSPool2DSaved
    ) {
        let output = try self(input, indices: given)
        return (output, APSPool2DSaved(input: input, indices: output.indices))
    }

    /// Gradient with respect to the input: each output gradient goes back to the element of the
    /// chosen phase it copies (then through the odd-size pad and the blur's adjoint). Uses the
    /// saved indices, or re-chooses from the saved input when there are none.
    public func backward(_ gradOutput: DeviceTensor, _ saved: APSPool2DSaved) throws -> Gradients {
        let gradInput = try DeviceTensor(shape: saved.input.shape, on: saved.input.device)
        try backward(gradOutput, saved, into: gradInput)
        return Gradients(input: gradInput)
    }

    /// ``backward(_:_:)`` into `gradInput` (the input's shape).
    public func backward(_ gradOutput: DeviceTensor, _ saved: APSPool2DSaved, into gradInput: DeviceTensor) throws {
        let (inputShape, _) = try validateBackward(gradOutput, savedInput: saved.input, gradInput)
        let device = gradOutput.device
        let indices: DeviceTensor
        if let savedIndices = saved.indices {
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

/// What an APS call produces: the output and the phase each sample was sampled at.
public struct APSPool2DOutput: LayerOutput {
    /// N x C x ceil(H/2) x ceil(W/2).
    public let output: DeviceTensor
    /// The phase of each sample, shape [N], holding 0, 1, 2 or 3 as floats.
    public let indices: DeviceTensor

    /// The indices under the name `indices`.
    public var extras: [String: DeviceTensor] { ["indices": indices] }
}

/// What APS's backward needs: the input and the phases the forward sampled.
public struct APSPool2DSaved {
    /// The forward's input.
    public let input: DeviceTensor
    /// The phases, shape [N]; nil re-chooses them from the input.
    public let indices: DeviceTensor?

    /// Bundles what backward needs; without `indices` backward chooses the phases again.
    public init(input: DeviceTensor, indices: DeviceTensor? = nil) {
        self.input = input
        self.indices = indices
    }
}
