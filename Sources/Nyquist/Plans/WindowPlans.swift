import NyquistCL
import NyquistCore

/// A separable weighted window (blur or box filter with padding folded into axis tables) and
/// the kernel launches of its forward and adjoint; BlurPool2D, AvgPool2D and MaxBlurPool2D are
/// thin layers over it.
struct SeparableWindow {
    let rows: AxisGeometry
    let columns: AxisGeometry

    /// Blur/box geometry of one axis.
    static func axis(size: Int, outputSize: Int, taps: [Float], stride: Int, padBefore: Int, mode: PaddingMode)
        -> AxisGeometry
    {
        AxisGeometry(
            inputSize: size, outputSize: outputSize, stride: stride, padBefore: padBefore, border: .padding(mode),
            taps: taps)
    }

    /// The launches of y = window(x) (or of the 2x2 max map of x when `maxMap`), for `planes`
    /// planes of x whose spatial size is `inputHeight` x `inputWidth`. Buffers: 0 x, 1 y.
    func forwardLaunches(on device: Device, planes: Int, inputHeight: Int, inputWidth: Int, maxMap: Bool) throws
        -> [PreparedLaunch]
    {
        let rowTables = try device.axisTables(rows)
        let columnTables = try device.axisTables(columns)
        let parameters = WindowLaunch.choose(
            maxMap ? .maxBlurForward : .windowForward, width: columns.outputSize, on: device)
        let (perItem, interiorColumns) = Self.vectorColumns(
            columnTables.interior, columns.stride == 2 ? parameters.outputsPerItem : 1)
        let knobRows = parameters.rowsPerItem ?? WindowKnobs.defaultRowsPerItem(isGPU: device.info.isGPU)
        let rowsPerItem = perItem > 1 ? max(1, min(knobRows, rows.outputSize)) : 1
        var defines = ["TAPS": rows.taps.count, "MAX_MAP": maxMap ? 1 : 0, "STRIDE": rows.stride]
        if perItem > 1 { defines["OUTPUTS_PER_ITEM"] = perItem }
        if rowsPerItem > 1 { defines["ROWS_PER_ITEM"] = rowsPerItem }
        let program = try device.program("blur_pool.cl", defines: defines)
        // The vector kernel reads rows through the row table, so it covers every row and
        // leaves only the left and right strips to the table kernel.
        return try splitLaunches(
            on: device, program: program,
            kernels: (
                perItem > 1 ? "weighted_window_interior_vector" : "weighted_window_interior", "weighted_window_forward"
            ),
            buffers: [.bound(0), .bound(1)],
            interiorExtras: perItem > 1
                ? [.buffer(rowTables.tapWeights), .buffer(rowTables.source)] : [.buffer(rowTables.tapWeights)],
            tables: [
                .buffer(rowTables.source), .buffer(rowTables.weight),
                .buffer(columnTables.source), .buffer(columnTables.weight),
            ],
            shape: [.int(planes), .int(inputHeight), .int(inputWidth), .int(rows.outputSize), .int(columns.outputSize)],
            planes: planes, interior: (perItem > 1 ? 0..<rows.outputSize : rowTables.interior, interiorColumns),
            extent: (rows.outputSize, columns.outputSize), outputsPerItem: perItem, rowsPerItem: rowsPerItem,
            parameters: parameters)
    }

    /// The launches of gradMap = adjoint of the window applied to gradOutput (gradMap has the
    /// filtered map's size). Buffers: gradOutput and gradMap by the numbers in `buffers`
    /// (default 0 and 1).
    func backwardLaunches(on device: Device, planes: Int, buffers: (gradOutput: Int, gradMap: Int) = (0, 1)) throws
        -> [PreparedLaunch]
    {
        let rowTables = try device.axisTables(rows)
        let columnTables = try device.axisTables(columns)
        let parameters = WindowLaunch.choose(.windowBackward, width: columns.inputSize, on: device)
        // The vector kernel (stride 2) needs every vector to start on an even padded column and
        // both phases to have a tap (see blur_pool.cl).
        var perItem = parameters.outputsPerItem
        var interiorColumns = columnTables.backwardInterior
        let aligned = Self.alignedVectorColumns(interiorColumns, lanes: perItem, padBefore: columns.padBefore)
        if perItem > 1, columns.stride == 2, columns.taps.count >= 2, !aligned.isEmpty {
            interiorColumns = aligned
        } else {
            perItem = 1
        }
        var defines = [
            "TAPS": rows.taps.count, "STRIDE": rows.stride, "FAN_IN_ROWS": rowTables.fanIn,
            "FAN_IN_COLS": columnTables.fanIn,
        ]
        if perItem > 1 { defines["OUTPUTS_PER_ITEM"] = perItem }
        let program = try device.program("blur_pool.cl", defines: defines)
        return try splitLaunches(
            on: device, program: program,
            kernels: (
                perItem > 1 ? "weighted_window_backward_interior_vector" : "weighted_window_backward_interior",
                "weighted_window_backward"
            ),
            buffers: [.bound(buffers.gradOutput), .bound(buffers.gradMap)],
            interiorExtras: perItem > 1
                ? [
                    .buffer(rowTables.tapWeights), .buffer(rowTables.target), .buffer(rowTables.targetWeight),
                    .int(rowTables.backwardInterior.lowerBound), .int(rowTables.backwardInterior.upperBound),
                ]
                : [.buffer(rowTables.tapWeights)],
            tables: [
                .buffer(rowTables.target), .buffer(rowTables.targetWeight),
                .buffer(columnTables.target), .buffer(columnTables.targetWeight),
            ],
            shape: [
                .int(planes), .int(rows.inputSize), .int(columns.inputSize), .int(rows.outputSize),
                .int(columns.outputSize),
            ],
            // The vector kernel reads rows through the table: every row, only side strips left.
            planes: planes, interior: (perItem > 1 ? 0..<rows.inputSize : rowTables.backwardInterior, interiorColumns),
            extent: (rows.inputSize, columns.inputSize), outputsPerItem: perItem, parameters: parameters)
    }

    /// The launches of a pass over `extent` (rows, columns) of the elements it writes, up to
    /// three: the interior (every tap in range: affine indices, no tables; `outputsPerItem`
    /// columns per work item, `parameters`' local size), then the left and
    /// right strips over all rows, then the top and bottom strips between them, both through
    /// the tables. A vector kernel (`outputsPerItem` > 1) covering every row may compute the
    /// left and right strips itself, one extra work item per row (`parameters.foldedSides`,
    /// Kernels/window_vector.h), which leaves one launch. Kernel arguments: `buffers`, then
    /// `interiorExtras` (interior) or `tables`, then (vector kernels only) `tables` and the
    /// side-column remapping, then `shape`, then the interior range and pads or the strip
    /// remappings. `rowsPerItem` (the forward vector kernel's ROWS_PER_ITEM, at most the
    /// interior's rows) divides the launch's rows.
    func splitLaunches(
        on device: Device, program: OpenCLProgram, kernels: (interior: String, tables: String),
        buffers: [LaunchArgument], interiorExtras: [LaunchArgument], tables: [LaunchArgument], shape: [LaunchArgument],
        planes: Int, interior: (rows: Range<Int>, columns: Range<Int>), extent: (rows: Int, columns: Int),
        outputsPerItem: Int, rowsPerItem: Int = 1, parameters: WindowKnobs
    ) throws -> [PreparedLaunch] {
        var launches: [PreparedLaunch] = []
        func launchTables(rows: Remap, columns: Remap) throws {
            let global = [columns.count, rows.count, planes]
            launches.append(
                try device.context.prepare(
                    kernels.tables, in: program, arguments: buffers + tables + shape + rows.arguments + columns.arguments,
                    global: global))
        }
        // The interior kernels assume one stride and one tap vector for both axes.
        let square = rows.stride == columns.stride && rows.taps == columns.taps
        guard square, !interior.rows.isEmpty, !interior.columns.isEmpty else {
            try launchTables(rows: Remap(count: extent.rows), columns: Remap(count: extent.columns))
            return launches
        }
        let sideColumns = Remap(around: interior.columns, count: extent.columns)
        // The vector kernels take the tables and the side-column remapping, and compute the side
        // columns of their rows in one extra work item per row when folding (they must cover
        // every row for that); otherwise the table kernel gets the strips in a launch of its own.
        let vectorKernel = outputsPerItem > 1
        let fold =
            vectorKernel && sideColumns.count > 0 && interior.rows == 0..<extent.rows
            && (parameters.foldedSides ?? WindowKnobs.foldsSidesByDefault(isGPU: device.info.isGPU))
        let sideArguments: [LaunchArgument] =
            vectorKernel
            ? try tables + [.int(fold ? sideColumns.count : 0), .int(sideColumns.split), .int(sideColumns.jump)] : []
        let vectors = (interior.columns.count + outputsPerItem - 1) / outputsPerItem
        let global = [vectors + (fold ? 1 : 0), (interior.rows.count + rowsPerItem - 1) / rowsPerItem, planes]
        launches.append(
            try device.context.prepare(
                kernels.interior, in: program,
                arguments: buffers + interiorExtras + sideArguments + shape + [
                    .int(interior.rows.lowerBound), .int(interior.rows.count), .int(interior.columns.lowerBound),
                    .int(interior.columns.count), .int(rows.padBefore), .int(columns.padBefore),
                ],
                global: global, local: parameters.local(for: global)))
        if sideColumns.count > 0 && !fold {
            try launchTables(rows: Remap(count: extent.rows), columns: sideColumns)
        }
        let topAndBottom = Remap(around: interior.rows, count: extent.rows)
        if topAndBottom.count > 0 {
            try launchTables(
                rows: topAndBottom, columns: Remap(base: interior.columns.lowerBound, count: interior.columns.count))
        }
        return launches
    }

    /// The interior columns a vector kernel of `outputsPerItem` lanes covers: all of
    /// `interior` (the kernels move the last vector left to end at its last column, see
    /// Kernels/window_vector.h), or the whole range and 1 lane when not even one vector fits.
    static func vectorColumns(_ interior: Range<Int>, _ outputsPerItem: Int) -> (Int, Range<Int>) {
        guard outputsPerItem > 1, interior.count >= outputsPerItem else { return (1, interior) }
        return (outputsPerItem, interior)
    }

    /// The columns a backward vector kernel of `lanes` lanes covers inside `interior`: vectors
    /// start where column + `padBefore` is even and so does the last one (count - lanes even);
    /// empty when not one vector fits.
    static func alignedVectorColumns(_ interior: Range<Int>, lanes: Int, padBefore: Int) -> Range<Int> {
        guard !interior.isEmpty else { return 0..<0 }
        let start = interior.lowerBound + (interior.lowerBound + padBefore) % 2
        let available = interior.upperBound - start
        guard available >= lanes else { return 0..<0 }
        return start..<(start + available - (available - lanes) % 2)
    }

    /// Work-item index k covers element base + k + (k >= split ? jump : 0).
    struct Remap {
        var base = 0
        var count: Int
        var split = Int(Int32.max)
        var jump = 0

        init(base: Int = 0, count: Int) {
            self.base = base
            self.count = count
        }

        /// Everything of 0..<total outside `interior`.
        init(around interior: Range<Int>, count total: Int) {
            count = total - interior.count
            split = interior.lowerBound
            jump = interior.count
        }

        var arguments: [LaunchArgument] { get throws { try [.int(count), .int(base), .int(split), .int(jump)] } }
    }
}


/// The window kernel families, with one choice function for all of them: their knobs
/// (``WindowKnobs``) through ``Device/knobs(_:family:shapeClass:)``, so a pin, a tuned
/// database entry and the built-in default all take one path.
enum WindowLaunch: String, CaseIterable {
    /// BlurPool / AvgPool forward (weighted_window_interior*).
    case windowForward = "window-forward"
    /// Fused MaxBlurPool forward (the same kernels with MAX_MAP 1).
    case maxBlurForward = "max-blur-forward"
    /// BlurPool / AvgPool / MaxBlurPool backward (weighted_window_backward_interior*).
    case windowBackward = "window-backward"
    /// MaxPool forward (max_pool_forward_interior*).
    case maxPoolForward = "max-pool-forward"

    /// Shape classes by the width of the elements a pass writes (output for forward, input for
    /// backward): what decides how many vectors fit a row.
    static func shapeClass(width: Int) -> String {
        width < 16 ? "narrow" : width < 64 ? "medium" : "wide"
    }

    /// The knobs for a pass of `family` writing rows of `width` elements on `device`.
    static func choose(_ family: WindowLaunch, width: Int, on device: Device) -> WindowKnobs {
        device.knobs(WindowKnobs.self, family: family.rawValue, shapeClass: shapeClass(width: width))
    }
}

// MARK: The window layers' launches (their buffer numbering is part of each builder's contract)

/// A layer that is one separable window (BlurPool2D, AvgPool2D): its passes are the window's.
protocol SeparableWindowLayer: PoolingLayer {
    /// The window at one input shape.
    func window(_ input: Shape4D, _ output: Shape4D) throws -> SeparableWindow
}

extension SeparableWindowLayer {
    /// Forward through the window's plan. Buffers: 0 input, 1 output.
    func windowForward(_ input: DeviceTensor, into output: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateForward(input, output)
        let device = input.device
        try device.compiledPass(PlanKey(configuration: configuration, pass: .forward, input: inputShape)) {
            try window(inputShape, outputShape).forwardLaunches(
                on: device, planes: inputShape.n * inputShape.c, inputHeight: inputShape.h, inputWidth: inputShape.w,
                maxMap: false)
        }.run(on: device, input.buffer, output.buffer)
    }

    /// Backward through the window's adjoint plan. Buffers: 0 gradOutput, 1 gradInput.
    func windowBackward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws {
        let (inputShape, outputShape) = try validateBackward(gradOutput, saved, gradInput)
        let device = gradOutput.device
        try device.compiledPass(PlanKey(configuration: configuration, pass: .backward, input: inputShape)) {
            try window(inputShape, outputShape).backwardLaunches(on: device, planes: inputShape.n * inputShape.c)
        }.run(on: device, gradOutput.buffer, gradInput.buffer)
    }
}

extension BlurPool2D {
    /// The separable window of this layer at one input shape.
    func window(_ input: Shape4D, _ output: Shape4D) throws -> SeparableWindow {
        try Self.window(configuration, mapHeight: input.h, mapWidth: input.w, output: output)
    }

    static func window(_ configuration: BlurPool2DConfiguration, mapHeight: Int, mapWidth: Int, output: Shape4D) throws
        -> SeparableWindow
    {
        let taps: [Float] = try BinomialFilter.taps(size: configuration.filterSize)
        let pads = configuration.pads
        return SeparableWindow(
            rows: SeparableWindow.axis(
                size: mapHeight, outputSize: output.h, taps: taps, stride: configuration.stride, padBefore: pads.top,
                mode: configuration.padding),
            columns: SeparableWindow.axis(
                size: mapWidth, outputSize: output.w, taps: taps, stride: configuration.stride, padBefore: pads.left,
                mode: configuration.padding))
    }
}

extension MaxBlurPool2D {
    /// Backward's launches: the window's adjoint into the max map's gradient, then its routing
    /// to the first maximum of each 2x2 window. Buffers: 0 gradOutput, 1 the saved input,
    /// 2 gradInput; temporary 3 the max map's gradient.
    static func backwardLaunches(
        _ configuration: MaxBlurPool2DConfiguration, input inputShape: Shape4D, map: Shape4D, output: Shape4D,
        on device: Device
    ) throws -> [PreparedLaunch] {
        let planes = inputShape.n * inputShape.c
        let window = try BlurPool2D.window(configuration.blur, mapHeight: map.h, mapWidth: map.w, output: output)
        let adjoint = try window.backwardLaunches(on: device, planes: planes, buffers: (0, 3))
        // Routing to the 2x2 maxima: vectors of 8 input columns away from the left and right
        // borders (every window column of theirs inside), all rows; the one-element kernel on
        // the side strips.
        let (perItem, vectorColumns) = SeparableWindow.vectorColumns(1..<max(inputShape.w - 1, 1), 8)
        let parameters = WindowLaunch.choose(.windowBackward, width: inputShape.w, on: device)
        return adjoint + (try window.splitLaunches(
            on: device, program: try device.program("blur_pool.cl"),
            kernels: ("max_map_backward_vector", "max_map_backward"),
            buffers: [.bound(1), .bound(3), .bound(2)],
            interiorExtras: [], tables: [], shape: [.int(planes), .int(inputShape.h), .int(inputShape.w)],
            planes: planes,
            interior: (0..<inputShape.h, perItem == 8 ? vectorColumns : 1..<1),
            extent: (inputShape.h, inputShape.w), outputsPerItem: 8, parameters: parameters))
    }
}

extension MaxPool2D {
    /// Training forward's launch: the output and each window's first-maximum index.
    /// Buffers: 0 input, 1 output, 2 argmax.
    func trainingForwardLaunches(_ inputShape: Shape4D, _ outputShape: Shape4D, on device: Device) throws
        -> [PreparedLaunch]
    {
        let window = self.window(inputShape, outputShape)
        let rows = try device.axisTables(window.rows)
        let columns = try device.axisTables(window.columns)
        let program = try device.program(
            "max_pool.cl", defines: ["KERNEL_SIZE": configuration.kernelSize, "STRIDE": configuration.stride])
        return [
            try device.context.prepare(
                "max_pool_forward_argmax", in: program,
                arguments: [
                    .bound(0), .bound(1), .bound(2), .buffer(rows.source), .buffer(columns.source),
                    .int(inputShape.n * inputShape.c), .int(inputShape.h), .int(inputShape.w), .int(outputShape.h),
                    .int(outputShape.w),
                ],
                global: [outputShape.w, outputShape.h, inputShape.n * inputShape.c])
        ]
    }

    /// Forward's launches. Buffers: 0 input, 1 output.
    func forwardLaunches(_ inputShape: Shape4D, _ outputShape: Shape4D, on device: Device) throws
        -> [PreparedLaunch]
    {
        let window = self.window(inputShape, outputShape)
        let rows = try device.axisTables(window.rows)
        let columns = try device.axisTables(window.columns)
        let parameters = WindowLaunch.choose(.maxPoolForward, width: outputShape.w, on: device)
        let (perItem, interiorColumns) = SeparableWindow.vectorColumns(
            columns.interior, configuration.stride == 2 ? parameters.outputsPerItem : 1)
        var defines = ["KERNEL_SIZE": configuration.kernelSize, "STRIDE": configuration.stride]
        if perItem > 1 { defines["OUTPUTS_PER_ITEM"] = perItem }
        let program = try device.program("max_pool.cl", defines: defines)
        return try window.splitLaunches(
            on: device, program: program,
            kernels: (perItem > 1 ? "max_pool_forward_interior_vector" : "max_pool_forward_interior", "max_pool_forward"),
            buffers: [.bound(0), .bound(1)],
            interiorExtras: perItem > 1 ? [.buffer(rows.source)] : [],
            tables: [.buffer(rows.source), .buffer(columns.source)],
            shape: [
                .int(inputShape.n * inputShape.c), .int(inputShape.h), .int(inputShape.w), .int(outputShape.h),
                .int(outputShape.w),
            ],
            // The vector kernel reads rows through the table: every row, only side strips left.
            planes: inputShape.n * inputShape.c,
            interior: (perItem > 1 ? 0..<outputShape.h : rows.interior, interiorColumns),
            extent: (outputShape.h, outputShape.w), outputsPerItem: perItem, parameters: parameters)
    }

    /// Backward's launches. Buffers: 0 the argmax indices (`fromIndices`) or the saved input,
    /// 1 gradOutput, 2 gradInput.
    func backwardLaunches(_ inputShape: Shape4D, _ outputShape: Shape4D, fromIndices: Bool, on device: Device)
        throws -> [PreparedLaunch]
    {
        let window = self.window(inputShape, outputShape)
        let rows = try device.axisTables(window.rows)
        let columns = try device.axisTables(window.columns)
        let program = try device.program(
            "max_pool.cl",
            defines: [
                "KERNEL_SIZE": configuration.kernelSize, "STRIDE": configuration.stride, "FAN_IN_ROWS": rows.fanIn,
                "FAN_IN_COLS": columns.fanIn,
            ])
        let shape: [LaunchArgument] = try [
            .int(inputShape.n * inputShape.c), .int(inputShape.h), .int(inputShape.w), .int(outputShape.h),
            .int(outputShape.w),
        ]
        if fromIndices {
            // Vectors of 8 columns (stride 2) start on an even padded column; the rest of the
            // columns go through the one-element kernel.
            let vectorColumns =
                configuration.stride == 2
                ? SeparableWindow.alignedVectorColumns(
                    columns.backwardInterior, lanes: 8, padBefore: configuration.padding) : 0..<0
            return try window.splitLaunches(
                on: device, program: program,
                kernels: ("max_pool_backward_argmax_vector", "max_pool_backward_argmax"),
                buffers: [.bound(0), .bound(1), .bound(2)],
                interiorExtras: [.buffer(rows.target)], tables: [.buffer(rows.target), .buffer(columns.target)],
                shape: shape, planes: inputShape.n * inputShape.c, interior: (0..<inputShape.h, vectorColumns),
                extent: (inputShape.h, inputShape.w), outputsPerItem: 8,
                parameters: WindowLaunch.choose(.windowBackward, width: inputShape.w, on: device))
        }
        return [
            try device.context.prepare(
                "max_pool_backward", in: program,
                arguments: [
                    .bound(0), .bound(1), .bound(2), .buffer(rows.source), .buffer(columns.source),
                    .buffer(rows.target), .buffer(columns.target),
                ] + shape,
                global: [inputShape.w, inputShape.h, inputShape.n * inputShape.c])
        ]
    }

    func window(_ input: Shape4D, _ output: Shape4D) -> SeparableWindow {
        let taps = [Float](repeating: 1, count: configuration.kernelSize)
        func axis(_ size: Int, _ outputSize: Int) -> AxisGeometry {
            AxisGeometry(
                inputSize: size, outputSize: outputSize, stride: configuration.stride, padBefore: configuration.padding,
                border: .clampToWindow, taps: taps)
        }
        return SeparableWindow(rows: axis(input.h, output.h), columns: axis(input.w, output.w))
    }
}

extension AvgPool2D {
    func window(_ input: Shape4D, _ output: Shape4D) -> SeparableWindow {
        let taps = [Float](repeating: 1 / Float(configuration.kernelSize), count: configuration.kernelSize)
        return SeparableWindow(
            rows: SeparableWindow.axis(
                size: input.h, outputSize: output.h, taps: taps, stride: configuration.stride,
                padBefore: configuration.padding, mode: .zero),
            columns: SeparableWindow.axis(
                size: input.w, outputSize: output.w, taps: taps, stride: configuration.stride,
                padBefore: configuration.padding, mode: .zero))
    }
}
