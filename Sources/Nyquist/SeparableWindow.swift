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
        let program = try device.program("blur_pool.cl", defines: ["TAPS": rows.taps.count, "MAX_MAP": maxMap ? 1 : 0])
        try device.context.dispatch(
            "weighted_window_forward", in: program,
            arguments: [
                .buffer(input.buffer), .buffer(output.buffer),
                .buffer(rowTables.source), .buffer(rowTables.weight),
                .buffer(columnTables.source), .buffer(columnTables.weight),
                .int(planes), .int(inputHeight), .int(inputWidth), .int(rows.outputSize), .int(columns.outputSize),
            ],
            global: [columns.outputSize, rows.outputSize, planes])
    }

    /// gradMap = adjoint of the window applied to gradOutput (gradMap has the filtered map's size).
    func backward(_ gradOutput: DeviceTensor, into gradMap: DeviceTensor, planes: Int) throws {
        let device = gradOutput.device
        let rowTables = try device.axisTables(rows)
        let columnTables = try device.axisTables(columns)
        let program = try device.program(
            "blur_pool.cl", defines: ["FAN_IN_ROWS": rowTables.fanIn, "FAN_IN_COLS": columnTables.fanIn])
        try device.context.dispatch(
            "weighted_window_backward", in: program,
            arguments: [
                .buffer(gradOutput.buffer), .buffer(gradMap.buffer),
                .buffer(rowTables.target), .buffer(rowTables.targetWeight),
                .buffer(columnTables.target), .buffer(columnTables.targetWeight),
                .int(planes), .int(rows.inputSize), .int(columns.inputSize), .int(rows.outputSize),
                .int(columns.outputSize),
            ],
            global: [columns.inputSize, rows.inputSize, planes])
    }
}
