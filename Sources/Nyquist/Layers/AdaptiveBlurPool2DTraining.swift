import NyquistCore

/// What ``AdaptiveBlurPool2D/backward(_:_:)`` needs from a training forward: the input, the
/// raw full-resolution predictor map and the batch statistics, plus the parameters the forward
/// used (later parameter updates do not affect this backward).
public struct AdaptiveSavedForBackward {
    /// The forward's input.
    public let input: DeviceTensor
    /// conv(xpad) at every input position, N x G*k*k x H x W (before BatchNorm).
    public let predictor: DeviceTensor
    /// Batch mean of each predictor channel over N x H x W (G*k*k).
    public let batchMean: DeviceTensor
    /// Biased batch variance of each predictor channel (G*k*k), the one the forward divided by.
    public let batchVariance: DeviceTensor
    /// True after a training forward (batch statistics, differentiated in backward); false
    /// after ``AdaptiveBlurPool2D/forwardTraining(_:withFilters:frozenStatistics:)`` with
    /// frozen statistics, where `batchMean` and `batchVariance` hold the running statistics.
    public let batchStatistics: Bool
    /// gamma / sqrt(var + eps) and beta - mean * scale (G*k*k each).
    let scale: DeviceTensor
    let shift: DeviceTensor
    let constants: AdaptiveBlurPool2D.Constants
}

extension AdaptiveBlurPool2D {
    /// Training forward with batch statistics (PyTorch's train mode): the output and what
    /// ``backward(_:_:)`` needs; see ``forwardTraining(_:withFilters:frozenStatistics:)``.
    public func forwardTraining(_ input: DeviceTensor) throws -> (output: DeviceTensor, saved: AdaptiveSavedForBackward) {
        let (output, _, saved) = try forwardTraining(input, withFilters: false, frozenStatistics: false)
        return (output, saved)
    }

    /// Training forward: BatchNorm statistics of the predictor over all N x H x W positions
    /// (biased variance for the normalisation), softmax and filtering at the output positions,
    /// and the running statistics updated in ``parameters`` with momentum 0.1 and the unbiased
    /// variance (as PyTorch). Allocates the N x G*k*k x H x W predictor map that backward needs
    /// (SPEC.md allows it), never a k*k x input tensor: a call allocates that map, four
    /// G*k*k-vectors (batch mean, variance, folded scale and shift) and the output (and the
    /// filters when asked). `withFilters` also returns the filters.
    /// Needs N*H*W > 1, as PyTorch's BatchNorm in training.
    ///
    /// `frozenStatistics: true` is PyTorch's eval mode with gradients (fine-tuning with frozen
    /// BatchNorm): the output is the inference output (running statistics), the running
    /// statistics are not updated, and backward treats them as constants.
    public func forwardTraining(_ input: DeviceTensor, withFilters: Bool, frozenStatistics: Bool) throws -> (
        output: DeviceTensor, filters: DeviceTensor?, saved: AdaptiveSavedForBackward
    ) {
        let layer = AdaptiveBlurPool2DConfiguration.operatorName
        let inputShape = try input.nchw("\(layer) input")
        let outputShape = try configuration.outputShape(for: inputShape)
        guard input.device === device else {
            throw NyquistError(.invalidConfiguration, "\(layer): the input must live on the layer's device (\(device.name))")
        }
        try configuration.checkTrainingMap(for: inputShape)
        let positions = inputShape.n * inputShape.h * inputShape.w
        guard positions > 1 || frozenStatistics else {
            throw NyquistError(
                .invalidShape,
                "\(layer): training BatchNorm needs more than one value per channel, but N x H x W = "
                    + "\(inputShape.n)x\(inputShape.h)x\(inputShape.w)")
        }
        let p = configuration.predictorChannels
        let constants = self.constants
        let map = try DeviceTensor(shape: [inputShape.n, p, inputShape.h, inputShape.w], on: device)
        let mean: DeviceTensor
        let variance: DeviceTensor
        let scale: DeviceTensor
        let shift: DeviceTensor
        if frozenStatistics {
            // Copies on the device: a later batch-statistics forward updates the running
            // statistics in place, and this step's backward must see them as they were.
            mean = try device.copy(constants.runningMean)
            variance = try device.copy(constants.runningVar)
            scale = try device.copy(constants.scale)
            shift = try device.copy(constants.shift)
        } else {
            mean = try DeviceTensor(shape: [p], on: device)
            variance = try DeviceTensor(shape: [p], on: device)
            scale = try DeviceTensor(shape: [p], on: device)
            shift = try DeviceTensor(shape: [p], on: device)
        }
        let output = try DeviceTensor(shape: outputShape.dimensions, on: device)
        let filters = withFilters ? try DeviceTensor(shape: configuration.filterShape(for: inputShape).dimensions, on: device) : nil
        let key = PlanKey(
            configuration: AdaptivePlanVariant(
                configuration, writeFilters: withFilters, frozenStatistics: frozenStatistics),
            pass: .trainingForward, input: inputShape)
        try device.compiledPass(key) {
            try trainingForwardLaunches(
                inputShape, outputShape, writeFilters: withFilters, frozenStatistics: frozenStatistics)
        }.run(
            on: device, input.buffer, constants.weight.buffer, constants.tiledWeight.buffer, map.buffer,
            constants.gamma.buffer, constants.beta.buffer, mean.buffer, variance.buffer, scale.buffer, shift.buffer, output.buffer,
            (filters ?? output).buffer, constants.runningMean.buffer, constants.runningVar.buffer, constants.scale.buffer,
            constants.shift.buffer)
        let saved = AdaptiveSavedForBackward(
            input: input, predictor: map, batchMean: mean, batchVariance: variance, batchStatistics: !frozenStatistics,
            scale: scale, shift: shift, constants: constants)
        // The batch statistics moved the running ones on the device; the host copy follows
        // when read.
        if !frozenStatistics { hostStatisticsStale = true }
        return (output, filters, saved)
    }

    /// Backward of ``forwardTraining(_:withFilters:frozenStatistics:)``: gradients to the input
    /// (through the filter taps and the predictor), and `conv.weight`, `bn.weight`, `bn.bias` in
    /// ``Gradients/parameters``.
    /// Deterministic: gathers and fixed-order work-group reductions, no atomics.
    public func backward(_ gradOutput: DeviceTensor, _ saved: AdaptiveSavedForBackward) throws -> Gradients {
        let layer = AdaptiveBlurPool2DConfiguration.operatorName
        let inputShape = try saved.input.nchw("\(layer) saved input")
        let outputShape = try configuration.outputShape(for: inputShape)
        guard gradOutput.shape == outputShape.dimensions else {
            throw NyquistError(
                .invalidShape, "\(layer) backward: gradOutput has shape \(gradOutput.shape), expected \(outputShape.dimensions)")
        }
        guard gradOutput.device === device, saved.input.device === device else {
            throw NyquistError(.invalidConfiguration, "\(layer): tensors must live on the layer's device (\(device.name))")
        }
        let p = configuration.predictorChannels
        let k = configuration.kernelSize
        let (n, c, h, w) = (inputShape.n, inputShape.c, inputShape.h, inputShape.w)
        guard saved.predictor.shape == [n, p, h, w], saved.batchMean.count == p, saved.batchVariance.count == p,
            saved.scale.count == p, saved.shift.count == p
        else {
            throw NyquistError(
                .invalidShape,
                "\(layer) backward: the saved state (predictor \(saved.predictor.shape)) does not come from this layer's "
                    + "training forward on input \(inputShape) (expected predictor \([n, p, h, w]))")
        }
        let gradGamma = try DeviceTensor(shape: [p], on: device)
        let gradBeta = try DeviceTensor(shape: [p], on: device)
        let gradInput = try DeviceTensor(shape: inputShape.dimensions, on: device)
        let gradWeight = try DeviceTensor(shape: [p, c, k, k], on: device)
        let key = PlanKey(
            configuration: AdaptivePlanVariant(configuration, frozenStatistics: !saved.batchStatistics), pass: .backward,
            input: inputShape)
        try device.compiledPass(key) {
            try backwardPass(inputShape, outputShape, frozenStatistics: !saved.batchStatistics)
        }.run(
            on: device, saved.input.buffer, saved.predictor.buffer, saved.scale.buffer, saved.shift.buffer,
            gradOutput.buffer, saved.batchMean.buffer, saved.batchVariance.buffer, saved.constants.gamma.buffer,
            saved.constants.weight.buffer, gradGamma.buffer, gradBeta.buffer, gradInput.buffer, gradWeight.buffer)
        return Gradients(
            input: gradInput, parameters: ["conv.weight": gradWeight, "bn.weight": gradGamma, "bn.bias": gradBeta])
    }
}
