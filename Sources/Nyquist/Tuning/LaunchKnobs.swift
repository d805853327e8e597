import NyquistCL
import NyquistCore

/// The launch knobs of one kernel family: what the tuner searches, what a database entry holds
/// and what a test pins. Each family has a type of its own holding only the knobs it reads
/// (``WindowKnobs``, ``APSKnobs``, ``TIPSKnobs``, ``LiftKnobs``, ``AdaptiveKnobs``), so a
/// family can never read another family's knob, nor find one of its own unset.
///
/// A family reads its knobs through ``Device/knobs(_:family:shapeClass:)``: the knobs pinned
/// on the current task (``withPinnedKnobs(_:family:shapeClass:_:)``), else the device's tuning
/// database entry, else ``builtIn(shapeClass:on:)``; the first two only where they pass
/// ``isUsable(on:)``.
package protocol LaunchKnobs: Codable, Hashable, Sendable, CustomStringConvertible {
    /// The database names of the families that read these knobs (the first half of an entry's
    /// key, `family/shapeClass`).
    static var families: [String] { get }

    /// Every candidate the tuner times; each must give the same results (the parity and
    /// determinism tests run them all).
    static var candidates: [Self] { get }

    /// The knobs used for `shapeClass` on `device` when neither a pin nor the database gives
    /// usable ones.
    static func builtIn(shapeClass: String, on device: Device) -> Self

    /// Whether every knob lies in the range its kernels are written for, on any device (a
    /// database file or a pin may hold anything).
    var isUsable: Bool { get }

    /// Whether the knobs are usable (``isUsable``) and within what `device` allows, such as its
    /// largest work-group; the default is ``isUsable``.
    func isUsable(on device: Device) -> Bool
}

extension LaunchKnobs {
    package func isUsable(on device: Device) -> Bool { isUsable }

    /// The value of `key` in a database file's entries as these knobs; nil when it does not
    /// decode as them (the entry is then ignored).
    static func decodeEntry<Key: CodingKey>(from container: KeyedDecodingContainer<Key>, forKey key: Key)
        -> AnyLaunchKnobs?
    {
        (try? container.decode(Self.self, forKey: key)).map { AnyLaunchKnobs($0) }
    }
}

/// The knob type of every family, so that a database file's entries decode as their family's
/// knobs and a pin cannot put one family's knobs under another's name.
enum KnobFamilies {
    static let types: [any LaunchKnobs.Type] = [
        WindowKnobs.self, APSKnobs.self, TIPSKnobs.self, LiftKnobs.self, AdaptiveKnobs.self,
    ]

    /// The knob type of `family`; nil for a name no family has.
    static func type(of family: String) -> (any LaunchKnobs.Type)? {
        types.first { $0.families.contains(family) }
    }
}

/// Knobs of any family, for what holds several families' knobs at once (the database, the
/// pins, the tuner's candidates): equal only to knobs of the same type and values.
package struct AnyLaunchKnobs: Hashable, Sendable, Encodable, CustomStringConvertible {
    /// The family's knobs.
    package let base: any LaunchKnobs

    /// Wraps `knobs`.
    package init(_ knobs: some LaunchKnobs) {
        base = knobs
    }

    package static func == (lhs: AnyLaunchKnobs, rhs: AnyLaunchKnobs) -> Bool {
        AnyHashable(lhs.base) == AnyHashable(rhs.base)
    }

    package func hash(into hasher: inout Hasher) {
        hasher.combine(AnyHashable(base))
    }

    /// Encodes the knobs alone (a database entry's type follows from its key).
    package func encode(to encoder: any Encoder) throws {
        try base.encode(to: encoder)
    }

    package var description: String { base.description }
}

/// The knobs pinned on the current task, by database key: ahead of the database, visible only
/// inside ``withPinnedKnobs(_:families:shapeClasses:_:)`` on the task (or thread) that called it.
/// Part of every compiled plan's key (``TuningKey``), so that a plan built under pins is never
/// served outside them and a plan built without them never inside.
struct KnobPins: Hashable, Sendable {
    /// Pinned knobs by `family/shapeClass`.
    var entries: [String: AnyLaunchKnobs] = [:]

    /// The pins in effect.
    @TaskLocal static var current = KnobPins()
}

/// Runs `body` with `knobs` pinned for `shapeClass` of `family` on every device, ahead of the
/// tuning database: for the tuner's candidates and for tests that need one launch variant.
/// The pins hold only inside `body` and only on the calling task (a thread `body` starts does
/// not see them); pins set by an enclosing call stay in effect unless these replace them.
/// Throws when the knobs cannot be launched or are not `family`'s.
package func withPinnedKnobs<Knobs: LaunchKnobs, Result>(
    _ knobs: Knobs, family: String, shapeClass: String, _ body: () throws -> Result
) throws -> Result {
    try withPinnedKnobs(knobs, families: [family], shapeClasses: [shapeClass], body)
}

/// ``withPinnedKnobs(_:family:shapeClass:_:)`` for every shape class of every family given.
package func withPinnedKnobs<Knobs: LaunchKnobs, Result>(
    _ knobs: Knobs, families: [String], shapeClasses: [String], _ body: () throws -> Result
) throws -> Result {
    guard knobs.isUsable else {
        throw NyquistError(.invalidConfiguration, "launch knobs \(knobs) cannot be launched")
    }
    var pins = KnobPins.current
    for family in families {
        guard Knobs.families.contains(family) else {
            throw NyquistError(.invalidConfiguration, "\(Knobs.self) are not the launch knobs of family \(family)")
        }
        for shapeClass in shapeClasses {
            pins.entries[TuningDatabase.key(family: family, shapeClass: shapeClass)] = AnyLaunchKnobs(knobs)
        }
    }
    return try KnobPins.$current.withValue(pins, operation: body)
}

/// Range checks and launch-time clamping of a work-group size knob (nil: the dispatch's
/// choice, see `OpenCLContext.dispatch`), shared by the families that have one.
enum WorkGroupKnob {
    /// Whether `localSize` has 1 to 3 axes, each of 1 to 4096 items.
    static func isUsable(_ localSize: [Int]?) -> Bool {
        localSize.map { $0.count >= 1 && $0.count <= 3 && $0.allSatisfy { $0 >= 1 && $0 <= 4096 } } ?? true
    }

    /// Whether one work-group of `localSize` fits `device`.
    static func fits(_ localSize: [Int]?, on device: Device) -> Bool {
        (localSize?.reduce(1, *) ?? 1) <= device.info.maxWorkGroupSize
    }

    /// The local size for a launch over `global`, each axis clamped to the global size rounded
    /// up to a power of two (not to the size itself: a CPU driver compiles a kernel once per
    /// local size, so sizes that followed the shape would recompile for every small shape) and
    /// padded with 1s to its rank; nil leaves the choice to the dispatch.
    static func local(_ localSize: [Int]?, for global: [Int]) -> [Int]? {
        guard let localSize else { return nil }
        return global.indices.map { axis in
            min(axis < localSize.count ? localSize[axis] : 1, OpenCLContext.powerOfTwoCeiling(global[axis]))
        }
    }
}
