import NyquistCore

/// The launch choice of the polyphase kernels (Kernels/aps.cl, Kernels/tips.cl): the knobs of
/// the `aps` family (``APSKnobs``, APSPool2D) and of the `tips-forward` family (``TIPSKnobs``,
/// TIPSPool2D forward and backward), read through ``Device/knobs(_:family:shapeClass:)`` so a
/// pin, a tuned database entry and the built-in default all take one path.
enum PolyphaseLaunch {
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

    /// Whether `size` is a group size the polyphase kernels are written for: a power of two
    /// (their reductions halve it) up to 1024.
    static func isUsableGroupSize(_ size: Int) -> Bool {
        (1...1024).contains(size) && size & (size - 1) == 0
    }

    /// The TIPSPool2D choice for `device` (forward and backward share its program).
    static func choose(for device: Device) -> TIPSKnobs {
        device.knobs(TIPSKnobs.self, family: tipsFamily, shapeClass: tipsShapeClass)
    }

    /// The APSPool2D choice for `device` and a map whose padded height is `height` rows.
    static func chooseAPS(for device: Device, height: Int) -> APSKnobs {
        device.knobs(APSKnobs.self, family: apsFamily, shapeClass: apsShapeClass(height: height))
    }
}
