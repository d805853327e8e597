import NyquistCore

// The knobs of each kernel family (see ``LaunchKnobs``): their ranges, built-in defaults and
// tuner candidates. The plans read them through each family's one choice function
// (WindowLaunch.choose, PolyphaseLaunch.chooseAPS / choose, LiftLaunch.choose,
// AdaptiveLaunch.choose); measurements behind the defaults: docs/kernels.md, docs/performance.md.

/// The knobs of the window families (max pool, avg pool, BlurPool, MaxBlurPool; the families
/// of ``WindowLaunch``).
package struct WindowKnobs: LaunchKnobs {
    /// Consecutive outputs along W per work item: 1 (the one-element kernels) or 2, 4 or 8
    /// (the vector kernels).
    package var outputsPerItem: Int
    /// Work-group size per dimension, each clamped to the global size at launch (nil: the
    /// driver chooses).
    package var localSize: [Int]?
    /// Whether the vector kernels compute the left and right border columns themselves, one
    /// extra work item per row (true), or leave them to a separate launch of the table kernel
    /// (false); nil: the device type's default (``foldsSidesByDefault(isGPU:)``), so that
    /// entries written before this knob existed still read.
    package var foldedSides: Bool?
    /// Forward vector kernel (window-forward, max-blur-forward) only: consecutive output rows
    /// per work item, 1 to 8, which share the horizontal sums of the padded rows they have in
    /// common (Kernels/blur_pool.cl); nil: ``defaultRowsPerItem(isGPU:)``. Maps with fewer
    /// output rows take as many as they have.
    package var rowsPerItem: Int?

    /// Bundles the knobs.
    package init(
        outputsPerItem: Int, localSize: [Int]? = nil, foldedSides: Bool? = nil, rowsPerItem: Int? = nil
    ) {
        self.outputsPerItem = outputsPerItem
        self.localSize = localSize
        self.foldedSides = foldedSides
        self.rowsPerItem = rowsPerItem
    }

    package static var families: [String] { WindowLaunch.allCases.map(\.rawValue) }

    /// 1, 2, 4 or 8 outputs per work item, with the driver's work-group size, a row of up to 64
    /// work items, 16 x 4 tiles, or up to 64 x 8 (each clamped to the launch); the vector ones
    /// (2, 4, 8) both with the side columns folded into the vector kernel and with a separate
    /// strip launch.
    /// The forward vector kernels also with 2, 4 and 7 rows per item (in 64 x 8 groups with
    /// folded sides); every other candidate has one row per item.
    package static let candidates: [WindowKnobs] =
        [1, 2, 4, 8].flatMap { perItem in
            [nil, [64, 1, 1], [16, 4, 1], [64, 8, 1]].flatMap { local in
                (perItem > 1 ? [false, true] : [false]).map {
                    WindowKnobs(outputsPerItem: perItem, localSize: local, foldedSides: $0, rowsPerItem: 1)
                }
            }
        }
        + [4, 8].flatMap { perItem in
            [2, 4, 7].map {
                WindowKnobs(outputsPerItem: perItem, localSize: [64, 8, 1], foldedSides: true, rowsPerItem: $0)
            }
        }

    /// One default for every window family (the families differ in what they tune to, not in
    /// where they start). CPU devices (PoCL): vectors of 8 outputs along W (4 on narrow maps,
    /// where 8 would leave most columns to the border kernel), since PoCL runs the one-element
    /// kernels as scalar code, and work-groups of up to 64 x 8 vectors (the driver's choice is
    /// much slower for the backward on large maps), 7 rows per forward item. GPUs: vectors of 2
    /// outputs in 64 x 8 groups, one row per item, the choice closest to the best candidate in
    /// every window family and shape class when tuned on an NVIDIA H200 (docs/performance.md,
    /// "GPU figures").
    package static func builtIn(shapeClass: String, on device: Device) -> WindowKnobs {
        let isGPU = device.info.isGPU
        return WindowKnobs(
            outputsPerItem: isGPU ? 2 : shapeClass == "narrow" ? 4 : 8, localSize: [64, 8, 1],
            foldedSides: foldsSidesByDefault(isGPU: isGPU), rowsPerItem: defaultRowsPerItem(isGPU: isGPU))
    }

    /// Whether the vector kernels compute the side columns themselves when the knobs leave it
    /// open. CPUs (PoCL): yes; a separate strip launch re-reads the first and last cache lines
    /// of every row after the interior has evicted them, and folding was faster in most window
    /// cells of the ResNet shapes (docs/performance.md). GPUs: no, the configuration the H200
    /// figures were measured with (folding is unmeasured there; `--tune` times both).
    static func foldsSidesByDefault(isGPU: Bool) -> Bool { !isGPU }

    /// Rows per forward vector item when the knobs leave it open. CPUs (PoCL): 7, which divides
    /// the output heights of the ResNet stages (56, 28, 14, 7), cuts the horizontal work per
    /// output row from 4 tap rows to about 2.3 (k 4) and amortises each item's table reads and
    /// side columns; it beat 1, 2 and 4 on 1x64x56x56 (commit message of this change). GPUs: 1,
    /// the configuration the H200 figures were measured with (`--tune` times the candidates).
    static func defaultRowsPerItem(isGPU: Bool) -> Int { isGPU ? 1 : 7 }

    package var isUsable: Bool {
        [1, 2, 4, 8].contains(outputsPerItem) && WorkGroupKnob.isUsable(localSize)
            && (rowsPerItem.map { (1...8).contains($0) } ?? true)
    }

    package var description: String {
        var parts = ["outputsPerItem \(outputsPerItem)", "local " + (localSize.map { "\($0)" } ?? "driver")]
        if let foldedSides { parts.append(foldedSides ? "folded sides" : "separate sides") }
        if let rowsPerItem { parts.append("rows \(rowsPerItem)") }
        return parts.joined(separator: ", ")
    }

    /// The local size for a launch over `global` (see ``WorkGroupKnob/local(_:for:)``).
    func local(for global: [Int]) -> [Int]? { WorkGroupKnob.local(localSize, for: global) }
}

/// The knobs of the APSPool2D family (`aps`, Kernels/aps.cl): shape classes by the padded
/// height, which sets how many rows each aps_partial_norms item sums: "large" (>= 32 rows),
/// "small".
package struct APSKnobs: LaunchKnobs {
    /// Items per work-group of aps_partial_norms (GROUP_SIZE, several work-groups per sample):
    /// a power of two. On PoCL's CPU device a work-group runs as a loop over its items on one
    /// core, so the size mostly sets how finely a plane's rows are shared out.
    package var groupSize: Int
    /// Work-group shape of aps_gather and aps_scatter (nil: the dispatch default, the driver's
    /// choice on a GPU and `OpenCLContext.canonicalLocalSize(for:)` elsewhere).
    package var localSize: [Int]?

    /// Bundles the knobs.
    package init(groupSize: Int, localSize: [Int]? = nil) {
        self.groupSize = groupSize
        self.localSize = localSize
    }

    package static var families: [String] { [PolyphaseLaunch.apsFamily] }

    /// Group sizes 16 ... 256, each with the driver's gather/scatter groups, 64 x 1, 16 x 4
    /// and 8 x 8.
    package static let candidates: [APSKnobs] = [16, 32, 64, 128, 256].flatMap { group in
        [nil, [64, 1, 1], [16, 4, 1], [8, 8, 1]].map { APSKnobs(groupSize: group, localSize: $0) }
    }

    /// CPU devices (PoCL): groups of 64 and the driver's gather/scatter groups (measured:
    /// docs/kernels.md). GPUs (unmeasured): groups of 256, since wider reductions fill the
    /// compute units. Both capped by the device's largest work-group.
    package static func builtIn(shapeClass: String, on device: Device) -> APSKnobs {
        APSKnobs(groupSize: PolyphaseLaunch.cappedGroupSize(device.info.isGPU ? 256 : 64, on: device))
    }

    package var isUsable: Bool {
        PolyphaseLaunch.isUsableGroupSize(groupSize) && WorkGroupKnob.isUsable(localSize)
    }

    package func isUsable(on device: Device) -> Bool {
        isUsable && groupSize <= device.info.maxWorkGroupSize && WorkGroupKnob.fits(localSize, on: device)
    }

    package var description: String {
        ((localSize.map { ["local \($0)"] } ?? []) + ["group \(groupSize)"]).joined(separator: ", ")
    }

    /// The local size of a gather or scatter launch over `global`.
    func local(for global: [Int]) -> [Int]? { WorkGroupKnob.local(localSize, for: global) }
}

/// The knobs of the TIPSPool2D family (`tips-forward`, Kernels/tips.cl), one shape class
/// "all": plane batching already adapts to the plane size, and the backward kernels share the
/// forward's program and choose without a shape.
package struct TIPSKnobs: LaunchKnobs {
    /// Items per work-group of tips_forward (GROUP_SIZE, also compiled into the backward
    /// kernels tips_grad_tau and tips_backward_band): a power of two.
    package var groupSize: Int
    /// tips_forward batches planes smaller than this many elements into one work-group, so
    /// that launching a work-group (microseconds on PoCL) does not dominate small maps; 1
    /// gives one plane per work-group.
    package var elementsPerGroup: Int
    /// x' elements per work-group of the fused backward (tips_backward_band): bands of whole
    /// rows (at least 3) of one plane, or whole small planes batched; 0 takes the unfused
    /// passes (dz written to memory), as do maps whose band does not fit in local memory.
    /// nil: ``defaultBandElements``. Not a tuner candidate (the tuner times the forward); a
    /// pin or database entry may set it.
    package var bandElements: Int?

    /// Bundles the knobs.
    package init(groupSize: Int, elementsPerGroup: Int, bandElements: Int? = nil) {
        self.groupSize = groupSize
        self.elementsPerGroup = elementsPerGroup
        self.bandElements = bandElements
    }

    /// The fused backward's band size when the knobs leave it open.
    static let defaultBandElements = 4096

    package static var families: [String] { [PolyphaseLaunch.tipsFamily] }

    /// Group sizes 16, 64, 128, 256, each batching planes of up to 1 (none), 1024, 4096 and
    /// 16384 elements.
    package static let candidates: [TIPSKnobs] = [16, 64, 128, 256].flatMap { group in
        [1, 1024, 4096, 16384].map { TIPSKnobs(groupSize: group, elementsPerGroup: $0) }
    }

    /// CPU devices (PoCL): groups of 64, batching planes up to 4096 elements (measured:
    /// docs/kernels.md). GPUs (unmeasured): groups of 256 and one plane per group, since
    /// launching a work-group is cheap there and wider reductions fill the compute units. Both
    /// capped by the device's largest work-group.
    package static func builtIn(shapeClass: String, on device: Device) -> TIPSKnobs {
        let isGPU = device.info.isGPU
        return TIPSKnobs(
            groupSize: PolyphaseLaunch.cappedGroupSize(isGPU ? 256 : 64, on: device), elementsPerGroup: isGPU ? 1 : 4096)
    }

    package var isUsable: Bool {
        PolyphaseLaunch.isUsableGroupSize(groupSize) && (1...(1 << 20)).contains(elementsPerGroup)
            && (bandElements.map { (0...(1 << 20)).contains($0) } ?? true)
    }

    package func isUsable(on device: Device) -> Bool { isUsable && groupSize <= device.info.maxWorkGroupSize }

    package var description: String {
        (["group \(groupSize)", "elements/group \(elementsPerGroup)"]
            + (bandElements.map { ["band elements \($0)"] } ?? [])).joined(separator: ", ")
    }

    /// The fused backward's band size (``bandElements``, else the default).
    var backwardBandElements: Int { bandElements ?? Self.defaultBandElements }

    /// Planes per work-group of tips_forward for planes of `planeElements` elements.
    func planesPerGroup(planeElements: Int) -> Int {
        max(1, elementsPerGroup / max(planeElements, 1))
    }
}

/// The knobs of the LiftPool family (`lift`, Kernels/lift_pool.cl): shape classes by the band
/// length of a pass (each pass of a 2-D layer chooses for its own axis), "wide" (>= 16
/// positions) and "narrow" (where a long run leaves few work items).
package struct LiftKnobs: LaunchKnobs {
    /// Band positions per work item of the forward and inverse kernels (RUN of lift_down,
    /// lift_down_pair and lift_up), held as one vector of `run` lanes (float, float2, float4 or
    /// float8; the backward kernels use the same lanes, along H across `run` neighbouring
    /// columns). Each item evaluates the inner step (P for a forward lifting, U for an inverse
    /// one) on the run plus a K/2 halo each side, so the inner step costs about
    /// (run + K - 1) / run evaluations per band position instead of K, in vectors; larger runs
    /// cut that recomputation and widen the vectors but give fewer work items (and, along W,
    /// less coalescing on GPUs).
    package var run: Int

    /// Bundles the knob.
    package init(run: Int) {
        self.run = run
    }

    package static var families: [String] { [LiftLaunch.family] }

    /// Runs of 1, 2, 4 and 8.
    package static let candidates = [1, 2, 4, 8].map { LiftKnobs(run: $0) }

    /// CPU devices (PoCL): runs of 8 (measured: docs/kernels.md). GPUs: runs of 2, trading some
    /// recomputation for more work items and shorter strides between neighbouring items along
    /// W (docs/performance.md, "GPU figures").
    package static func builtIn(shapeClass: String, on device: Device) -> LiftKnobs {
        LiftKnobs(run: device.info.isGPU ? 2 : 8)
    }

    package var isUsable: Bool { [1, 2, 4, 8].contains(run) }

    package var description: String { "run \(run)" }
}

/// The knobs of the AdaptiveBlurPool family (`adaptive-forward`, the predictor kernels of
/// Kernels/adaptive_blur_pool.cl), one shape class "all": the training kernels choose without
/// knowing the map size, and must agree with the forward.
package struct AdaptiveKnobs: LaunchKnobs {
    /// Whether the register-tiled predictor runs (adaptive_forward_tiled,
    /// adaptive_predictor_full_tiled), where P = G*k*k allows it (see
    /// ``AdaptiveLaunch/tiledChannelLimit``); otherwise the one-position kernels.
    package var tiled: Bool
    /// Output positions per work item of the tiled predictor (POSITIONS, rows of one column):
    /// 1 to 4.
    package var positions: Int
    /// float8 blocks of predictor channels per register tile (OUT_VECTORS): 1 to 4;
    /// positions x outVectors accumulators plus outVectors weights must fit the vector
    /// registers (16 on AVX2: 4 x 3 = 12 + 3).
    package var outVectors: Int
    /// Work-group shape of the forward kernels, 3 axes (nil: the runtime's choice; the tiled
    /// kernels use no local memory, so on PoCL's CPU device it only sets the scheduling grain).
    package var localSize: [Int]?
    /// Whether backward runs the row-walking input and weight gradient kernels (fast on PoCL)
    /// or the one-element ones (coalesced on GPUs); nil: follows the device type. Not a tuner
    /// candidate (the tuner times the forward); a pin or database entry may set it.
    package var rowGradients: Bool?

    /// Bundles the knobs.
    package init(tiled: Bool, positions: Int, outVectors: Int, localSize: [Int]? = nil, rowGradients: Bool? = nil) {
        self.tiled = tiled
        self.positions = positions
        self.outVectors = outVectors
        self.localSize = localSize
        self.rowGradients = rowGradients
    }

    package static var families: [String] { [AdaptiveLaunch.family] }

    /// The one-position kernels, and register tiles of positions x outVectors that fit 16
    /// vector registers (positions x outVectors + outVectors <= 16).
    package static let candidates: [AdaptiveKnobs] =
        [AdaptiveKnobs(tiled: false, positions: 1, outVectors: 1)]
        + [(1, 1), (2, 2), (2, 4), (3, 2), (3, 3), (4, 1), (4, 2), (4, 3)].map {
            AdaptiveKnobs(tiled: true, positions: $0.0, outVectors: $0.1)
        }

    /// 4 positions x 3 vectors, the driver's groups, on every device: the fastest candidate on
    /// PoCL (docs/kernels.md) and on an NVIDIA H200 (docs/performance.md, "GPU figures").
    package static func builtIn(shapeClass: String, on device: Device) -> AdaptiveKnobs {
        AdaptiveKnobs(tiled: true, positions: 4, outVectors: 3)
    }

    package var isUsable: Bool {
        (1...4).contains(positions) && (1...4).contains(outVectors)
            && (localSize.map { $0.count == 3 } ?? true) && WorkGroupKnob.isUsable(localSize)
    }

    package var description: String {
        var parts = localSize.map { ["local \($0)"] } ?? []
        parts += [tiled ? "tiled" : "untiled", "positions \(positions)", "outVectors \(outVectors)"]
        if let rowGradients { parts.append(rowGradients ? "row gradients" : "element gradients") }
        return parts.joined(separator: ", ")
    }
}
