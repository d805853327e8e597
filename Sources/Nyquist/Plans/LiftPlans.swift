import NyquistCL
import NyquistCore

/// What a LiftPool plan is cached by besides the pass and the input shape: one configuration
/// serves the four layers, and the backward of LiftDownPool fixes two call values in its
/// launches (which upstream gradients it reads, and the scale of the regularisers' gradients).
struct LiftPlanConfiguration: Hashable, Sendable {
    /// The layer a plan belongs to.
    enum Layer: Hashable, Sendable {
        case down2D, down1D, up2D, up1D
    }

    let configuration: LiftPoolConfiguration
    let layer: Layer
    /// LiftDownPool backward: a bit per upstream gradient given, in the order of the backward's
    /// arguments (2-D: output, LL, LH, HL, HH; 1-D: output, s, d).
    var upstream = 0
}

/// The launches of LiftPool's plans (Kernels/lift_pool.cl), one function per layer and pass.
///
/// Buffer numbering, shared by every plan: 0-7 are the eight parameters in
/// ``LiftPoolParameters/names`` order (P's four, then U's), bound per call because
/// ``LiftPoolDeviceParameters/load(stateDict:)`` replaces them; the call's tensors follow from
/// 8, as each function lists.
enum LiftPlans {
    /// The number of the first tensor after the parameters.
    static let firstTensor = 8

    /// The parameters as the kernels' last eight arguments.
    static var parameters: [LaunchArgument] { (0..<firstTensor).map { .bound($0) } }

    /// The row and column passes of a 2-D layer over `shape` (the full-size map).
    static func passes2D(_ shape: Shape4D) -> (rows: LiftPass, columns: LiftPass) {
        let planes = shape.n * shape.c
        return (
            LiftPass(alongWidth: true, planes: planes, channels: shape.c, height: shape.h, width: shape.w),
            LiftPass(
                alongWidth: false, planes: planes, channels: shape.c, height: shape.h,
                width: LiftPoolConfiguration.bandLength(shape.w))
        )
    }

    /// The pass of a 1-D layer over `shape` (N x C x 1 x L, the full-size signal).
    static func pass1D(_ shape: Shape4D) -> LiftPass {
        LiftPass(alongWidth: true, planes: shape.n * shape.c, channels: shape.c, height: 1, width: shape.w)
    }

    // MARK: LiftDownPool2D

    /// Forward: the row lifting, then both column liftings in one kernel. `shape` is the input's.
    /// Buffers: 8 input, 9 s_h, 10 d_h, 11 LL, 12 LH, 13 HL, 14 HH, 15 y.
    static func down2DForward(_ configuration: LiftPoolConfiguration, _ shape: Shape4D, on device: Device) throws
        -> [PreparedLaunch]
    {
        let (rows, columns) = passes2D(shape)
        return [
            // d_h stands in for the unused y (sum 0).
            try rows.launch(
                "lift_down", [.bound(8), .bound(9), .bound(10), .bound(10), .int32(0)], inverse: false, configuration,
                on: device),
            try columns.launch("lift_down_pair", (9...15).map { .bound($0) }, inverse: false, configuration, on: device),
        ]
    }

    /// Training forward: the forward, then the regularisers' partial sums of the three
    /// liftings in one launch. Buffers: 8-15 as ``down2DForward(_:_:on:)``, 16 the partial sums
    /// (``regulariserPartials2D(_:)`` floats: the row lifting's, then (s_h -> LL, LH)'s, then
    /// (d_h -> HL, HH)'s).
    static func down2DTrainingForward(_ configuration: LiftPoolConfiguration, _ shape: Shape4D, on device: Device)
        throws -> [PreparedLaunch]
    {
        let (rows, columns) = passes2D(shape)
        let groups = rows.regulariserGroups + 2 * columns.regulariserGroups
        return try down2DForward(configuration, shape, on: device) + [
            try device.context.prepare(
                "lift_regulariser_partials_2d", in: try LiftPass.program(configuration, device),
                arguments: (8...14).map { .bound($0) }
                    + [.bound(16), .int(rows.regulariserGroups), .int(columns.regulariserGroups)]
                    + rows.geometry(inverse: false) + columns.geometry(inverse: false),
                global: [groups * LiftPass.group], local: [LiftPass.group])
        ]
    }

    /// The number of floats of ``down2DTrainingForward(_:_:on:)``'s partial sums for an input
    /// of `shape`.
    static func regulariserPartials2D(_ shape: Shape4D) -> Int {
        let (rows, columns) = passes2D(shape)
        return 2 * (rows.regulariserGroups + 2 * columns.regulariserGroups)
    }

    /// c_u and c_p of a 2-D LiftDownPool (each summed over its three liftings) from the partial
    /// sums of ``down2DTrainingForward(_:_:on:)``.
    static func regularisers2D(_ shape: Shape4D, partials: [Float]) -> (cu: Double, cp: Double) {
        let (rows, columns) = passes2D(shape)
        let high = 2 * (rows.regulariserGroups + columns.regulariserGroups)
        let sums = [
            rows.regularisers(partials[0..<2 * rows.regulariserGroups]),
            columns.regularisers(partials[2 * rows.regulariserGroups..<high]),
            columns.regularisers(partials[high...]),
        ]
        return (sums.reduce(0) { $0 + $1.cu }, sums.reduce(0) { $0 + $1.cp })
    }

    /// Backward: both column liftings (pair kernels), then the row lifting. `upstream` has a
    /// bit per given upstream gradient (output, LL, LH, HL, HH); a missing one's buffer is
    /// never read. Buffers: 8 input, 9 s_h, 10 d_h, 11 LL, 12 LH, 13 HL, 14 HH (saved),
    /// 15 gradOutput, 16 gradLL, 17 gradLH, 18 gradHL, 19 gradHH, 20 the gradient of s_h, 21 of
    /// d_h, 22 gradInput, 23-30 the parameters' gradients; the plan's temporaries 31-35, the
    /// gates of the s_h column lifting and then of the row lifting (s_h's size), and 36-40,
    /// those of the d_h column lifting (the bands' size; see
    /// ``LiftPass/backwardLaunches(_:accumulate:_:on:)``).
    static func down2DBackward(
        _ configuration: LiftPoolConfiguration, _ shape: Shape4D, upstream: Int, on device: Device
    ) throws -> CompiledPass {
        let (rows, columns) = passes2D(shape)
        let output = upstream & 1
        let low = LiftPass.BackwardBuffers(
            x: 9, s: 11, d: 12, gs: upstream & 2 != 0 ? 16 : nil, gd: upstream & 4 != 0 ? 17 : nil,
            gy: output != 0 ? 15 : nil, gx: 20, gradients: 23, gates: 31)
        let high = LiftPass.BackwardBuffers(
            x: 10, s: 13, d: 14, gs: upstream & 8 != 0 ? 18 : nil, gd: upstream & 16 != 0 ? 19 : nil,
            gy: output != 0 ? 15 : nil, gx: 21, gradients: 23, gates: 36)
        let row = LiftPass.BackwardBuffers(x: 8, s: 9, d: 10, gs: 20, gd: 21, gy: nil, gx: 22, gradients: 23, gates: 31)
        return CompiledPass(
            try columns.backwardLaunches([low, high], accumulate: false, configuration, on: device)
                + rows.backwardLaunches([row], accumulate: true, configuration, on: device),
            temporaries: gates(rows) + gates(columns))
    }

    // MARK: LiftDownPool1D

    /// Forward: one lifting that also writes y = s + d. `shape` is the input's (N x C x 1 x L).
    /// Buffers: 8 input, 9 s, 10 d, 11 y.
    static func down1DForward(_ configuration: LiftPoolConfiguration, _ shape: Shape4D, on device: Device) throws
        -> [PreparedLaunch]
    {
        [
            try pass1D(shape).launch(
                "lift_down", [.bound(8), .bound(9), .bound(10), .bound(11), .int32(1)], inverse: false, configuration,
                on: device)
        ]
    }

    /// Training forward: the forward and the regularisers' partial sums.
    /// Buffers: 8-11 as ``down1DForward(_:_:on:)``, 12 the partial sums.
    static func down1DTrainingForward(_ configuration: LiftPoolConfiguration, _ shape: Shape4D, on device: Device)
        throws -> [PreparedLaunch]
    {
        try down1DForward(configuration, shape, on: device) + [
            try pass1D(shape).regulariserLaunch(x: 8, s: 9, d: 10, partials: 12, configuration, on: device)
        ]
    }

    /// Backward; `upstream` has a bit per given upstream gradient (output, s, d).
    /// Buffers: 8 input, 9 s, 10 d (saved), 11 gradOutput, 12 gradS, 13 gradD, 14 gradInput,
    /// 15-22 the parameters' gradients; the plan's temporaries 23-27, the gates.
    static func down1DBackward(
        _ configuration: LiftPoolConfiguration, _ shape: Shape4D, upstream: Int, on device: Device
    ) throws -> CompiledPass {
        let buffers = LiftPass.BackwardBuffers(
            x: 8, s: 9, d: 10, gs: upstream & 2 != 0 ? 12 : nil, gd: upstream & 4 != 0 ? 13 : nil,
            gy: upstream & 1 != 0 ? 11 : nil, gx: 14, gradients: 15, gates: 23)
        let pass = pass1D(shape)
        return CompiledPass(
            try pass.backwardLaunches([buffers], accumulate: false, configuration, on: device),
            temporaries: gates(pass))
    }

    // MARK: LiftUpPool2D

    /// Forward (inference and training alike): both column inversions in one launch, then the
    /// row inversion. `shape` is the output's (the target size).
    /// Buffers: 8 LL, 9 LH, 10 HL, 11 HH, 12 s_h, 13 d_h, 14 output.
    static func up2DForward(_ configuration: LiftPoolConfiguration, _ shape: Shape4D, on device: Device) throws
        -> [PreparedLaunch]
    {
        let (rows, columns) = passes2D(shape)
        return [
            try columns.launch(
                "lift_up_pair", [8, 9, 12, 10, 11, 13].map { .bound($0) }, inverse: true, pair: true, configuration,
                on: device),
            try rows.launch("lift_up", [.bound(12), .bound(13), .bound(14)], inverse: true, configuration, on: device),
        ]
    }

    /// Backward: the row inversion's, then both column inversions' (pair kernels). `shape` is
    /// the output's. Buffers: 8 LL, 9 LH, 10 HL, 11 HH, 12 s_h, 13 d_h (saved), 14 gradOutput,
    /// 15 the gradient of s_h, 16 of d_h, 17-20 the bands' gradients, 21-28 the parameters'
    /// gradients; the plan's temporaries 29-33, the gates of the row inversion and then of the
    /// (LL, LH) inversion (s_h's size), and 34-38, those of the (HL, HH) inversion (the bands'
    /// size; see ``LiftPass/inverseBackwardLaunches(_:accumulate:_:on:)``).
    static func up2DBackward(_ configuration: LiftPoolConfiguration, _ shape: Shape4D, on device: Device) throws
        -> CompiledPass
    {
        let (rows, columns) = passes2D(shape)
        let row = LiftPass.InverseBackwardBuffers(s: 12, d: 13, gx: 14, gs: 15, gd: 16, gradients: 21, gates: 29)
        let low = LiftPass.InverseBackwardBuffers(s: 8, d: 9, gx: 15, gs: 17, gd: 18, gradients: 21, gates: 29)
        let high = LiftPass.InverseBackwardBuffers(s: 10, d: 11, gx: 16, gs: 19, gd: 20, gradients: 21, gates: 34)
        return CompiledPass(
            try rows.inverseBackwardLaunches([row], accumulate: false, configuration, on: device)
                + columns.inverseBackwardLaunches([low, high], accumulate: true, configuration, on: device),
            temporaries: gates(rows) + gates(columns))
    }

    // MARK: LiftUpPool1D

    /// Forward. `shape` is the output's (N x C x 1 x L). Buffers: 8 s, 9 d, 10 output.
    static func up1DForward(_ configuration: LiftPoolConfiguration, _ shape: Shape4D, on device: Device) throws
        -> [PreparedLaunch]
    {
        [try pass1D(shape).launch("lift_up", [.bound(8), .bound(9), .bound(10)], inverse: true, configuration, on: device)]
    }

    /// Backward. `shape` is the output's. Buffers: 8 s, 9 d, 10 gradOutput, 11 gradS,
    /// 12 gradD, 13-20 the parameters' gradients; the plan's temporaries 21-25, the gates.
    static func up1DBackward(_ configuration: LiftPoolConfiguration, _ shape: Shape4D, on device: Device) throws
        -> CompiledPass
    {
        let buffers = LiftPass.InverseBackwardBuffers(s: 8, d: 9, gx: 10, gs: 11, gd: 12, gradients: 13, gates: 21)
        let pass = pass1D(shape)
        return CompiledPass(
            try pass.inverseBackwardLaunches([buffers], accumulate: false, configuration, on: device),
            temporaries: gates(pass))
    }

    /// Element counts of the five gates of one lifting of `pass` (a backward's temporaries).
    static func gates(_ pass: LiftPass) -> [Int] {
        Array(repeating: pass.bandCount, count: 5)
    }
}

/// Geometry of one lifting pass over `planes` maps of height x width (the full-size side), along
/// W (rows) or H (columns): the 12 integer kernel arguments, the global sizes and the launches of
/// the pass.
struct LiftPass {
    let alongWidth: Bool
    let planes: Int
    let channels: Int
    let height: Int
    let width: Int

    /// Length L of the lifted axis and of its bands M.
    var length: Int { alongWidth ? width : height }
    var band: Int { LiftPoolConfiguration.bandLength(length) }
    var lines: Int { alongWidth ? height : width }

    /// (plane, line, step) strides of the full-size map and of the band map.
    var full: (Int, Int, Int) { (height * width, alongWidth ? width : 1, alongWidth ? 1 : width) }
    var bands: (Int, Int, Int) { alongWidth ? (height * band, band, 1) : (band * width, 1, width) }

    /// The geometry arguments; forward reads the full map and writes bands, inverse the opposite.
    func geometry(inverse: Bool) throws -> [LaunchArgument] {
        let (input, output) = inverse ? (bands, full) : (full, bands)
        return try [
            length, band, lines, planes, channels, alongWidth ? 1 : 0, input.0, input.1, input.2, output.0, output.1,
            output.2,
        ].map { try .int($0) }
    }

    /// The forward and inverse kernels: one work item per run of `run` band positions, (run,
    /// line) along W, (line, run) along H, then planes.
    func runGlobal(_ run: Int) -> [Int] {
        let runs = (band + run - 1) / run
        return alongWidth ? [runs, lines, planes] : [lines, runs, planes]
    }

    /// The per-position backward kernels: along W one work item per run of `run` positions (as
    /// `runGlobal`), along H one per group of `run` neighbouring lines at one position.
    func laneGlobal(_ run: Int) -> [Int] {
        alongWidth ? runGlobal(run) : [(lines + run - 1) / run, band, planes]
    }

    /// A launch of per-position kernel `kernel`: `leading` arguments, then the geometry and the
    /// parameters; RUN chosen for this pass's band length, over `runGlobal` (with `lanes`, the
    /// backward kernels: `laneGlobal`). With `pair` (the `_pair` kernels, two liftings of this
    /// geometry) the plane axis is twice the planes.
    func launch(
        _ kernel: String, _ leading: [LaunchArgument], inverse: Bool, lanes: Bool = false, pair: Bool = false,
        _ configuration: LiftPoolConfiguration, on device: Device
    ) throws -> PreparedLaunch {
        let run = LiftLaunch.choose(for: device, band: band).run
        var global = lanes ? laneGlobal(run) : runGlobal(run)
        if pair { global[2] *= 2 }
        return try device.context.prepare(
            kernel, in: try Self.program(configuration, device, run: run),
            arguments: leading + geometry(inverse: inverse) + LiftPlans.parameters, global: global)
    }

    /// A launch of parameter-gradient kernel `kernel`: one work group per channel, the
    /// reductions' program.
    func reductionLaunch(
        _ kernel: String, _ leading: [LaunchArgument], inverse: Bool, _ configuration: LiftPoolConfiguration,
        on device: Device
    ) throws -> PreparedLaunch {
        try device.context.prepare(
            kernel, in: try Self.program(configuration, device),
            arguments: leading + geometry(inverse: inverse) + LiftPlans.parameters,
            global: [Self.group * channels], local: [Self.group])
    }

    /// Work-group size of the reductions (LIFT_GROUP in the kernels).
    static let group = 64

    /// Number of band elements of this lifting (E, the regularisers' mean divisor).
    var bandCount: Int { planes * lines * band }

    /// Work groups of the regularisers' reduction (each writes two partial sums).
    var regulariserGroups: Int { min(64, (bandCount + Self.group - 1) / Self.group) }

    /// The partial sums of c_u and c_p of this lifting from x and its bands, into `partials`
    /// (2 ``regulariserGroups`` floats; buffer numbers as the plan's).
    func regulariserLaunch(x: Int, s: Int, d: Int, partials: Int, _ configuration: LiftPoolConfiguration, on device: Device)
        throws -> PreparedLaunch
    {
        try device.context.prepare(
            "lift_regulariser_partials", in: try Self.program(configuration, device),
            arguments: [.bound(x), .bound(s), .bound(d), .bound(partials)] + geometry(inverse: false),
            global: [regulariserGroups * Self.group], local: [Self.group])
    }

    /// c_u and c_p of this lifting (means over its band elements) from the partial sums its
    /// regulariser groups wrote (2 ``regulariserGroups`` floats), added in order in `Double`.
    func regularisers(_ partials: ArraySlice<Float>) -> (cu: Double, cp: Double) {
        var cu = 0.0
        var cp = 0.0
        let first = partials.startIndex
        for group in 0..<regulariserGroups {
            cu += Double(partials[first + 2 * group])
            cp += Double(partials[first + 2 * group + 1])
        }
        return (cu / Double(bandCount), cp / Double(bandCount))
    }

    /// Buffer numbers of the backward of one forward lifting x -> (s, d): upstream gradients
    /// (nil: not given, never read), the gradient of x, the first of the eight parameter
    /// gradients and the first of five gates of the band's shape.
    struct BackwardBuffers {
        let x, s, d: Int
        let gs, gd, gy: Int?
        let gx, gradients, gates: Int

        /// The kernels' flags: which upstream gradients are read.
        var flags: Int { (gs == nil ? 0 : 1) | (gd == nil ? 0 : 2) | (gy == nil ? 0 : 4) }
        /// The gates: U's pre-activation and gradient, P's pre-activation and gradient, gD.
        var updatePre: Int { gates }
        var updateGradient: Int { gates + 1 }
        var predictPre: Int { gates + 2 }
        var predictGradient: Int { gates + 3 }
        var detail: Int { gates + 4 }
    }

    /// Backward of one forward lifting x -> (s, d) of this geometry (one of `liftings`), or of
    /// two (the column liftings of a 2-D layer, which share gy and the parameter gradients) in
    /// the `_pair` kernels: writes the gradient of x and writes (or, with `accumulate`, adds)
    /// the parameter gradients. Four launches: U's gate, gD (and P's gate), parameters, gx;
    /// each gate is evaluated once per band position and read by its K neighbours.
    func backwardLaunches(
        _ liftings: [BackwardBuffers], accumulate: Bool, _ configuration: LiftPoolConfiguration,
        on device: Device
    ) throws -> [PreparedLaunch] {
        let pair = liftings.count == 2
        let suffix = pair ? "_pair" : ""
        let first = liftings[0]
        let count = Double(bandCount)
        // The regulariser loss's weight is the call's scalar 0.
        let scales: [LaunchArgument] = [
            .scaled(0, factor: 2 * configuration.lambdaU / count), .scaled(0, factor: 2 * configuration.lambdaP / count),
        ]
        // A missing upstream gradient binds s in its place (the flags say it is not read). The
        // pair kernels take each lifting's buffers and flags, then the shared gy.
        var upstream: [LaunchArgument] = []
        for b in liftings {
            upstream += [b.x, b.s, b.d, b.gs ?? b.s, b.gd ?? b.s].map { .bound($0) }
            if pair { upstream.append(try .int(b.flags)) }
        }
        upstream.append(.bound(first.gy ?? first.s))
        if !pair { upstream.append(try .int(first.flags)) }
        upstream += scales
        /// Each lifting's buffers in turn.
        func each(_ buffers: (BackwardBuffers) -> [Int]) -> [LaunchArgument] {
            liftings.flatMap(buffers).map { .bound($0) }
        }
        let gradients = (first.gradients..<first.gradients + 8).map { LaunchArgument.bound($0) }
        return [
            try launch(
                "lift_backward_update_gate" + suffix, upstream + each { [$0.updatePre, $0.updateGradient] },
                inverse: false, lanes: true, pair: pair, configuration, on: device),
            try launch(
                "lift_backward_detail" + suffix,
                upstream + each { [$0.updatePre, $0.updateGradient, $0.detail, $0.predictPre, $0.predictGradient] },
                inverse: false, lanes: true, pair: pair, configuration, on: device),
            try reductionLaunch(
                "lift_parameter_gradients" + suffix,
                upstream + each { [$0.updatePre, $0.updateGradient, $0.predictPre, $0.predictGradient] } + gradients
                    + [.int32(accumulate ? 1 : 0)],
                inverse: false, configuration, on: device),
            try launch(
                "lift_backward_input" + suffix, upstream + each { [$0.predictPre, $0.predictGradient, $0.detail, $0.gx] },
                inverse: false, lanes: true, pair: pair, configuration, on: device),
        ]
    }

    /// Buffer numbers of the backward of one inverse lifting (s, d) -> x: the bands, the
    /// gradient of x, the bands' gradients, the first of the eight parameter gradients and the
    /// first of five gates of the band's shape.
    struct InverseBackwardBuffers {
        let s, d, gx, gs, gd, gradients, gates: Int

        /// The gates: x_e, U's pre-activation and gradient, P's pre-activation and gradient.
        var even: Int { gates }
        var updatePre: Int { gates + 1 }
        var updateGradient: Int { gates + 2 }
        var predictPre: Int { gates + 3 }
        var predictGradient: Int { gates + 4 }
    }

    /// Backward of one inverse lifting (s, d) -> x of this geometry (one of `liftings`), or of
    /// two (the column inversions of a 2-D layer, which share the parameter gradients) in the
    /// `_pair` kernels: writes the gradients of s and d and writes (or adds) the parameter
    /// gradients. Five launches: x_e (and U's pre-activation), P's gate, gs (and U's gate), gd,
    /// parameters; each gate is evaluated once per band position.
    func inverseBackwardLaunches(
        _ liftings: [InverseBackwardBuffers], accumulate: Bool, _ configuration: LiftPoolConfiguration, on device: Device
    ) throws -> [PreparedLaunch] {
        let pair = liftings.count == 2
        let suffix = pair ? "_pair" : ""
        /// Each lifting's buffers in turn.
        func each(_ buffers: (InverseBackwardBuffers) -> [Int]) -> [LaunchArgument] {
            liftings.flatMap(buffers).map { .bound($0) }
        }
        let first = liftings[0].gradients
        let gradients = (first..<first + 8).map { LaunchArgument.bound($0) }
        return [
            try launch(
                "lift_up_even" + suffix, each { [$0.s, $0.d, $0.even, $0.updatePre] }, inverse: true, lanes: true,
                pair: pair, configuration, on: device),
            try launch(
                "lift_up_predict_gate" + suffix, each { [$0.even, $0.gx, $0.predictPre, $0.predictGradient] },
                inverse: true, lanes: true, pair: pair, configuration, on: device),
            try launch(
                "lift_up_backward_even" + suffix,
                each { [$0.predictPre, $0.predictGradient, $0.updatePre, $0.gx, $0.gs, $0.updateGradient] },
                inverse: true, lanes: true, pair: pair, configuration, on: device),
            try launch(
                "lift_up_backward_detail" + suffix, each { [$0.updatePre, $0.updateGradient, $0.gx, $0.gd] },
                inverse: true, lanes: true, pair: pair, configuration, on: device),
            try reductionLaunch(
                "lift_up_parameter_gradients" + suffix,
                each { [$0.even, $0.d, $0.predictPre, $0.predictGradient, $0.updatePre, $0.updateGradient] }
                    + gradients + [.int32(accumulate ? 1 : 0)],
                inverse: true, configuration, on: device),
        ]
    }

    /// The LiftPool program with RUN = `run`. Without `run` it is the reductions' program
    /// (parameter gradients, regularisers): their RUN is `LiftLaunch.reductionRun` whatever the
    /// knob says, because it sets the lanes the parameter-gradient sums are split over, so a
    /// tuned `run` would otherwise change the gradients' bits.
    static func program(_ configuration: LiftPoolConfiguration, _ device: Device, run: Int? = nil) throws
        -> OpenCLProgram
    {
        try device.program(
            "lift_pool.cl",
            defines: ["KERNEL_SIZE": configuration.kernelSize, "RUN": run ?? LiftLaunch.reductionRun])
    }

    /// Throws unless `tensor` has `shape` and lives on `device`.
    static func require(
        _ tensor: DeviceTensor, _ shape: [Int], device: Device, role: String,
        layer: String = LiftPoolConfiguration.operatorName
    ) throws {
        guard tensor.shape == shape else {
            throw NyquistError(.invalidShape, "\(layer): \(role) has shape \(tensor.shape), expected \(shape)")
        }
        guard tensor.device === device else {
            throw NyquistError(
                .invalidConfiguration, "\(layer): \(role) lives on \(tensor.device.name) but the parameters on \(device.name)")
        }
        guard tensor.count <= maximumDeviceElementCount else {
            throw NyquistError(.sizeLimit, "\(layer): \(role) \(shape) has more than 2^31 - 1 elements")
        }
    }
}

/// The launch choice of the LiftPool kernels (Kernels/lift_pool.cl): the `lift` family's knobs
/// (``LiftKnobs``), read through ``Device/knobs(_:family:shapeClass:)`` so a pin, a tuned
/// database entry and the built-in default all take one path. Shape classes by the band length
/// of a pass (each pass of a 2-D layer chooses for its own axis): "wide" (>= ``wideBand``
/// positions), "narrow".
enum LiftLaunch {
    /// The tuner and database name of the family.
    static let family = "lift"
    /// A band length of the "wide" class.
    static let wideBand = 16
    /// RUN of the reduction kernels, fixed (not a knob): the parameter-gradient sums visit a
    /// channel in units of this many lanes, so it fixes their order. 8, the CPU default `run`,
    /// so that CPUs build one program.
    static let reductionRun = 8

    /// The shape class of a pass whose bands are `band` positions long.
    static func shapeClass(band: Int) -> String { band >= wideBand ? "wide" : "narrow" }

    /// The choice for a pass whose bands are `band` positions long on `device`.
    static func choose(for device: Device, band: Int) -> LiftKnobs {
        device.knobs(LiftKnobs.self, family: family, shapeClass: shapeClass(band: band))
    }
}
