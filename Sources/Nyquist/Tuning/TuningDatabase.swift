import Foundation
import NyquistCL
import NyquistCore

/// The knobs tuned for one device, by "family/shapeClass" key, each entry of its family's knob
/// type (``LaunchKnobs``), as stored in `<cache>/tuning/<device>.json` (the cache directory is
/// `NYQUIST_CACHE_DIR`, else `$XDG_CACHE_HOME/nyquist`, else `~/.cache/nyquist`).
///
/// Layers never tune on a user's call: `nyquist-bench --tune` fills the file, layers read it.
/// A missing, unreadable or malformed file is ignored, and so is an entry that does not decode
/// as its family's knobs (another family's knobs, a family this build does not have) or whose
/// values cannot be launched: the family's built-in default is used.
package struct TuningDatabase: Codable, Sendable, Equatable {
    /// The OpenCL device name the entries were measured on.
    package var device: String
    /// Entries by key `family/shapeClass`.
    package var entries: [String: AnyLaunchKnobs]

    /// A database for `device`.
    package init(device: String, entries: [String: AnyLaunchKnobs] = [:]) {
        self.device = device
        self.entries = entries
    }

    /// The key of one family and shape class.
    package static func key(family: String, shapeClass: String) -> String { "\(family)/\(shapeClass)" }

    /// The entry of `family` and `shapeClass` as `Knobs`; nil when there is none or it holds
    /// other knobs.
    package func knobs<Knobs: LaunchKnobs>(_: Knobs.Type, family: String, shapeClass: String) -> Knobs? {
        entries[Self.key(family: family, shapeClass: shapeClass)]?.base as? Knobs
    }

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

    private enum CodingKeys: String, CodingKey {
        case device, entries
    }

    /// An entry's key in the file.
    private struct EntryKey: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Decodes the device name and every entry that decodes as its family's knobs; the others
    /// are left out, so that one bad entry costs only itself.
    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        device = try container.decode(String.self, forKey: .device)
        let stored = try container.nestedContainer(keyedBy: EntryKey.self, forKey: .entries)
        var entries: [String: AnyLaunchKnobs] = [:]
        for key in stored.allKeys {
            guard let family = key.stringValue.split(separator: "/").first,
                let type = KnobFamilies.type(of: String(family)),
                let knobs = type.decodeEntry(from: stored, forKey: key)
            else { continue }
            entries[key.stringValue] = knobs
        }
        self.entries = entries
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(device, forKey: .device)
        var stored = container.nestedContainer(keyedBy: EntryKey.self, forKey: .entries)
        for (key, knobs) in entries {
            try stored.encode(knobs, forKey: EntryKey(stringValue: key))
        }
    }
}

/// Per-device tuning state: the database read from disk (once, lazily).
struct TuningState {
    var loaded = false
    var database: TuningDatabase? = nil
    /// Changes with every reload, so compiled plans built from an older database are rebuilt
    /// (it is part of their cache key, ``TuningKey``).
    var generation = 0
}

/// What a compiled plan's knobs came from, part of its cache key: the database generation
/// and the knobs pinned on the task that asked for it.
struct TuningKey: Hashable, Sendable {
    var generation = 0
    var pins = KnobPins()
}

extension Device {
    /// The knobs of `family` for `shapeClass`: the knobs pinned on the current task
    /// (``withPinnedKnobs(_:family:shapeClass:_:)``) if any, else the tuned entry of this
    /// device's database file, else `Knobs.builtIn`; a pin or an entry that is not usable on
    /// this device (``LaunchKnobs/isUsable(on:)``) is skipped. Never throws and never tunes: a
    /// missing or broken database simply means the built-in default.
    package func knobs<Knobs: LaunchKnobs>(_: Knobs.Type, family: String, shapeClass: String) -> Knobs {
        let key = TuningDatabase.key(family: family, shapeClass: shapeClass)
        if let pinned = KnobPins.current.entries[key]?.base as? Knobs, pinned.isUsable(on: self) { return pinned }
        let name = self.name
        let tuned = tuning.withLock { state in
            if !state.loaded {
                state.loaded = true
                state.database = TuningDatabase.path(deviceName: name).flatMap {
                    TuningDatabase.load(path: $0, deviceName: name)
                }
            }
            return state.database?.entries[key]
        }
        if let tuned = tuned?.base as? Knobs, tuned.isUsable(on: self) { return tuned }
        return Knobs.builtIn(shapeClass: shapeClass, on: self)
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

    /// The tuning part of a plan key for a plan built now.
    var tuningKey: TuningKey {
        TuningKey(generation: tuning.withLock { $0.generation }, pins: KnobPins.current)
    }
}
