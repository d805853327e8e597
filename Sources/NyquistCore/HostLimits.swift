import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// How much host memory Nyquist lets one request allocate, so that a hostile or mistaken input
/// (an NPY header declaring 64 GiB, a PNG whose IHDR declares 30000x30000 pixels) is refused
/// with a clear error instead of being met by the kernel's OOM killer.
///
/// The budget is per allocation request (a file's payload plus its decoded tensor, one image),
/// not a running total: Nyquist does not track what the rest of the process holds.
///
/// * ``memoryBudget``: by default ``defaultFraction`` of the memory the system reports as
///   available when the value is first needed (Linux: `MemAvailable` in `/proc/meminfo`;
///   elsewhere, or when that is unreadable, physical memory from `sysconf`), and never less
///   than ``minimumBudget``. The environment variable `NYQUIST_HOST_MEMORY_BUDGET` replaces it
///   (bytes, or with a K, M, G or T suffix in powers of 1024: `2G`, `512M`).
/// * ``pngDecodeBudget``: the most bytes the PNG decoder may produce for one image (inflated
///   rows plus decoded samples); by default the smaller of 256 MiB and the memory budget,
///   replaced by `NYQUIST_PNG_DECODE_BUDGET` (same syntax).
///
/// Programs and tests can pass explicit limits to the readers (`limits:` arguments) or replace
/// the process-wide value with ``setCurrent(_:)``.
public struct HostLimits: Sendable, Equatable, CustomStringConvertible {
    /// Bytes one request may allocate on the host.
    public var memoryBudget: Int
    /// Bytes the PNG decoder may produce for one image.
    public var pngDecodeBudget: Int

    /// The share of available memory the default budget takes: the rest is left to the other
    /// buffers of this process (a tensor read from a file is usually copied at least once more,
    /// to the device or into an operator's output) and to other programs.
    public static let defaultFraction = 0.5

    /// The smallest default budget, for systems that report very little available memory
    /// (containers whose `/proc/meminfo` is odd): below this, ordinary inputs would be refused.
    public static let minimumBudget = 256 << 20

    /// The default PNG decode budget's upper end: an image this large is far beyond anything
    /// the operators are used on, and a small file that inflates past it is almost surely a
    /// decompression bomb.
    public static let defaultPNGDecodeBudget = 256 << 20

    /// Limits with explicit budgets; `pngDecodeBudget` defaults to the smaller of
    /// ``defaultPNGDecodeBudget`` and `memoryBudget`. Negative values count as zero.
    public init(memoryBudget: Int, pngDecodeBudget: Int? = nil) {
        self.memoryBudget = max(0, memoryBudget)
        self.pngDecodeBudget = max(0, pngDecodeBudget ?? min(Self.defaultPNGDecodeBudget, memoryBudget))
    }

    /// Both budgets for a person: "host memory budget 11.2 GiB, PNG decode budget 256.0 MiB".
    public var description: String {
        "host memory budget \(Self.format(bytes: memoryBudget)), PNG decode budget \(Self.format(bytes: pngDecodeBudget))"
    }

    // MARK: Checks

    /// Throws ``NyquistError/Kind/sizeLimit`` when `bytes` exceed ``memoryBudget``; call it
    /// before any allocation whose size comes from user input. `what` names the allocation for
    /// the message ("x.npy: shape [8, 64, 56, 56] of <f8"). A negative `bytes` (an overflowed
    /// computation) is refused too.
    public func checkAllocation(bytes: Int, what: String) throws {
        guard bytes >= 0 else {
            throw NyquistError(
                .sizeLimit, "\(what) needs more bytes than can be counted; budget \(Self.format(bytes: memoryBudget))")
        }
        guard bytes <= memoryBudget else {
            throw NyquistError(
                .sizeLimit,
                "\(what) needs \(Self.format(bytes: bytes)), more than the host memory budget of "
                    + "\(Self.format(bytes: memoryBudget)) (set NYQUIST_HOST_MEMORY_BUDGET to change it)")
        }
    }

    /// ``checkAllocation(bytes:what:)`` for `count` elements of `bytesPerElement` bytes each,
    /// with the product overflow-checked.
    public func checkAllocation(count: Int, bytesPerElement: Int, what: String) throws {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: bytesPerElement)
        try checkAllocation(bytes: overflow || count < 0 || bytesPerElement < 0 ? -1 : bytes, what: what)
    }

    /// ``checkAllocation(bytes:what:)`` against the process-wide ``current`` limits.
    public static func checkAllocation(bytes: Int, what: String) throws {
        try current.checkAllocation(bytes: bytes, what: what)
    }

    // MARK: The process-wide value

    /// The lock-protected override and the lazily computed default.
    private final class Store: @unchecked Sendable {
        // @unchecked: both fields are only touched with `lock` held.
        let lock = NSLock()
        var override: HostLimits?
        var computed: HostLimits?
    }

    private static let store = Store()

    /// The limits readers use when given none: the value last passed to ``setCurrent(_:)``, or
    /// else ``fromEnvironment()`` computed on first use and kept (the available memory is read
    /// once, so that one process applies one budget throughout).
    public static var current: HostLimits {
        store.lock.lock()
        defer { store.lock.unlock() }
        if let override = store.override { return override }
        if let computed = store.computed { return computed }
        let limits = fromEnvironment()
        store.computed = limits
        return limits
    }

    /// Replaces the process-wide limits (`nil` goes back to the environment and defaults).
    /// Prefer passing limits explicitly where an API takes them: this affects every thread.
    public static func setCurrent(_ limits: HostLimits?) {
        store.lock.lock()
        defer { store.lock.unlock() }
        store.override = limits
    }

    /// The limits from `NYQUIST_HOST_MEMORY_BUDGET` and `NYQUIST_PNG_DECODE_BUDGET` (see the
    /// type's description), or the defaults where a variable is unset or unreadable.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> HostLimits {
        let memory = environment["NYQUIST_HOST_MEMORY_BUDGET"].flatMap(parseByteCount) ?? defaultMemoryBudget()
        let png = environment["NYQUIST_PNG_DECODE_BUDGET"].flatMap(parseByteCount)
        return HostLimits(memoryBudget: memory, pngDecodeBudget: png)
    }

    /// ``defaultFraction`` of the available memory, at least ``minimumBudget``.
    public static func defaultMemoryBudget() -> Int {
        let available = availableMemory() ?? physicalMemory() ?? 0
        return max(minimumBudget, Int(Double(available) * defaultFraction))
    }

    /// `MemAvailable` from `/proc/meminfo` in bytes, or nil where there is no such file.
    static func availableMemory() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            guard fields.count >= 2, let kibibytes = Int(fields[1]) else { return nil }
            let (bytes, overflow) = kibibytes.multipliedReportingOverflow(by: 1024)
            return overflow ? Int.max : bytes
        }
        return nil
    }

    /// Physical memory from `sysconf`, or nil where it is not reported.
    static func physicalMemory() -> Int? {
        let pages = sysconf(Int32(_SC_PHYS_PAGES))
        let pageSize = sysconf(Int32(_SC_PAGESIZE))
        guard pages > 0, pageSize > 0 else { return nil }
        let (bytes, overflow) = pages.multipliedReportingOverflow(by: pageSize)
        return overflow ? Int.max : bytes
    }

    // MARK: Byte counts as text

    /// Parses `1234`, `64K`, `512M`, `2G`, `1T` (optionally followed by `B` or `iB`, any case;
    /// suffixes are powers of 1024). Nil for anything else, negative numbers or overflow.
    public static func parseByteCount(_ text: String) -> Int? {
        var digits = text.trimmingCharacters(in: .whitespaces).uppercased()
        for suffix in ["IB", "B"] where digits.hasSuffix(suffix) && digits.count > suffix.count {
            digits.removeLast(suffix.count)
            break
        }
        var shift = 0
        if let last = digits.last, let power = ["K": 10, "M": 20, "G": 30, "T": 40][String(last)] {
            shift = power
            digits.removeLast()
        }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = Int(digits), value >= 0 else { return nil }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        return overflow ? nil : bytes
    }

    /// `bytes` for a person: "512 bytes", "1.5 KiB", "64.0 GiB".
    public static func format(bytes: Int) -> String {
        guard bytes >= 1024 else { return "\(bytes) bytes" }
        var value = Double(bytes)
        var unit = "bytes"
        for next in ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"] where value >= 1024 {
            value /= 1024
            unit = next
        }
        return String(format: "%.1f", value) + " " + unit
    }
}
