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
    ///
    /// Up to three launches: the interior (every tap in range: affine indices, no tables), then
    /// the left and right strips over all rows, then the top and bottom strips between them.
    func forward(
        _ input: DeviceTensor, into output: DeviceTensor, planes: Int, inputHeight: Int, inputWidth: Int, maxMap: Bool
    ) throws {
        let device = input.device
        let rowTables = try device.axisTables(rows)
        let columnTables = try device.axisTables(columns)
        let program = try device.program(
            "blur_pool.cl", defines: ["TAPS": rows.taps.count, "MAX_MAP": maxMap ? 1 : 0, "STRIDE": rows.stride])
        let shape: [KernelArgument] = [
            .int(planes), .int(inputHeight), .int(inputWidth), .int(rows.outputSize), .int(columns.outputSize),
        ]
        let interiorRows = rowTables.interior
        let interiorColumns = columnTables.interior
        // The interior kernel assumes one stride and one tap vector for both axes.
        let square = rows.stride == columns.stride && rows.taps == columns.taps
        guard square, !interiorRows.isEmpty, !interiorColumns.isEmpty else {
            try dispatchTables(
                program, input, output, rowTables, columnTables, shape, planes: planes,
                rows: Remap(count: rows.outputSize), columns: Remap(count: columns.outputSize))
            return
        }
        try device.context.dispatch(
            "weighted_window_interior", in: program,
            arguments: [.buffer(input.buffer), .buffer(output.buffer), .buffer(rowTables.tapWeights)] + shape + [
                .int(interiorRows.lowerBound), .int(interiorRows.count), .int(interiorColumns.lowerBound),
                .int(interiorColumns.count), .int(rows.padBefore), .int(columns.padBefore),
            ],
            global: [interiorColumns.count, interiorRows.count, planes])
        let sideColumns = Remap(around: interiorColumns, count: columns.outputSize)
        if sideColumns.count > 0 {
            try dispatchTables(
                program, input, output, rowTables, columnTables, shape, planes: planes,
                rows: Remap(count: rows.outputSize), columns: sideColumns)
        }
        let topAndBottom = Remap(around: interiorRows, count: rows.outputSize)
        if topAndBottom.count > 0 {
            try dispatchTables(
                program, input, output, rowTables, columnTables, shape, planes: planes, rows: topAndBottom,
                columns: Remap(base: interiorColumns.lowerBound, count: interiorColumns.count))
        }
    }

    /// Work-item index k covers output base + k + (k >= split ? jump : 0).
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

    private func dispatchTables(
        _ program: OpenCLProgram, _ input: DeviceTensor, _ output: DeviceTensor, _ rowTables: AxisTableBuffers,
        _ columnTables: AxisTableBuffers, _ shape: [KernelArgument], planes: Int, rows: Remap, columns: Remap
    ) throws {
        try input.device.context.dispatch(
            "weighted_window_forward", in: program,
            arguments: [
                .buffer(input.buffer), .buffer(output.buffer),
                .buffer(rowTables.source), .buffer(rowTables.weight),
                .buffer(columnTables.source), .buffer(columnTables.weight),
            ] + shape + rows.arguments + columns.arguments,
            global: [columns.count, rows.count, planes])
    }

    /// gradMap = adjoint of the window applied to gradOutput (gradMap has the filtered map's
    /// size), split into interior and border strips as ``forward(_:into:planes:inputHeight:inputWidth:maxMap:)``.
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
        let shape: [KernelArgument] = [
            .int(planes), .int(rows.inputSize), .int(columns.inputSize), .int(rows.outputSize), .int(columns.outputSize),
        ]
        let interiorRows = rowTables.backwardInterior
        let interiorColumns = columnTables.backwardInterior
        let square = rows.stride == columns.stride && rows.taps == columns.taps
        guard square, !interiorRows.isEmpty, !interiorColumns.isEmpty else {
            try dispatchBackwardTables(
                program, gradOutput, gradMap, rowTables, columnTables, shape, planes: planes,
                rows: Remap(count: rows.inputSize), columns: Remap(count: columns.inputSize))
            return
        }
        try device.context.dispatch(
            "weighted_window_backward_interior", in: program,
            arguments: [.buffer(gradOutput.buffer), .buffer(gradMap.buffer), .buffer(rowTables.tapWeights)] + shape + [
                .int(interiorRows.lowerBound), .int(interiorRows.count), .int(interiorColumns.lowerBound),
                .int(interiorColumns.count), .int(rows.padBefore), .int(columns.padBefore),
            ],
            global: [interiorColumns.count, interiorRows.count, planes])
        let sideColumns = Remap(around: interiorColumns, count: columns.inputSize)
        if sideColumns.count > 0 {
            try dispatchBackwardTables(
                program, gradOutput, gradMap, rowTables, columnTables, shape, planes: planes,
                rows: Remap(count: rows.inputSize), columns: sideColumns)
        }
        let topAndBottom = Remap(around: interiorRows, count: rows.inputSize)
        if topAndBottom.count > 0 {
            try dispatchBackwardTables(
                program, gradOutput, gradMap, rowTables, columnTables, shape, planes: planes, rows: topAndBottom,
                columns: Remap(base: interiorColumns.lowerBound, count: interiorColumns.count))
        }
    }

    private func dispatchBackwardTables(
        _ program: OpenCLProgram, _ gradOutput: DeviceTensor, _ gradMap: DeviceTensor, _ rowTables: AxisTableBuffers,
        _ columnTables: AxisTableBuffers, _ shape: [KernelArgument], planes: Int, rows: Remap, columns: Remap
    ) throws {
        try gradOutput.device.context.dispatch(
            "weighted_window_backward", in: program,
            arguments: [
                .buffer(gradOutput.buffer), .buffer(gradMap.buffer),
                .buffer(rowTables.target), .buffer(rowTables.targetWeight),
                .buffer(columnTables.target), .buffer(columnTables.targetWeight),
            ] + shape + rows.arguments + columns.arguments,
            global: [columns.count, rows.count, planes])
    }
}

