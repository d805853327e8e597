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

    /// y = window(x) (or of the 2x2 max map of x when `maxMap`), for `planes` planes of x whose
    /// spatial size is `inputHeight` x `inputWidth`.
    func forward(
        _ input: DeviceTensor, into output: DeviceTensor, planes: Int, inputHeight: Int, inputWidth: Int, maxMap: Bool
    ) throws {
        let device = input.device
        let rowTables = try device.axisTables(rows)
        let columnTables = try device.axisTables(columns)
        let program = try device.program(
            "blur_pool.cl", defines: ["TAPS": rows.taps.count, "MAX_MAP": maxMap ? 1 : 0, "STRIDE": rows.stride])
        try splitDispatch(
            on: device, program: program, kernels: ("weighted_window_interior", "weighted_window_forward"),
            buffers: [.buffer(input.buffer), .buffer(output.buffer)], tapWeights: rowTables.tapWeights,
            tables: [
                .buffer(rowTables.source), .buffer(rowTables.weight),
                .buffer(columnTables.source), .buffer(columnTables.weight),
            ],
            shape: [.int(planes), .int(inputHeight), .int(inputWidth), .int(rows.outputSize), .int(columns.outputSize)],
            planes: planes, interior: (rowTables.interior, columnTables.interior),
            extent: (rows.outputSize, columns.outputSize))
    }

    /// gradMap = adjoint of the window applied to gradOutput (gradMap has the filtered map's size).
    func backward(_ gradOutput: DeviceTensor, into gradMap: DeviceTensor, planes: Int) throws {
        let device = gradOutput.device
        let rowTables = try device.axisTables(rows)
        let columnTables = try device.axisTables(columns)
        let program = try device.program(
            "blur_pool.cl",
            defines: [
                "TAPS": rows.taps.count, "STRIDE": rows.stride, "FAN_IN_ROWS": rowTables.fanIn,
                "FAN_IN_COLS": columnTables.fanIn,
            ])
        try splitDispatch(
            on: device, program: program, kernels: ("weighted_window_backward_interior", "weighted_window_backward"),
            buffers: [.buffer(gradOutput.buffer), .buffer(gradMap.buffer)], tapWeights: rowTables.tapWeights,
            tables: [
                .buffer(rowTables.target), .buffer(rowTables.targetWeight),
                .buffer(columnTables.target), .buffer(columnTables.targetWeight),
            ],
            shape: [
                .int(planes), .int(rows.inputSize), .int(columns.inputSize), .int(rows.outputSize),
                .int(columns.outputSize),
            ],
            planes: planes, interior: (rowTables.backwardInterior, columnTables.backwardInterior),
            extent: (rows.inputSize, columns.inputSize))
    }

    /// Launches a pass over `extent` (rows, columns) of the elements it writes, in up to three
    /// launches: the interior (every tap in range: affine indices, no tables), then the left and
    /// right strips over all rows, then the top and bottom strips between them, both through
    /// the tables. Kernel arguments: `buffers`, then the taps (interior) or `tables`, then
    /// `shape`, then the interior range and pads or the strip remappings.
    private func splitDispatch(
        on device: Device, program: OpenCLProgram, kernels: (interior: String, tables: String),
        buffers: [KernelArgument], tapWeights: OpenCLBuffer, tables: [KernelArgument], shape: [KernelArgument],
        planes: Int, interior: (rows: Range<Int>, columns: Range<Int>), extent: (rows: Int, columns: Int)
    ) throws {
        func launchTables(rows: Remap, columns: Remap) throws {
            try device.context.dispatch(
                kernels.tables, in: program, arguments: buffers + tables + shape + rows.arguments + columns.arguments,
                global: [columns.count, rows.count, planes])
        }
        // The interior kernels assume one stride and one tap vector for both axes.
        let square = rows.stride == columns.stride && rows.taps == columns.taps
        guard square, !interior.rows.isEmpty, !interior.columns.isEmpty else {
            try launchTables(rows: Remap(count: extent.rows), columns: Remap(count: extent.columns))
            return
        }
        try device.context.dispatch(
            kernels.interior, in: program,
            arguments: buffers + [.buffer(tapWeights)] + shape + [
                .int(interior.rows.lowerBound), .int(interior.rows.count), .int(interior.columns.lowerBound),
                .int(interior.columns.count), .int(rows.padBefore), .int(columns.padBefore),
            ],
            global: [interior.columns.count, interior.rows.count, planes])
        let sideColumns = Remap(around: interior.columns, count: extent.columns)
        if sideColumns.count > 0 {
            try launchTables(rows: Remap(count: extent.rows), columns: sideColumns)
        }
        let topAndBottom = Remap(around: interior.rows, count: extent.rows)
        if topAndBottom.count > 0 {
            try launchTables(
                rows: topAndBottom, columns: Remap(base: interior.columns.lowerBound, count: interior.columns.count))
        }
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

        var arguments: [KernelArgument] { [.int(count), .int(base), .int(split), .int(jump)] }
    }
}

