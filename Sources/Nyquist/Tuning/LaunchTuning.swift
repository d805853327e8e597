import Foundation
import NyquistCL
import NyquistCore

/// How one kernel family is launched on a device: the knobs the tuner searches.
///
/// Each family reads these through one "choose launch parameters" function (see
/// ``Device/launchParameters(family:shapeClass:builtIn:)``) so that a tuned database entry, a
/// built-in default and a test's override all go through the same path.
package struct LaunchParameters: Codable, Hashable, Sendable, CustomStringConvertible {
    /// Consecutive outputs along W per work item (1: the one-element kernels; 2, 4 or 8: the
    /// vector kernels of the window families).
    package var outputsPerItem: Int
    /// Work-group size per dimension, each clamped to the global size at launch (nil: the
    /// driver chooses).
    package var localSize: [Int]?
    /// Items per work-group of the polyphase kernels that run one work-group per sample or
    /// plane (GROUP_SIZE of Kernels/aps.cl and Kernels/tips.cl): a power of two; nil for other families.
    package var groupSize: Int?
    /// Elements per work-group below which tips_forward batches several planes into one
    /// work-group (1: one plane per work-group); nil for other families.
    package var elementsPerGroup: Int?
    /// Band positions per work item of the LiftPool kernels (RUN of Kernels/lift_pool.cl, the
    /// lanes of one vector: 1, 2, 4 or 8); nil for other families.
    package var run: Int?
    /// Whether the register-tiled AdaptiveBlurPool predictor runs (where P = G*k*k allows it);
    /// nil for other families.
    package var tiled: Bool?
    /// Output positions per work item of the tiled AdaptiveBlurPool predictor (POSITIONS);
    /// nil for other families.
    package var positions: Int?
    /// float8 blocks of predictor channels per register tile of the tiled AdaptiveBlurPool
    /// predictor (OUT_VECTORS); nil for other families.
    package var outVectors: Int?
    /// x' elements per work-group of the fused TIPS backward (tips_backward_band); 0 selects the
    /// unfused passes; nil for other families (and for TIPS: the built-in 4096).
    package var bandElements: Int?
    /// Whether the AdaptiveBlurPool backward uses the row-walking gradient kernels (true, the CPU
    /// default) or the one-element ones (false, the GPU default); nil for other families.
    package var rowGradients: Bool?
    /// Whether the window families' vector kernels compute the left and right border columns
    /// themselves, one extra work item per row (true), or leave them to a separate launch of
    /// the table kernel (false); nil for other families (and for the window families: the
    /// device's built-in default).
    package var foldedSides: Bool?

    /// Bundles the parameters; a family reads only its own knobs and leaves the others nil.
    package init(
        outputsPerItem: Int = 1, localSize: [Int]? = nil, groupSize: Int? = nil, elementsPerGroup: Int? = nil,
        run: Int? = nil, tiled: Bool? = nil, positions: Int? = nil, outVectors: Int? = nil, bandElements: Int? = nil,
        rowGradients: Bool? = nil, foldedSides: Bool? = nil
    ) {
        self.outputsPerItem = outputsPerItem
        self.localSize = localSize
        self.groupSize = groupSize
        self.elementsPerGroup = elementsPerGroup
        self.run = run
        self.tiled = tiled
        self.positions = positions
        self.outVectors = outVectors
        self.bandElements = bandElements
        self.rowGradients = rowGradients
        self.foldedSides = foldedSides
    }

    package var description: String {
        // The window families' knobs always show; another family's only what it sets.
        let windowFamily =
            [groupSize, elementsPerGroup, run, positions, outVectors, bandElements].allSatisfy { $0 == nil } && tiled == nil
            && rowGradients == nil
        var parts: [String] = []
        if windowFamily || outputsPerItem != 1 { parts.append("outputsPerItem \(outputsPerItem)") }
        if windowFamily || localSize != nil { parts.append("local " + (localSize.map { "\($0)" } ?? "driver")) }
        if let groupSize { parts.append("group \(groupSize)") }
        if let elementsPerGroup { parts.append("elements/group \(elementsPerGroup)") }
        if let run { parts.append("run \(run)") }
        if let tiled { parts.append(tiled ? "tiled" : "untiled") }
        if let positions { parts.append("positions \(positions)") }
        if let outVectors { parts.append("outVectors \(outVectors)") }
        if let bandElements { parts.append("band elements \(bandElements)") }
        if let rowGradients { parts.append(rowGradients ? "row gradients" : "element gradients") }
        if let foldedSides { parts.append(foldedSides ? "folded sides" : "separate sides") }
        return parts.joined(separator: ", ")
    }

    /// Whether the values can be launched at all (a database file may hold anything): every
    /// knob that is set lies in the range its kernels are written for.
    var isUsable: Bool {
        func within(_ value: Int?, _ range: ClosedRange<Int>) -> Bool { value.map { range.contains($0) } ?? true }
        return [1, 2, 4, 8].contains(outputsPerItem)
            && (localSize.map { $0.count >= 1 && $0.count <= 3 && $0.allSatisfy { $0 >= 1 && $0 <= 4096 } } ?? true)
            && within(groupSize, 1...1024) && (groupSize.map { $0 & ($0 - 1) == 0 } ?? true)
            && within(elementsPerGroup, 1...(1 << 20)) && (run.map { [1, 2, 4, 8].contains($0) } ?? true)
            && within(positions, 1...4)
            && within(outVectors, 1...4) && within(bandElements, 0...(1 << 20))
    }

    /// The local size for a launch over `global`, each axis clamped to the global size rounded
    /// up to a power of two (not to the size itself: a CPU driver compiles a kernel once per
    /// local size, so sizes that followed the shape would recompile for every small shape) and
    /// padded with 1s to its rank; nil leaves the choice to the dispatch (see
    /// `OpenCLContext.dispatch`).
    func local(for global: [Int]) -> [Int]? {
        guard let localSize else { return nil }
        return global.indices.map { axis in
            min(axis < localSize.count ? localSize[axis] : 1, OpenCLContext.powerOfTwoCeiling(global[axis]))
        }
    }
}

/// The launch parameters tuned for one device, by "family/shape class" key, as stored in
/// `<cache>/tuning/<device>.json` (the cache directory is `NYQUIST_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/nyquist`, else `~/.cache/nyquist`).
///
/// Layers never tune on a user's call: `nyquist-bench --tune` fills the file, layers read it.
/// A missing, unreadable or malformed file, or an entry whose values cannot be launched, is
/// ignored and the family's built-in default is used.
package struct TuningDatabase: Codable, Sendable, Equatable {
    /// The OpenCL device name the entries were measured on.
    package var device: String
    /// Entries by key `family/shapeClass`.
    package var entries: [String: LaunchParameters]

    /// An empty database for `device`.
    package init(device: String, entries: [String: LaunchParameters] = [:]) {
        self.device = device
        self.entries = entries
    }

    /// The key of one family and shape class.
    package static func key(family: String, shapeClass: String) -> String { "\(family)/\(shapeClass)" }

    /// The cache directory (not created): `NYQUIST_CACHE_DIR`, else `$XDG_CACHE_HOME/nyquist`,
    /// else `$HOME/.cache/nyquist`; nil when none of these is set.
    package static func cacheDirectory() -> String? { ProgramCacheLocation.defaultRoot() }

    /// The database file of `deviceName` under `directory` (default: ``cacheDirectory()``):
    /// `tuning/<name>.json`, with every character outside [A-Za-z0-9._-] replaced by "_".
    package static func path(deviceName: String, directory: String? = nil) -> String? {
        guard let base = directory ?? cacheDirectory() else { return nil }
        let safe = String(
            deviceName.unicodeScalars.map { scalar -> Character in
                let allowed = (scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)))
                    || scalar == "." || scalar == "-" || scalar == "_"
                return allowed ? Character(scalar) : "_"
            })
        return base + "/tuning/" + (safe.isEmpty ? "device" : safe) + ".json"
    }

    /// Reads the database at `path`; nil when it is missing, unreadable, not valid JSON, or
    /// measured on another device (a renamed file must not apply one device's numbers to another).
    package static func load(path: String, deviceName: String) -> TuningDatabase? {
        guard let text = readTextFile(path),
            let database = try? JSONDecoder().decode(TuningDatabase.self, from: Data(text.utf8)),
            database.device == deviceName
        else { return nil }
        return database
    }

    /// Writes the database to `path` (creating its folder), through a temporary file renamed
    /// into place so a reader never sees half a file.
    package func save(path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        do {
            data = try encoder.encode(self)
        } catch {
            throw NyquistError(.io, "cannot encode the tuning database: \(error)")
        }
        let url = URL(fileURLWithPath: path)
        do {
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try data.write(to: url, options: .atomic)
        } catch {
            throw NyquistError(.io, "cannot write the tuning database \(path): \(error.localizedDescription)")
        }
    }
}

/// Per-device tuning state: the database read from disk (once, lazily) and in-memory overrides
/// (the tuner's candidates, tests that pin parameters).
struct TuningState {
    var loaded = false
    var database: TuningDatabase? = nil
    var overrides: [String: LaunchParameters] = [:]
    /// Changes with every override and reload, so compiled plans built under other
    /// parameters are rebuilt (it is part of their cache key).
    var generation = 0
}

extension Device {
    /// The launch parameters of `family` for `shapeClass`: an in-memory override if one is set,
    /// else the tuned entry of this device's database file, else `builtIn`. Never throws and
    /// never tunes: a missing or broken database simply means the built-in default.
    ///
    /// `accepts` is the family's own check (its knobs are set, within what this device allows):
    /// an override or a database entry it refuses is skipped like an unusable one.
    package func launchParameters(
        family: String, shapeClass: String, builtIn: LaunchParameters,
        accepts: (LaunchParameters) -> Bool = { _ in true }
    ) -> LaunchParameters {
        let key = TuningDatabase.key(family: family, shapeClass: shapeClass)
        let name = self.name
        return tuning.withLock { state in
            if let pinned = state.overrides[key], accepts(pinned) { return pinned }
            if !state.loaded {
                state.loaded = true
                state.database = TuningDatabase.path(deviceName: name).flatMap {
                    TuningDatabase.load(path: $0, deviceName: name)
                }
            }
            if let tuned = state.database?.entries[key], tuned.isUsable, accepts(tuned) { return tuned }
            return builtIn
        }
    }

    /// Pins (or, with nil, unpins) the launch parameters of one family and shape class for
    /// this device object only, ahead of the database; the tuner and the parity tests use it.
    /// Throws for values that cannot be launched.
    package func overrideLaunchParameters(_ parameters: LaunchParameters?, family: String, shapeClass: String) throws {
        if let parameters, !parameters.isUsable {
            throw NyquistError(.invalidConfiguration, "launch parameters \(parameters) cannot be launched")
        }
        let key = TuningDatabase.key(family: family, shapeClass: shapeClass)
        tuning.withLock {
            $0.overrides[key] = parameters
            $0.generation += 1
        }
    }

    /// Forgets the database read from disk, so the next lookup reads the file again (after
    /// `nyquist-bench --tune` wrote it, for example); with `path`, reads that file now instead
    /// of the one under the cache directory (a broken or foreign file leaves only the built-in
    /// defaults).
    package func reloadTuningDatabase(path: String? = nil) {
        let database = path.flatMap { TuningDatabase.load(path: $0, deviceName: name) }
        tuning.withLock { state in
            state.loaded = path != nil
            state.database = database
            state.generation += 1
        }
    }
}

/// A kernel family the tuner can search: its shape classes (each with a representative input
/// shape), its candidate launch parameters, and how to run the pass being tuned. Other kernel
/// families plug in by providing one of these and reading their parameters through
/// ``Device/launchParameters(family:shapeClass:builtIn:)``.
package struct TunableFamily: Sendable {
    /// The family name, the first half of the database key.
    package let name: String
    /// Shape classes with the input shape (N, C, H, W) the tuner times them on.
    package let shapeClasses: [(name: String, inputShape: [Int])]
    /// Every candidate; each must give the same results (the parity tests run them all).
    package let candidates: [LaunchParameters]
    /// Prepares the pass for `input` once (allocations, training forward) and returns the
    /// closure that runs only the timed kernels.
    package let prepare: @Sendable (_ input: DeviceTensor) throws -> () throws -> Void
    /// Whether a candidate can run on a device (e.g. a work-group size within its maximum);
    /// the tuner skips the others rather than time the built-in default under their name.
    package let accepts: @Sendable (_ candidate: LaunchParameters, _ device: Device) -> Bool

    /// Bundles a family.
    package init(
        name: String, shapeClasses: [(name: String, inputShape: [Int])], candidates: [LaunchParameters],
        accepts: @escaping @Sendable (_ candidate: LaunchParameters, _ device: Device) -> Bool = { _, _ in true },
        prepare: @escaping @Sendable (_ input: DeviceTensor) throws -> () throws -> Void
    ) {
        self.name = name
        self.shapeClasses = shapeClasses
        self.candidates = candidates
        self.accepts = accepts
        self.prepare = prepare
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
        package let parameters: LaunchParameters
        /// Median kernel time in seconds.
        package let seconds: Double
    }

    /// Tunes `families` on `device`: for each shape class, pins each candidate in turn (an
    /// in-memory override), runs the pass `repeats` times after one warm-up, and keeps the
    /// candidate with the lowest median. Returns the database (existing entries of other
    /// families kept from `existing`) and every measurement. Overrides are removed afterwards.
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
                var best: Measurement? = nil
                defer { try? device.overrideLaunchParameters(nil, family: family.name, shapeClass: shapeClass.name) }
                let candidates = family.candidates.filter { family.accepts($0, device) }
                for (index, candidate) in candidates.enumerated() {
                    try device.overrideLaunchParameters(candidate, family: family.name, shapeClass: shapeClass.name)
                    progress(
                        "tuning \(family.name) / \(shapeClass.name) (\(shapeClass.inputShape.map(String.init).joined(separator: "x"))), "
                            + "candidate \(index + 1) of \(candidates.count): \(candidate)")
                    let run = try family.prepare(input)
                    _ = try device.measure(run)
                    var times: [Double] = []
                    for _ in 0..<max(repeats, 1) { times.append(try device.measure(run).kernelSeconds) }
                    times.sort()
                    let measurement = Measurement(
                        key: TuningDatabase.key(family: family.name, shapeClass: shapeClass.name),
                        parameters: candidate, seconds: times[times.count / 2])
                    measurements.append(measurement)
                    if measurement.seconds < best?.seconds ?? .infinity { best = measurement }
                }
                if let best { database.entries[best.key] = best.parameters }
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
