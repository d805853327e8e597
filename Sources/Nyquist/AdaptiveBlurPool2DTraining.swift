import NyquistCL
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
    /// Work-group size of the reduction kernels: 64, or less (a power of two) where the device
    /// limits work-groups or local memory (k*k partial sums per item fit).
    var reduceSize: Int {
        var size = 64
        let taps = configuration.taps
        while size > 1 && (size > device.info.maxWorkGroupSize || size * taps * 4 > device.info.localMemorySize) {
            size /= 2
        }
        return size
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
    public func forwardTraining(_ input: DeviceTensor, withFilters: Bool = false, frozenStatistics: Bool = false) throws -> (
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
            mean = try DeviceTensor(parameters.runningMean, on: device)
            variance = try DeviceTensor(parameters.runningVar, on: device)
            let folded = Self.folded(parameters)
            scale = try DeviceTensor(HostTensor(shape: [p], values: folded.scale), on: device)
            shift = try DeviceTensor(HostTensor(shape: [p], values: folded.shift), on: device)
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
            on: device, input.buffer, constants.weight, constants.tiledWeight, map.buffer, constants.gamma,
            constants.beta, mean.buffer, variance.buffer, scale.buffer, shift.buffer, output.buffer,
            (filters ?? output).buffer)
        let saved = AdaptiveSavedForBackward(
            input: input, predictor: map, batchMean: mean, batchVariance: variance, batchStatistics: !frozenStatistics,
            scale: scale, shift: shift, constants: constants)
        if frozenStatistics { return (output, filters, saved) }
        // Running statistics: P values each way.
        let batchMean = try mean.toHost().values
        let batchVariance = try variance.toHost().values
        let momentum = AdaptiveBlurPool2DConfiguration.momentum
        let unbiased = Double(positions) / Double(positions - 1)
        var updated = parameters
        for o in 0..<p {
            updated.runningMean.values[o] = Float(
                (1 - momentum) * Double(parameters.runningMean.values[o]) + momentum * Double(batchMean[o]))
            updated.runningVar.values[o] = Float(
                (1 - momentum) * Double(parameters.runningVar.values[o]) + momentum * Double(batchVariance[o]) * unbiased)
        }
        try setRunningStatistics(updated)
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
            gradOutput.buffer, saved.batchMean.buffer, saved.batchVariance.buffer, saved.constants.gamma,
            saved.constants.weight, gradGamma.buffer, gradBeta.buffer, gradInput.buffer, gradWeight.buffer)
        return Gradients(
            input: gradInput, parameters: ["conv.weight": gradWeight, "bn.weight": gradGamma, "bn.bias": gradBeta])
    }

    /// Training forward's launches: the predictor at every input position, the batch
    /// statistics (unless frozen), then softmax and filtering at the output positions.
    /// Buffers: 0 input, 1 conv.weight, 2 conv.weight repacked for the tiled kernel, 3 the
    /// predictor map, 4 bn.weight, 5 bn.bias, 6 mean, 7 variance, 8 scale, 9 shift (6-9 written
    /// from the batch, or given when frozen), 10 output, 11 filters (or the output again).
    private func trainingForwardLaunches(
        _ inputShape: Shape4D, _ outputShape: Shape4D, writeFilters: Bool, frozenStatistics: Bool
    ) throws -> [PreparedLaunch] {
        let p = configuration.predictorChannels
        let program = try trainingProgram(writeFilters: writeFilters)
        let full = try fullTables(inputShape)
        let strided = try stridedTables(inputShape, outputShape)
        let launch = AdaptiveLaunch.choose(for: device, configuration: configuration)
        let rowsPerItem = launch.tiled ? launch.positions : 1
        let context = device.context
        var launches = [
            try context.prepare(
                launch.tiled ? "adaptive_predictor_full_tiled" : "adaptive_predictor_full", in: program,
                arguments: [
                    .bound(0), .bound(launch.tiled ? 2 : 1), .buffer(full.rows.source), .buffer(full.columns.source),
                    .bound(3), .int(inputShape.n), .int(inputShape.h), .int(inputShape.w),
                ],
                global: [inputShape.w, (inputShape.h + rowsPerItem - 1) / rowsPerItem, inputShape.n],
                local: launch.local)
        ]
        if !frozenStatistics {
            let reduce = reduceSize
            launches.append(
                try context.prepare(
                    "adaptive_batch_statistics", in: program,
                    arguments: [
                        .bound(3), .bound(4), .bound(5), .bound(6), .bound(7), .bound(8), .bound(9), .int(inputShape.n),
                        .int(inputShape.h * inputShape.w), .local(reduce * 4),
                    ],
                    global: [p * reduce], local: [reduce]))
        }
        launches.append(
            try context.prepare(
                "adaptive_forward_from_map", in: program,
                arguments: [
                    .bound(0), .bound(3), .bound(8), .bound(9), .buffer(strided.rows.source),
                    .buffer(strided.columns.source), .bound(10), .bound(11), .int(inputShape.n), .int(inputShape.h),
                    .int(inputShape.w), .int(outputShape.h), .int(outputShape.w),
                ],
                global: [outputShape.w, outputShape.h, inputShape.n]))
        return launches
    }

    /// Backward's launches and temporaries. Buffers: 0 saved input, 1 predictor map, 2 scale,
    /// 3 shift, 4 gradOutput, 5 batch mean, 6 batch variance, 7 bn.weight, 8 conv.weight,
    /// 9 gradient of bn.weight, 10 of bn.bias, 11 gradInput, 12 gradient of conv.weight;
    /// temporaries 13 softmax weights and 14 their logits' gradient (N x P x H' x W'), 15 the
    /// predictor map's gradient (N x P x H x W), 16 per-sample conv.weight partials (row path).
    private func backwardPass(_ inputShape: Shape4D, _ outputShape: Shape4D, frozenStatistics: Bool) throws
        -> CompiledPass
    {
        let p = configuration.predictorChannels
        let k = configuration.kernelSize
        let (n, c, h, w) = (inputShape.n, inputShape.c, inputShape.h, inputShape.w)
        let (oh, ow) = (outputShape.h, outputShape.w)
        let strided = try stridedTables(inputShape, outputShape)
        let full = try fullTables(inputShape)
        let outRows = try invertedTable(rows: true, inputShape, outputShape, stride: configuration.stride)
        let outCols = try invertedTable(rows: false, inputShape, outputShape, stride: configuration.stride)
        let fullRows = try invertedTable(rows: true, inputShape, outputShape, stride: 1)
        let fullCols = try invertedTable(rows: false, inputShape, outputShape, stride: 1)
        let program = try device.program(
            "adaptive_blur_pool.cl",
            defines: programDefines(writeFilters: false).merging([
                "FAN_OUT_ROWS": outRows.fan, "FAN_OUT_COLS": outCols.fan, "FAN_FULL_ROWS": fullRows.fan,
                "FAN_FULL_COLS": fullCols.fan,
            ]) { $1 })
        let context = device.context
        let reduce = reduceSize
        let rowGradients = AdaptiveLaunch.choose(for: device, configuration: configuration).rowGradients
        var launches = [
            try context.prepare(
                "adaptive_backward_softmax", in: program,
                arguments: [
                    .bound(0), .bound(1), .bound(2), .bound(3), .buffer(strided.rows.source),
                    .buffer(strided.columns.source), .bound(4), .bound(13), .bound(14), .int(n), .int(h), .int(w),
                    .int(oh), .int(ow),
                ],
                global: [ow, oh, n]),
            try context.prepare(
                "adaptive_bn_parameter_gradients", in: program,
                arguments: [
                    .bound(14), .bound(1), .bound(5), .bound(6), .bound(9), .bound(10), .int(n), .int(h), .int(w),
                    .int(oh), .int(ow), .local(reduce * 4),
                ],
                global: [p * reduce], local: [reduce]),
            try context.prepare(
                "adaptive_bn_backward", in: program,
                arguments: [
                    .bound(1), .bound(14), .bound(5), .bound(6), .bound(7), .bound(9), .bound(10), .bound(15), .int(n),
                    .int(h), .int(w), .int(oh), .int(ow), .int(frozenStatistics ? 1 : 0),
                ],
                global: [w, h, n * p]),
        ]
        let inverted: [LaunchArgument] = [
            .buffer(outRows.buffer), .buffer(outCols.buffer), .buffer(fullRows.buffer), .buffer(fullCols.buffer),
        ]
        var temporaries = [n * p * oh * ow, n * p * oh * ow, n * p * h * w]
        if rowGradients {
            // One item per input row, 8 columns at a time where the predictor's adjoint needs no
            // column table (adaptive_input_gradient_rows).
            launches.append(
                try context.prepare(
                    "adaptive_input_gradient_rows", in: program,
                    arguments: [.bound(4), .bound(13), .bound(15), .bound(8)] + inverted + [
                        .bound(11), .int(n), .int(h), .int(w), .int(oh), .int(ow), .int(fullCols.plain.lowerBound),
                        .int(fullCols.plain.upperBound),
                    ],
                    global: [h, n * c]))
            // One item per (c, o, n) with vector loads along rows (adaptive_weight_gradient_rows),
            // then the partials summed in order of n; measurements in docs/kernels.md.
            launches.append(
                try context.prepare(
                    "adaptive_weight_gradient_rows", in: program,
                    arguments: [
                        .bound(15), .bound(0), .buffer(full.rows.source), .buffer(full.columns.source), .bound(16),
                        .int(n), .int(h), .int(w),
                    ],
                    global: [c, p, n]))
            launches.append(
                try context.prepare(
                    "adaptive_weight_gradient_sum", in: program, arguments: [.bound(16), .bound(12), .int(n)],
                    global: [p * c * k * k]))
            temporaries.append(n * p * c * k * k)
        } else {
            // One item per element (coalesced on GPUs): adaptive_input_gradient gathers through
            // the inverted tables, adaptive_weight_gradient runs a work-group per (o, c).
            launches.append(
                try context.prepare(
                    "adaptive_input_gradient", in: program,
                    arguments: [.bound(4), .bound(13), .bound(15), .bound(8)] + inverted + [
                        .bound(11), .int(n), .int(h), .int(w), .int(oh), .int(ow),
                    ],
                    global: [w, h, n * c]))
            launches.append(
                try context.prepare(
                    "adaptive_weight_gradient", in: program,
                    arguments: [
                        .bound(15), .bound(0), .buffer(full.rows.source), .buffer(full.columns.source), .bound(12),
                        .int(n), .int(h), .int(w), .local(reduce * k * k * 4),
                    ],
                    global: [p * c * reduce], local: [reduce]))
        }
        return CompiledPass(launches, temporaries: temporaries)
    }

    /// The -D defines of every AdaptiveBlurPool program (backward adds its table widths).
    func programDefines(writeFilters: Bool) -> [String: Int] {
        let launch = AdaptiveLaunch.choose(for: device, configuration: configuration)
        return [
            "K": configuration.kernelSize, "CHANNELS": configuration.channels, "GROUPS": configuration.groups,
            "JOINT": configuration.softmax == .joint ? 1 : 0, "WRITE_FILTERS": writeFilters ? 1 : 0,
            "STRIDE": configuration.stride, "REDUCE": reduceSize, "POSITIONS": launch.positions,
            "OUT_VECTORS": launch.outVectors,
        ]
    }

    private func trainingProgram(writeFilters: Bool) throws -> OpenCLProgram {
        try device.program("adaptive_blur_pool.cl", defines: programDefines(writeFilters: writeFilters))
    }

    private func geometry(rows: Bool, _ input: Shape4D, outputSize: Int, stride: Int) -> AxisGeometry {
        AxisGeometry(
            inputSize: rows ? input.h : input.w, outputSize: outputSize, stride: stride, padBefore: configuration.pad,
            border: .padding(configuration.padding), taps: [Float](repeating: 1, count: configuration.kernelSize))
    }

    /// Forward tables of the output positions (stride s).
    func stridedTables(_ input: Shape4D, _ output: Shape4D) throws -> (rows: AxisTableBuffers, columns: AxisTableBuffers) {
        (
            try device.axisTables(geometry(rows: true, input, outputSize: output.h, stride: configuration.stride)),
            try device.axisTables(geometry(rows: false, input, outputSize: output.w, stride: configuration.stride))
        )
    }

    /// Forward tables of every input position (stride 1), where training evaluates the predictor.
    private func fullTables(_ input: Shape4D) throws -> (rows: AxisTableBuffers, columns: AxisTableBuffers) {
        (
            try device.axisTables(geometry(rows: true, input, outputSize: input.h, stride: 1)),
            try device.axisTables(geometry(rows: false, input, outputSize: input.w, stride: 1))
        )
    }

    /// For each input index of one axis, the (output index * k + tap) entries that read it,
    /// in increasing order, padded with -1 to the largest count (`fan`). `plain`: the indices
    /// i (one range, possibly empty) read only as an unpadded stride-1 conv reads them, by output
    /// i - v + p at tap v for every v, where a gather needs no table.
    private func invertedTable(rows: Bool, _ input: Shape4D, _ output: Shape4D, stride: Int) throws -> (
        buffer: OpenCLBuffer, fan: Int, plain: Range<Int>
    ) {
        let outputSize = stride == 1 ? (rows ? input.h : input.w) : (rows ? output.h : output.w)
        let inputSize = rows ? input.h : input.w
        let tables = AxisTables(geometry(rows: rows, input, outputSize: outputSize, stride: stride))
        var readers = [[Int32]](repeating: [], count: inputSize)
        for (slot, source) in tables.source.enumerated() where source >= 0 {
            readers[Int(source)].append(Int32(slot))
        }
        let fan = max(readers.map(\.count).max() ?? 1, 1)
        var table = [Int32](repeating: -1, count: inputSize * fan)
        for (index, list) in readers.enumerated() {
            for (position, entry) in list.enumerated() { table[index * fan + position] = entry }
        }
        let buffer = try device.context.makeBuffer(byteCount: table.count * 4)
        try device.context.write(bytesOf: table, to: buffer)
        let k = configuration.kernelSize
        let p = configuration.pad
        func isPlain(_ index: Int) -> Bool {
            guard stride == 1 else { return false }
            let expected = (0..<k).map { v in (index - v + p) * k + v }.sorted()
            return expected.allSatisfy { $0 >= 0 && $0 / k < outputSize } && readers[index] == expected.map { Int32($0) }
        }
        let first = (0..<inputSize).first(where: isPlain) ?? inputSize
        var end = first
        while end < inputSize && isPlain(end) { end += 1 }
        return (buffer, fan, first..<end)
    }
}
