import COpenCL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where compiled programs are kept between processes.
///
/// Building Nyquist's kernels from source costs about half a second per operator on PoCL; a
/// device binary saved on disk loads in a few milliseconds. Entries are keyed by platform,
/// device, driver, options and the full source text, so a driver update or an edited kernel
/// never reuses an old binary.
public enum ProgramCacheLocation: Sendable, Equatable {
    /// Programs are cached in memory only (per context).
    case memoryOnly
    /// Programs are also stored under `<root>/programs/`; `root` is created when missing.
    case directory(String)

    /// `NYQUIST_PROGRAM_CACHE=off` gives ``memoryOnly``; otherwise the root is
    /// `NYQUIST_CACHE_DIR`, else `$XDG_CACHE_HOME/nyquist`, else `~/.cache/nyquist`
    /// (``memoryOnly`` when none of these can be formed, e.g. no `HOME`).
    public static func fromEnvironment() -> ProgramCacheLocation {
        if let switchValue = getenvString("NYQUIST_PROGRAM_CACHE")?.lowercased(),
            ["off", "0", "false", "no", "none"].contains(switchValue)
        {
            return .memoryOnly
        }
        return defaultRoot().map { .directory($0) } ?? .memoryOnly
    }

    /// Nyquist's cache root, shared by the program cache and the tuning database (not created):
    /// `NYQUIST_CACHE_DIR`, else `$XDG_CACHE_HOME/nyquist`, else `$HOME/.cache/nyquist`; nil
    /// when none of these is set.
    public static func defaultRoot() -> String? {
        if let explicit = getenvString("NYQUIST_CACHE_DIR"), !explicit.isEmpty { return explicit }
        if let xdg = getenvString("XDG_CACHE_HOME"), !xdg.isEmpty { return xdg + "/nyquist" }
        if let home = getenvString("HOME"), !home.isEmpty { return home + "/.cache/nyquist" }
        return nil
    }

    /// The default cap on the entries' total size: 256 MiB, a few hundred programs (PoCL's
    /// binaries are 0.1-1 MB each). One program exists per distinct specialisation (stride,
    /// window, filter size, tile), so without a cap a sweep over option values would grow the
    /// folder without bound.
    public static let defaultSizeLimit: UInt64 = 256 << 20

    /// The cap on the entries' total size in bytes: `NYQUIST_PROGRAM_CACHE_LIMIT` (a byte count
    /// with an optional K, M or G suffix, powers of 1024), else ``defaultSizeLimit``. When a new
    /// entry takes the folder over the cap, the least recently used entries are removed.
    /// Throws ``OpenCLError`` (`CL_INVALID_VALUE`) naming the variable when its value is not a size.
    public static func sizeLimitFromEnvironment() throws -> UInt64 {
        guard let text = getenvString("NYQUIST_PROGRAM_CACHE_LIMIT"), !text.isEmpty else { return defaultSizeLimit }
        guard let bytes = parseByteCount(text) else {
            throw OpenCLError(
                call: "NYQUIST_PROGRAM_CACHE_LIMIT", code: CL_INVALID_VALUE,
                detail: "'\(text)' is not a size in bytes (e.g. 268435456, 512M or 2G)")
        }
        return bytes
    }

    /// A byte count such as `4096`, `512K`, `256M` or `2G` (powers of 1024); nil when malformed
    /// or over `UInt64.max`.
    static func parseByteCount(_ text: String) -> UInt64? {
        let trimmed = text.trimmingSpaces.uppercased()
        let shifts: [Character: UInt64] = ["K": 10, "M": 20, "G": 30, "T": 40]
        var digits = Substring(trimmed)
        var shift: UInt64 = 0
        if let last = digits.last, let found = shifts[last] {
            shift = found
            digits = digits.dropLast()
        } else if digits.hasSuffix("B") {
            digits = digits.dropLast()
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = UInt64(digits) else { return nil }
        guard value <= UInt64.max >> shift else { return nil }
        return value << shift
    }

    /// The folder that holds the entries, or nil for ``memoryOnly``.
    public var programsDirectory: String? {
        guard case .directory(let root) = self else { return nil }
        return (root.hasSuffix("/") ? String(root.dropLast()) : root) + "/programs"
    }
}

/// Reads and writes cache entries: one file per program, a header that names exactly what the
/// binary was built from, then the device binary.
///
/// Layout (integers little-endian): magic `NYQPROG1` (8 bytes), format version (UInt32), key
/// length (UInt32), key text (UTF-8), payload length (UInt64), payload FNV-1a-64 checksum
/// (UInt64), payload. An entry is used only when every field matches; anything else counts as
/// rejected and is rebuilt from source and overwritten.
struct ProgramDiskCache {
    static let magic: [UInt8] = Array("NYQPROG1".utf8)
    static let formatVersion: UInt32 = 1
    /// A corrupt length field must not make us allocate gigabytes.
    static let largestPayload: UInt64 = 1 << 30

    let directory: String
    /// Total bytes the entries may take; ``store(key:payload:)`` evicts the least recently used
    /// entries beyond it.
    var sizeLimit: UInt64 = ProgramCacheLocation.defaultSizeLimit

    /// The outcome of a lookup.
    enum Lookup {
        case missing
        case rejected
        case found([UInt8])
    }

    /// The key text: everything that decides whether a binary may be reused.
    static func keyText(device: OpenCLDevice, source: String, options: String) -> String {
        "platform: \(device.platformName) \(device.platformVersion)\n"
            + "device: \(device.name)\n"
            + "driver: \(device.driverVersion)\n"
            + "options: \(options)\n"
            + "source:\n\(source)"
    }

    /// The entry's file: a hash of the key names it; the full key inside the file decides.
    func path(forKey key: String) -> String {
        directory + "/" + hexadecimal(fnv1a64(Array(key.utf8))) + ".clbin"
    }

    func lookup(key: String) -> Lookup {
        let path = path(forKey: key)
        guard let bytes = readFile(path) else { return .missing }
        guard let payload = Self.decode(bytes, expectedKey: key) else { return .rejected }
        // The modification time is the entry's last use: eviction removes the oldest first.
        utimes(path, nil)
        return .found(payload)
    }

    /// Writes the entry through a temporary file and a rename so that a reader never sees a
    /// half-written entry; returns false when the directory cannot be created or written.
    func store(key: String, payload: [UInt8]) -> Bool {
        guard makeDirectories(directory) else { return false }
        let destination = path(forKey: key)
        let temporary = destination + ".tmp-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        let bytes = Self.encode(key: key, payload: payload)
        guard let file = fopen(temporary, "wb") else { return false }
        let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        let closed = fclose(file) == 0
        guard written == bytes.count, closed, rename(temporary, destination) == 0 else {
            unlink(temporary)
            return false
        }
        evictLeastRecentlyUsed(keeping: destination)
        return true
    }

    /// Removes the least recently used entries (oldest modification time first) until the
    /// entries fit ``sizeLimit``; `keeping` (the entry just written) is never removed. Entries
    /// that another process removes meanwhile are skipped.
    func evictLeastRecentlyUsed(keeping: String) {
        var entries = Self.entries(in: directory)
        var total = entries.reduce(UInt64(0)) { $0 &+ $1.bytes }
        guard total > sizeLimit else { return }
        entries.sort { ($0.modified, $0.path) < ($1.modified, $1.path) }
        for entry in entries where total > sizeLimit && entry.path != keeping {
            if unlink(entry.path) == 0 || errno == ENOENT { total -= entry.bytes }
        }
    }

    /// The `.clbin` entries of `directory` with their sizes and modification times (seconds and
    /// nanoseconds, so that entries written within one second keep their order).
    static func entries(in directory: String) -> [(path: String, bytes: UInt64, modified: Double)] {
        guard let folder = opendir(directory) else { return [] }
        defer { closedir(folder) }
        var found: [(path: String, bytes: UInt64, modified: Double)] = []
        while let entry = readdir(folder) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard name.hasSuffix(".clbin") else { continue }
            let path = directory + "/" + name
            var info = stat()
            guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { continue }
            let modified = Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) * 1e-9
            found.append((path, UInt64(info.st_size), modified))
        }
        return found
    }

    static func encode(key: String, payload: [UInt8]) -> [UInt8] {
        let keyBytes = Array(key.utf8)
        var bytes = magic
        bytes.reserveCapacity(magic.count + 28 + keyBytes.count + payload.count)
        append(formatVersion, to: &bytes)
        append(UInt32(keyBytes.count), to: &bytes)
        bytes += keyBytes
        append(UInt64(payload.count), to: &bytes)
        append(fnv1a64(payload), to: &bytes)
        bytes += payload
        return bytes
    }

    /// The payload when `bytes` is a complete, intact entry for exactly `expectedKey`.
    static func decode(_ bytes: [UInt8], expectedKey: String) -> [UInt8]? {
        var reader = ByteReader(bytes: bytes)
        guard reader.take(magic.count) == magic[...],
            reader.integer(UInt32.self) == formatVersion,
            let keyLength = reader.integer(UInt32.self),
            let keyBytes = reader.take(Int(keyLength)), keyBytes.elementsEqual(expectedKey.utf8),
            let payloadLength = reader.integer(UInt64.self), payloadLength > 0, payloadLength <= largestPayload,
            let checksum = reader.integer(UInt64.self),
            let payload = reader.take(Int(payloadLength)), reader.isAtEnd
        else { return nil }
        let payloadBytes = Array(payload)
        guard fnv1a64(payloadBytes) == checksum else { return nil }
        return payloadBytes
    }

    private static func append<T: FixedWidthInteger>(_ value: T, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { bytes += $0 }
    }
}

/// Sequential little-endian reads that return nil past the end instead of trapping.
private struct ByteReader {
    let bytes: [UInt8]
    var offset = 0

    var isAtEnd: Bool { offset == bytes.count }

    mutating func take(_ count: Int) -> ArraySlice<UInt8>? {
        guard count >= 0, count <= bytes.count - offset else { return nil }
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
        guard let slice = take(MemoryLayout<T>.size) else { return nil }
        var value: T = 0
        for (shift, byte) in slice.enumerated() { value |= T(byte) << (8 * shift) }
        return value
    }
}

/// FNV-1a, 64-bit: enough to name files and to catch corruption; the key text inside the entry,
/// not the hash, decides whether an entry matches.
func fnv1a64(_ bytes: [UInt8]) -> UInt64 {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    return hash
}

private func hexadecimal(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}

private func readFile(_ path: String) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
        if count > 0 { bytes += chunk[0..<count] }
        if count < chunk.count { break }
    }
    return ferror(file) == 0 ? bytes : nil
}

/// `mkdir -p`; true when `path` exists as a directory afterwards.
private func makeDirectories(_ path: String) -> Bool {
    var prefix = path.hasPrefix("/") ? "/" : ""
    for component in path.split(separator: "/") {
        prefix += component + "/"
        if mkdir(prefix, 0o755) != 0, errno != EEXIST { return false }
    }
    var info = stat()
    return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
}

extension String {
    /// The string without leading and trailing spaces and tabs (Foundation-free).
    fileprivate var trimmingSpaces: String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        return String(drop(while: isSpace).reversed().drop(while: isSpace).reversed())
    }
}
