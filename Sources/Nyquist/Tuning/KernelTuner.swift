import NyquistCore

/// A kernel family the tuner can search: its knob type and candidates, its shape classes (each
/// with a representative input shape), and how to run the pass being tuned. ``WindowTuning``
/// and ``OperatorTuning`` declare every family; the family's plans read the knobs through
/// ``Device/knobs(_:family:shapeClass:)``.
package struct TunableFamily: Sendable {
    /// The family name, the first half of the database key.
    package let name: String
    /// Shape classes with the input shape (N, C, H, W) the tuner times them on.
    package let shapeClasses: [(name: String, inputShape: [Int])]
    /// Every candidate, all of the family's knob type; each must give the same results (the
    /// parity tests run them all).
    package let candidates: [AnyLaunchKnobs]
    /// Prepares the pass for `input` once (allocations, training forward) and returns the
    /// closure that runs only the timed kernels. Both run with the candidate pinned.
    package let prepare: @Sendable (_ input: DeviceTensor) throws -> () throws -> Void
    private let builtInKnobs: @Sendable (_ shapeClass: String, _ device: Device) -> AnyLaunchKnobs

    /// A family whose knobs are `Knobs` (candidates: `Knobs.candidates` unless given).
    package init<Knobs: LaunchKnobs>(
        name: String, knobs: Knobs.Type, shapeClasses: [(name: String, inputShape: [Int])],
        candidates: [Knobs] = Knobs.candidates,
        prepare: @escaping @Sendable (_ input: DeviceTensor) throws -> () throws -> Void
    ) {
        self.name = name
        self.shapeClasses = shapeClasses
        self.candidates = candidates.map { AnyLaunchKnobs($0) }
        self.prepare = prepare
        builtInKnobs = { AnyLaunchKnobs(Knobs.builtIn(shapeClass: $0, on: $1)) }
    }

    /// Whether `candidate` can run on `device` (e.g. a work-group size within its maximum);
    /// the tuner skips the others rather than time the built-in default under their name.
    package func accepts(_ candidate: AnyLaunchKnobs, on device: Device) -> Bool {
        candidate.base.isUsable(on: device)
    }

    /// The knobs this family uses for `shapeClass` on `device` when nothing is tuned.
    package func builtIn(shapeClass: String, on device: Device) -> AnyLaunchKnobs {
        builtInKnobs(shapeClass, device)
    }
}

/// Times every candidate of some kernel families on one device with profiling events and
/// keeps the fastest per shape class (in the spirit of CLBlast's tuning database).
package enum KernelTuner {
    /// One measured candidate.
    package struct Measurement: Sendable {
        /// The database key.
        package let key: String
        /// The candidate.
        package let knobs: AnyLaunchKnobs
        /// Median kernel time in seconds.
        package let seconds: Double
    }

    /// Tunes `families` on `device`: for each shape class, pins each candidate in turn
    /// (``withPinnedKnobs(_:family:shapeClass:_:)``), prepares and runs the pass `repeats`
    /// times after one warm-up, and keeps the candidate with the lowest median. Returns the
    /// database (existing entries of other families kept from `existing`) and every
    /// measurement.
    package static func tune(
        _ families: [TunableFamily], on device: Device, repeats: Int = 5, existing: TuningDatabase? = nil,
        progress: (String) -> Void = { _ in }
    ) throws -> (database: TuningDatabase, measurements: [Measurement]) {
        var database = existing ?? TuningDatabase(device: device.name)
        database.device = device.name
        var measurements: [Measurement] = []
        for family in families {
            for shapeClass in family.shapeClasses {
                let input = try DeviceTensor(
                    HostTensor(shape: shapeClass.inputShape, generator: { Float(($0 * 7919) % 1000) / 1000 - 0.5 }),
                    on: device)
                let key = TuningDatabase.key(family: family.name, shapeClass: shapeClass.name)
                var best: Measurement? = nil
                let candidates = family.candidates.filter { family.accepts($0, on: device) }
                for (index, candidate) in candidates.enumerated() {
                    progress(
                        "tuning \(family.name) / \(shapeClass.name) (\(shapeClass.inputShape.map(String.init).joined(separator: "x"))), "
                            + "candidate \(index + 1) of \(candidates.count): \(candidate)")
                    let seconds = try withPinnedKnobs(candidate.base, family: family.name, shapeClass: shapeClass.name) {
                        let run = try family.prepare(input)
                        _ = try device.measure(run)
                        var times: [Double] = []
                        for _ in 0..<max(repeats, 1) { times.append(try device.measure(run).kernelSeconds) }
                        times.sort()
                        return times[times.count / 2]
                    }
                    let measurement = Measurement(key: key, knobs: candidate, seconds: seconds)
                    measurements.append(measurement)
                    if measurement.seconds < best?.seconds ?? .infinity { best = measurement }
                }
                if let best { database.entries[best.key] = best.knobs }
            }
        }
        return (database, measurements)
    }

    /// Every tunable family: the window families (``WindowTuning``), then the polyphase,
    /// LiftPool and AdaptiveBlurPool families (``OperatorTuning``).
    package static func allFamilies() throws -> [TunableFamily] {
        try WindowTuning.families() + OperatorTuning.families()
    }

    /// Tunes `families` (default: ``allFamilies()``) on `device` and saves the result, merged
    /// with the entries of other families already in the file, to `path` (default: this
    /// device's file under the cache directory). Returns the path and every measurement.
    package static func tuneAndSave(
        _ families: [TunableFamily]? = nil, on device: Device, repeats: Int = 5, path: String? = nil,
        progress: (String) -> Void = { _ in }
    ) throws -> (path: String, measurements: [Measurement]) {
        guard let path = path ?? TuningDatabase.path(deviceName: device.name) else {
            throw NyquistError(
                .io, "no cache directory for the tuning database: set NYQUIST_CACHE_DIR, XDG_CACHE_HOME or HOME")
        }
        let existing = TuningDatabase.load(path: path, deviceName: device.name)
        let (database, measurements) = try tune(
            families ?? allFamilies(), on: device, repeats: repeats, existing: existing, progress: progress)
        try database.save(path: path)
        device.reloadTuningDatabase()
        return (path, measurements)
    }
}
