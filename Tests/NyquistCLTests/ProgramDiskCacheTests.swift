import Foundation
import NyquistCL
import Testing

// The on-disk program cache. Each test gets its own temporary directory, passed through the API
// (not NYQUIST_CACHE_DIR: tests run in parallel and share one environment), and fresh contexts
// stand in for fresh processes.

private let doubleSource = """
    __kernel void double_it(__global float *y, int n) {
        int i = get_global_id(0);
        if (i < n) y[i] = 2.0f * y[i] + OFFSET;
    }
    """

private func temporaryRoot() throws -> String {
    let root = FileManager.default.temporaryDirectory
        .appendingPathComponent("nyquist-program-cache-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    return root
}

private func context(_ root: String) throws -> OpenCLContext {
    try OpenCLContext(device: OpenCLDevice.select("0"), programCache: .directory(root))
}

private func entries(_ root: String) throws -> [String] {
    let folder = root + "/programs"
    return try FileManager.default.contentsOfDirectory(atPath: folder).sorted().map { folder + "/" + $0 }
}

/// Runs double_it on [1, 2, 3] with the program and returns the result.
private func run(_ program: OpenCLProgram, in context: OpenCLContext) throws -> [Float] {
    let buffer = try context.makeBuffer(byteCount: 3 * 4)
    try context.write([1, 2, 3], to: buffer)
    try context.dispatch("double_it", in: program, arguments: [.buffer(buffer), .int(3)], global: [3])
    return try context.read(buffer, count: 3)
}

@Suite struct ProgramDiskCacheTests {
    @Test func secondContextLoadsTheBinaryWithoutCompiling() throws {
        let root = try temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }

        let first = try context(root)
        #expect(try run(first.program(source: doubleSource, options: "-DOFFSET=1.0f"), in: first) == [3, 5, 7])
        #expect(first.statistics.builds == 1)
        #expect(first.statistics.diskWrites == 1)
        #expect(first.statistics.diskHits == 0)
        #expect(try entries(root).count == 1)

        let second = try context(root)
        let loaded = try second.program(source: doubleSource, options: "-DOFFSET=1.0f")
        #expect(second.statistics.builds == 0, "a verified entry must be loaded, not compiled")
        #expect(second.statistics.diskHits == 1)
        #expect(second.statistics.diskWrites == 0)
        // The loaded binary is the specialised program, not just something that loads.
        #expect(try run(loaded, in: second) == [3, 5, 7])
        // A second request in the same context is an in-memory hit.
        #expect(try second.program(source: doubleSource, options: "-DOFFSET=1.0f") === loaded)
        #expect(second.statistics.cacheHits == 1)
        #expect(second.statistics.diskHits == 1)
    }

    /// Damage an entry (payload bit flip, truncation, header of another key, garbage); the next
    /// context must refuse it, compile from source, overwrite it, and the one after must load it.
    @Test(arguments: ["payload", "truncated", "key", "checksum", "magic", "empty"])
    func damagedEntryIsRejectedAndRebuilt(_ damage: String) throws {
        let root = try temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let options = "-DOFFSET=0.5f"
        let writer = try context(root)
        _ = try writer.program(source: doubleSource, options: options)
        let path = try #require(try entries(root).first)
        let original = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        var bytes = original
        // Header: magic 8, version 4, key length 4, key, payload length 8, checksum 8, payload.
        let keyLength = Int(bytes[12]) | Int(bytes[13]) << 8 | Int(bytes[14]) << 16 | Int(bytes[15]) << 24
        let checksumOffset = 16 + keyLength + 8
        let payloadOffset = checksumOffset + 8
        #expect(bytes.count > payloadOffset)
        switch damage {
        case "payload": bytes[payloadOffset + (bytes.count - payloadOffset) / 2] ^= 0x40
        case "truncated": bytes.removeLast((bytes.count - payloadOffset) / 2 + 1)
        case "key": bytes[16 + keyLength - 3] ^= 0x01  // inside the source text: a stale entry
        case "checksum": bytes[checksumOffset] ^= 0xff
        case "magic": bytes[0] = UInt8(ascii: "X")
        default: bytes = []
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        let reader = try context(root)
        #expect(try run(reader.program(source: doubleSource, options: options), in: reader) == [2.5, 4.5, 6.5])
        #expect(reader.statistics.diskRejected == 1)
        #expect(reader.statistics.diskHits == 0)
        #expect(reader.statistics.builds == 1)
        #expect(reader.statistics.diskWrites == 1, "the bad entry is overwritten")
        // The rebuilt entry carries the same key; its payload need not equal the first build's
        // bytes (a driver whose own compile cache is cold may emit a different binary), so
        // whether it is usable is checked by loading it below, not by comparing bytes.
        let rebuilt = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(rebuilt.count > payloadOffset)
        #expect(rebuilt.prefix(16 + keyLength) == original.prefix(16 + keyLength))
        #expect(rebuilt != bytes, "the damaged bytes are replaced")
        #expect(try entries(root).count == 1, "no temporary files left behind")

        let next = try context(root)
        _ = try next.program(source: doubleSource, options: options)
        #expect(next.statistics.diskHits == 1)
        #expect(next.statistics.builds == 0)
    }

    @Test func optionsAndSourceNameDifferentEntries() throws {
        let root = try temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let first = try context(root)
        _ = try first.program(source: doubleSource, options: "-DOFFSET=1.0f")
        _ = try first.program(source: doubleSource, options: "-DOFFSET=2.0f")
        let editedSource = doubleSource.replacingOccurrences(of: "2.0f * y[i]", with: "3.0f * y[i]")
        _ = try first.program(source: editedSource, options: "-DOFFSET=1.0f")
        #expect(first.statistics.diskWrites == 3)
        #expect(try entries(root).count == 3)

        // Each request finds its own entry: the right specialisation comes back.
        let second = try context(root)
        #expect(try run(second.program(source: doubleSource, options: "-DOFFSET=2.0f"), in: second) == [4, 6, 8])
        #expect(try run(second.program(source: editedSource, options: "-DOFFSET=1.0f"), in: second) == [4, 7, 10])
        #expect(second.statistics.diskHits == 2)
        #expect(second.statistics.builds == 0)
        #expect(second.statistics.diskRejected == 0)

        // A combination never stored is compiled, not served from a neighbour's entry.
        _ = try second.program(source: editedSource, options: "-DOFFSET=2.0f")
        #expect(second.statistics.builds == 1)
        #expect(second.statistics.diskHits == 2)
    }

    @Test func unwritableDirectoryFallsBackToMemory() throws {
        let root = try temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        // A regular file where a folder should be: mkdir fails even for root, unlike chmod.
        let blocker = root + "/not-a-directory"
        try Data("x".utf8).write(to: URL(fileURLWithPath: blocker))
        let context = try context(blocker + "/cache")
        let program = try context.program(source: doubleSource, options: "-DOFFSET=1.0f")
        #expect(try run(program, in: context) == [3, 5, 7])
        #expect(try context.program(source: doubleSource, options: "-DOFFSET=1.0f") === program)
        #expect(context.statistics.builds == 1)
        #expect(context.statistics.cacheHits == 1)
        #expect(context.statistics.diskWrites == 0)
        #expect(context.statistics.diskWriteFailures == 1)
    }

    @Test func memoryOnlyWritesNothing() throws {
        let context = try OpenCLContext(device: OpenCLDevice.select("0"), programCache: .memoryOnly)
        _ = try context.program(source: doubleSource, options: "-DOFFSET=1.0f")
        #expect(context.statistics.builds == 1)
        #expect(context.statistics.diskWrites == 0)
        #expect(context.statistics.diskWriteFailures == 0)
        #expect(ProgramCacheLocation.memoryOnly.programsDirectory == nil)
        #expect(ProgramCacheLocation.directory("/tmp/x/").programsDirectory == "/tmp/x/programs")
    }
}
