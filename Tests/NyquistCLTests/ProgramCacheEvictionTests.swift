import Foundation
import Testing

@testable import NyquistCL

// The program cache's size cap: least recently used entries go first, the entry just written
// stays, and a lookup counts as a use. Entries are written through ProgramDiskCache directly
// (no compiler), and their modification times are set explicitly because a file system's
// timestamp granularity can give entries written in one burst the same time.

private func temporaryFolder() throws -> String {
    let folder = FileManager.default.temporaryDirectory
        .appendingPathComponent("nyquist-cache-eviction-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    return folder
}

private func setModified(_ path: String, secondsSinceEpoch: Int) {
    var times = [timeval(tv_sec: secondsSinceEpoch, tv_usec: 0), timeval(tv_sec: secondsSinceEpoch, tv_usec: 0)]
    _ = utimes(path, &times)
}

@Suite struct ProgramCacheEvictionTests {
    @Test func leastRecentlyUsedEntriesAreRemovedBeyondTheCap() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let payload = [UInt8](repeating: 7, count: 1000)
        let entrySize = UInt64(ProgramDiskCache.encode(key: "key-0", payload: payload).count)
        // Room for three entries, not four.
        let cache = ProgramDiskCache(directory: folder, sizeLimit: 3 * entrySize + entrySize / 2)

        for index in 0..<3 {
            #expect(cache.store(key: "key-\(index)", payload: payload))
            setModified(cache.path(forKey: "key-\(index)"), secondsSinceEpoch: 1_000_000 + index)
        }
        #expect(ProgramDiskCache.entries(in: folder).count == 3)

        // Using key-0 makes key-1 the least recently used.
        guard case .found = cache.lookup(key: "key-0") else {
            Issue.record("key-0 should be found")
            return
        }
        #expect(cache.store(key: "key-3", payload: payload))
        let left = Set(ProgramDiskCache.entries(in: folder).map { URL(fileURLWithPath: $0.path).lastPathComponent })
        let expected = Set(["key-0", "key-2", "key-3"].map { URL(fileURLWithPath: cache.path(forKey: $0)).lastPathComponent })
        #expect(left == expected)
        if case .missing = cache.lookup(key: "key-1") {} else { Issue.record("key-1 should have been evicted") }
    }

    @Test func anEntryLargerThanTheCapIsKeptAlone() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let cache = ProgramDiskCache(directory: folder, sizeLimit: 100)
        #expect(cache.store(key: "small", payload: [1, 2, 3]))
        #expect(cache.store(key: "large", payload: [UInt8](repeating: 1, count: 500)))
        #expect(ProgramDiskCache.entries(in: folder).map(\.path) == [cache.path(forKey: "large")])
    }

    @Test func byteCountsParseWithSuffixes() {
        #expect(ProgramCacheLocation.parseByteCount("4096") == 4096)
        #expect(ProgramCacheLocation.parseByteCount("512K") == 512 << 10)
        #expect(ProgramCacheLocation.parseByteCount(" 256m ") == 256 << 20)
        #expect(ProgramCacheLocation.parseByteCount("2G") == 2 << 30)
        #expect(ProgramCacheLocation.parseByteCount("100B") == 100)
        for bad in ["", "G", "-1", "1.5G", "12X", "99999999999999999999", "16777216T", "١٢"] {
            #expect(ProgramCacheLocation.parseByteCount(bad) == nil, "\(bad)")
        }
    }
}
