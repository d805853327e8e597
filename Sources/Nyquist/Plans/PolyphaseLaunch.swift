import NyquistCL
import NyquistCore

/// Launch parameters of the polyphase kernels (Kernels/aps.cl, Kernels/tips.cl), read through
/// ``Device/launchParameters(family:shapeClass:builtIn:accepts:)`` so a tuned database entry,
/// the built-in default and a test's override all take one path.
///
/// Two families:
/// * `aps` (APSPool2D): `groupSize` of aps_partial_norms (several work-groups per sample) and the work-group
///   shape of aps_gather / aps_scatter. Shape classes by the padded height, which sets how many
///   rows each aps_partial_norms item sums: "large" (>= 32 rows), "small".
/// * `tips-forward` (TIPSPool2D): `groupSize` of tips_forward (also compiled into the TIPS
///   backward kernels, tips_grad_tau and tips_backward_band) and `elementsPerGroup`, and
///   `bandElements` of the fused backward (not a tuner candidate: the tuner times the forward;
///   an override or database entry may set it). One shape class, "all": plane batching already
///   adapts to the plane size.
///
/// `groupSize` is a power of two (candidates 16 ... 256, capped by the device's maximum
/// work-group size). On PoCL's CPU device a work-group runs as a loop over its items on one
/// core, so the size mostly sets how finely a plane's rows are shared out. Measurements:
/// docs/kernels.md, docs/performance.md.
struct PolyphaseLaunch: Equatable {
    /// Items per work-group of the per-sample and per-plane kernels.
    var groupSize: Int
    /// tips_forward batches planes smaller than this many elements into one work-group, so
    /// that launching a work-group (microseconds on PoCL) does not dominate small maps.
    /// Candidates 1024 ... 16384; 1 gives one plane per work-group.
    var elementsPerGroup = 4096
    /// Work-group shape of aps_gather and aps_scatter (nil: the dispatch default, the driver's
    /// choice on a GPU and `OpenCLContext.canonicalLocalSize(for:)` elsewhere).
    var localSize: [Int]? = nil
    /// TIPS backward (tips_backward_band) gives each work-group about this many x' elements:
    /// bands of whole rows (at least 3) of one plane, or whole small planes batched; 0 takes
    /// the unfused passes (dz written to memory), as do maps whose band does not fit in local
    /// memory.
    var backwardBandElements = 4096

    /// Planes per work-group of tips_forward for planes of `planeElements` elements.
    func planesPerGroup(planeElements: Int) -> Int {
        max(1, elementsPerGroup / max(planeElements, 1))
    }

    /// The tuner and database name of the APSPool2D family.
    static let apsFamily = "aps"
    /// The tuner and database name of the TIPSPool2D forward family.
    static let tipsFamily = "tips-forward"
    /// The one shape class of ``tipsFamily``.
    static let tipsShapeClass = "all"

    /// The APS shape class of a map whose padded height is `height` rows.
    static func apsShapeClass(height: Int) -> String { height >= 32 ? "large" : "small" }

    /// The largest power of two up to `size` that `device` allows in one work-group.
    static func cappedGroupSize(_ size: Int, on device: Device) -> Int {
        var capped = size
        while capped > 1 && capped > device.info.maxWorkGroupSize { capped /= 2 }
        return capped
    }

    /// Built-in defaults. CPU devices (PoCL): groups of 64, tips_forward batching planes up to
    /// 4096 elements, the driver's gather/scatter groups (measured: docs/kernels.md). GPUs
    /// (unmeasured): groups of 256 and one plane per tips_forward group, since launching a
    /// work-group is cheap there and wider reductions fill the compute units.
    static func builtIn(family: String, on device: Device) -> LaunchParameters {
        let isGPU = device.info.isGPU
        let group = cappedGroupSize(isGPU ? 256 : 64, on: device)
        if family == tipsFamily { return LaunchParameters(groupSize: group, elementsPerGroup: isGPU ? 1 : 4096) }
        return LaunchParameters(groupSize: group)
    }

    /// Whether `parameters` set this family's knobs within what `device` allows.
    static func accepts(_ parameters: LaunchParameters, family: String, on device: Device) -> Bool {
        guard let group = parameters.groupSize, group <= device.info.maxWorkGroupSize else { return false }
        if family == tipsFamily { return parameters.elementsPerGroup != nil }
        return (parameters.localSize?.reduce(1, *) ?? 1) <= device.info.maxWorkGroupSize
    }

    /// Every candidate of `family` (the tuner times them, the parity tests run them all).
    static func candidates(family: String) -> [LaunchParameters] {
        if family == tipsFamily {
            return [16, 64, 128, 256].flatMap { group in
                [1, 1024, 4096, 16384].map { LaunchParameters(groupSize: group, elementsPerGroup: $0) }
            }
        }
        return [16, 32, 64, 128, 256].flatMap { group in
            [nil, [64, 1, 1], [16, 4, 1], [8, 8, 1]].map { LaunchParameters(localSize: $0, groupSize: group) }
        }
    }

    private static func choose(family: String, shapeClass: String, on device: Device) -> PolyphaseLaunch {
        let parameters = device.launchParameters(
            family: family, shapeClass: shapeClass, builtIn: builtIn(family: family, on: device),
            accepts: { accepts($0, family: family, on: device) })
        // accepts() guarantees the group size; the fallbacks only keep the types honest.
        return PolyphaseLaunch(
            groupSize: parameters.groupSize ?? cappedGroupSize(64, on: device),
            elementsPerGroup: parameters.elementsPerGroup ?? 4096, localSize: parameters.localSize,
            backwardBandElements: parameters.bandElements ?? 4096)
    }

    /// The TIPSPool2D choice for `device` (forward and backward share its program).
    static func choose(for device: Device) -> PolyphaseLaunch {
        choose(family: tipsFamily, shapeClass: tipsShapeClass, on: device)
    }

    /// The APSPool2D choice for `device` and a map whose padded height is `height` rows.
    static func chooseAPS(for device: Device, height: Int) -> PolyphaseLaunch {
        choose(family: apsFamily, shapeClass: apsShapeClass(height: height), on: device)
    }
}
