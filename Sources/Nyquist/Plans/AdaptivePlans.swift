import NyquistCL
import NyquistCore

// AdaptiveBlurPool2D's launches: inference, training forward and backward (their buffer
// numbering is part of each builder's contract), the tables they read and the launch knobs.

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

    /// Inference forward's launch. Buffers: 0 input, 1 conv.weight, 2 conv.weight repacked for
    /// the tiled kernel, 3 folded scale, 4 folded shift, 5 output, 6 filters (or the output
    /// again when not written).
    func forwardLaunches(_ inputShape: Shape4D, _ outputShape: Shape4D, writeFilters: Bool) throws
        -> [PreparedLaunch]
    {
        let (rows, columns) = try stridedTables(inputShape, outputShape)
        let launch = AdaptiveLaunch.choose(for: device, configuration: configuration)
        // The training passes' program: one build serves inference and training.
        let program = try device.program("adaptive_blur_pool.cl", defines: programDefines(writeFilters: writeFilters))
        let rowsPerItem = launch.tiled ? launch.positions : 1
        return [
            try device.context.prepare(
                launch.tiled ? "adaptive_forward_tiled" : "adaptive_forward", in: program,
                arguments: [
                    .bound(0), .bound(launch.tiled ? 2 : 1), .bound(3), .bound(4), .buffer(rows.source),
                    .buffer(columns.source), .bound(5), .bound(6), .int(inputShape.n), .int(inputShape.h),
                    .int(inputShape.w), .int(outputShape.h), .int(outputShape.w),
                ],
                global: [outputShape.w, (outputShape.h + rowsPerItem - 1) / rowsPerItem, inputShape.n],
                local: launch.local)
        ]
    }

    /// Training forward's launches: the predictor at every input position, the batch
    /// statistics (unless frozen), then softmax and filtering at the output positions.
    /// Buffers: 0 input, 1 conv.weight, 2 conv.weight repacked for the tiled kernel, 3 the
    /// predictor map, 4 bn.weight, 5 bn.bias, 6 mean, 7 variance, 8 scale, 9 shift (6-9 written
    /// from the batch, or given when frozen), 10 output, 11 filters (or the output again), 12
    /// running mean, 13 running variance, 14 and 15 their folded scale and shift (updated in
    /// place from the batch unless frozen).
    func trainingForwardLaunches(
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
            let positions = inputShape.n * inputShape.h * inputShape.w
            launches.append(
                try context.prepare(
                    "adaptive_batch_statistics", in: program,
                    arguments: [
                        .bound(3), .bound(4), .bound(5), .bound(6), .bound(7), .bound(8), .bound(9), .int(inputShape.n),
                        .int(inputShape.h * inputShape.w), .local(reduce * 4), .bound(12), .bound(13), .bound(14),
                        .bound(15), .float(Float(AdaptiveBlurPool2DConfiguration.momentum)),
                        .float(Float(Double(positions) / Double(positions - 1))),
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
    func backwardPass(_ inputShape: Shape4D, _ outputShape: Shape4D, frozenStatistics: Bool) throws
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

    func trainingProgram(writeFilters: Bool) throws -> OpenCLProgram {
        try device.program("adaptive_blur_pool.cl", defines: programDefines(writeFilters: writeFilters))
    }

    func geometry(rows: Bool, _ input: Shape4D, outputSize: Int, stride: Int) -> AxisGeometry {
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
    func fullTables(_ input: Shape4D) throws -> (rows: AxisTableBuffers, columns: AxisTableBuffers) {
        (
            try device.axisTables(geometry(rows: true, input, outputSize: input.h, stride: 1)),
            try device.axisTables(geometry(rows: false, input, outputSize: input.w, stride: 1))
        )
    }

    /// For each input index of one axis, the (output index * k + tap) entries that read it,
    /// in increasing order, padded with -1 to the largest count (`fan`). `plain`: the indices
    /// i (one range, possibly empty) read only as an unpadded stride-1 conv reads them, by output
    /// i - v + p at tap v for every v, where a gather needs no table.
    func invertedTable(rows: Bool, _ input: Shape4D, _ output: Shape4D, stride: Int) throws -> (
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

/// An AdaptiveBlurPool plan's configuration with the variant of the pass (whether the filters
/// are written, whether the BatchNorm statistics are frozen): what its launches depend on
/// besides the pass and the input shape. The layer's parameters are bound per call, so two
/// layers with one configuration share plans.
struct AdaptivePlanVariant: Hashable, Sendable {
    let configuration: AdaptiveBlurPool2DConfiguration
    var writeFilters = false
    var frozenStatistics = false

    init(_ configuration: AdaptiveBlurPool2DConfiguration, writeFilters: Bool = false, frozenStatistics: Bool = false) {
        self.configuration = configuration
        self.writeFilters = writeFilters
        self.frozenStatistics = frozenStatistics
    }
}

/// The launch choice of the AdaptiveBlurPool predictor kernels (Kernels/adaptive_blur_pool.cl)
/// for one configuration: the `adaptive-forward` family's knobs (``AdaptiveKnobs``), read
/// through ``Device/knobs(_:family:shapeClass:)`` so a pin, a tuned database entry and the
/// built-in default all take one path, with what they leave open decided.
struct AdaptiveLaunch: Equatable {
    /// Whether the tiled predictor kernels run.
    var tiled: Bool
    /// Output positions per work item of the tiled kernels.
    var positions: Int
    /// float8 blocks of predictor channels per register tile.
    var outVectors: Int
    /// Work-group size of the forward kernels (nil: the runtime's choice).
    var local: [Int]?
    /// Whether backward runs the row-walking input and weight gradient kernels or the
    /// one-element ones (see ``AdaptiveKnobs/rowGradients``).
    var rowGradients = true

    /// Largest P = G*k*k the tiled kernels accept: they keep positions x P logits per item in
    /// private memory, so above it the one-position kernels run (two predictor evaluations for
    /// joint softmax, O(k*k) private memory).
    static let tiledChannelLimit = 128

    /// The tuner and database name of the family, with its one shape class ("all": the
    /// training kernels choose without knowing the map size, and must agree with the forward).
    static let family = "adaptive-forward"
    static let shapeClass = "all"

    /// The choice for `device` and `configuration`: `tiled` is refused above
    /// ``tiledChannelLimit``, and the gradient kernels follow the device type unless the knobs
    /// say (row kernels on CPUs, one-element kernels on GPUs).
    static func choose(for device: Device, configuration: AdaptiveBlurPool2DConfiguration) -> AdaptiveLaunch {
        let knobs = device.knobs(AdaptiveKnobs.self, family: family, shapeClass: shapeClass)
        return AdaptiveLaunch(
            tiled: knobs.tiled && configuration.predictorChannels <= tiledChannelLimit,
            positions: knobs.positions, outVectors: knobs.outVectors, local: knobs.localSize,
            rowGradients: knobs.rowGradients ?? !device.info.isGPU)
    }
}
