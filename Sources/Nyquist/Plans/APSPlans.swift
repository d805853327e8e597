import NyquistCL
import NyquistCore

// APSPool2D's launches (their buffer numbering is part of each builder's contract).

extension APSPool2D {

    /// The forward launches: the blur (when configured), the phase choice (when `choosing`),
    /// then the gather. Buffers (shared with ``chooseLaunches(_:input:on:)``): 0 input, 1 the
    /// blurred input (a temporary; without a blur the input again, and unbound), 2 indices,
    /// 3 partial norms (a temporary of ``partialNormsTemporary(_:on:)``; bound only when
    /// choosing), 4 output.
    static func forwardLaunches(
        _ configuration: APSPool2DConfiguration, input: Shape4D, output: Shape4D, choosing: Bool, on device: Device
    ) throws -> [PreparedLaunch] {
        let (launch, program) = try launchAndProgram(configuration, input: input, on: device)
        let source: LaunchArgument = configuration.blur == nil ? .bound(0) : .bound(1)
        let global = [(output.w + 7) / 8, output.h, input.n * input.c]
        let gather = try device.context.prepare(
            "aps_gather", in: program,
            arguments: [
                source, .bound(2), .bound(4), .int(input.n * input.c), .int(input.c), .int(input.h), .int(input.w),
                .int(output.h), .int(output.w),
            ],
            global: global, local: launch.local(for: global))
        let before = try choosing
            ? chooseLaunches(configuration, input: input, on: device) : blurLaunches(configuration, input, device)
        return before + [gather]
    }

    /// The blur (when configured), then each sample's phase in two launches: partial norms
    /// from `chunks` work-groups per sample, then one item per sample joins them in chunk order
    /// and takes the argmax. One work-group per sample would leave all but N of a GPU's compute
    /// units idle. Buffers: 0 input, 1 the blurred input, 2 indices, 3 partial norms.
    static func chooseLaunches(_ configuration: APSPool2DConfiguration, input: Shape4D, on device: Device)
        throws -> [PreparedLaunch]
    {
        let (launch, program) = try launchAndProgram(configuration, input: input, on: device)
        let source: LaunchArgument = configuration.blur == nil ? .bound(0) : .bound(1)
        let group = launch.groupSize
        let chunks = chunksPerSample(input, groupSize: group, computeUnits: device.info.computeUnits)
        let norms = try device.context.prepare(
            "aps_partial_norms", in: program,
            arguments: [source, .bound(3), .int(input.c), .int(input.h), .int(input.w)],
            global: [chunks * group, input.n], local: [group, 1])
        let pick = try device.context.prepare(
            "aps_pick", in: program, arguments: [.bound(3), .bound(2), .int(input.n), .int(chunks)], global: [input.n])
        return try blurLaunches(configuration, input, device) + [norms, pick]
    }

    /// The backward launches: the gather's adjoint, then the blur's adjoint (when configured).
    /// Buffers: 0 the blurred input's gradient (a temporary; without a blur unbound),
    /// 1 gradInput, 2 indices, 3 gradOutput.
    static func backwardLaunches(_ configuration: APSPool2DConfiguration, input: Shape4D, on device: Device)
        throws -> [PreparedLaunch]
    {
        let (launch, program) = try launchAndProgram(configuration, input: input, on: device)
        let output = try configuration.outputShape(for: input)
        let global = [(input.w + 15) / 16, input.h, input.n * input.c]
        let scatter = try device.context.prepare(
            "aps_scatter", in: program,
            arguments: [
                .bound(3), .bound(2), configuration.blur == nil ? .bound(1) : .bound(0), .int(input.n * input.c),
                .int(input.c), .int(input.h), .int(input.w), .int(output.h), .int(output.w),
            ],
            global: global, local: launch.local(for: global))
        guard let blur = configuration.blur else { return [scatter] }
        // The window's adjoint reads buffer 0 and writes buffer 1, as numbered here.
        let window = try BlurPool2D.window(
            blur, mapHeight: input.h, mapWidth: input.w, output: try blur.outputShape(for: input))
        return [scatter] + (try window.backwardLaunches(on: device, planes: input.n * input.c))
    }

    /// The blur's launches from buffer 0 into buffer 1 (none without a blur). The blur is
    /// stride 1 with circular padding: its output has the input's shape.
    static func blurLaunches(_ configuration: APSPool2DConfiguration, _ input: Shape4D, _ device: Device)
        throws -> [PreparedLaunch]
    {
        guard let blur = configuration.blur else { return [] }
        let window = try BlurPool2D.window(
            blur, mapHeight: input.h, mapWidth: input.w, output: try blur.outputShape(for: input))
        return try window.forwardLaunches(
            on: device, planes: input.n * input.c, inputHeight: input.h, inputWidth: input.w, maxMap: false)
    }

    /// The launch knobs for `input` and the program they select.
    static func launchAndProgram(_ configuration: APSPool2DConfiguration, input: Shape4D, on device: Device)
        throws -> (APSKnobs, OpenCLProgram)
    {
        let launch = PolyphaseLaunch.chooseAPS(for: device, height: input.h + input.h % 2)
        let norm: Int
        switch configuration.norm {
        case .l2: norm = 0
        case .l1: norm = 1
        case .linf: norm = 2
        }
        return (launch, try device.program("aps.cl", defines: ["GROUP_SIZE": launch.groupSize, "NORM": norm]))
    }
}
