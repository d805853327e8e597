import Foundation
import NyquistCore
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An NPY file of `header` followed by no data but `size` bytes in all: a sparse file made with
/// ftruncate, so that a header declaring gigabytes costs no disk and no memory.
private func sparseNPY(_ url: URL, header: String, size: Int) throws {
    try Data(npyFile(header, data: [])).write(to: url)
    #expect(truncate(url.path, off_t(size)) == 0)
}

/// Small explicit budgets, so that no test depends on (or changes) the machine's default.
private let smallLimits = HostLimits(memoryBudget: 1 << 30, pngDecodeBudget: 1 << 20)

@Suite("File limits: non-regular files, declared sizes, budgets")
struct FileLimitsTests {
    // MARK: Not a regular file

    /// Each reader, so that every one of them is shown to stat before opening.
    static let readers: [(String, @Sendable (URL) throws -> Void)] = [
        ("npy", { _ = try NPY.read(contentsOf: $0) }),
        ("safetensors", { _ = try Safetensors.read(contentsOf: $0) }),
        ("bytes", { _ = try FileIO.readBytes(contentsOf: $0) }),
    ]

    @Test func refusesFIFOWithoutBlocking() throws {
        try withTemporaryDirectory { directory in
            let fifo = directory.appendingPathComponent("pipe.npy")
            #expect(mkfifo(fifo.path, 0o600) == 0)
            // No writer exists: an open(2) for reading would block forever.
            for (_, read) in Self.readers {
                expectError(.io, fifo.path, "is a FIFO, not a regular file") { try read(fifo) }
            }
        }
    }

    @Test func refusesDeviceAndDirectory() throws {
        for (_, read) in Self.readers {
            expectError(.io, "/dev/zero", "is a character device, not a regular file") {
                try read(URL(fileURLWithPath: "/dev/zero"))
            }
        }
        try withTemporaryDirectory { directory in
            for (_, read) in Self.readers {
                expectError(.io, directory.path, "is a directory, not a regular file") { try read(directory) }
            }
        }
    }

    @Test func refusesSocket() throws {
        try withTemporaryDirectory { directory in
            let path = directory.appendingPathComponent("s.npy").path
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            #expect(fd >= 0)
            defer { close(fd) }
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { buffer in
                for (index, byte) in path.utf8.prefix(buffer.count - 1).enumerated() { buffer[index] = byte }
            }
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            #expect(bound == 0)
            expectError(.io, "is a socket, not a regular file") { try NPY.read(contentsOf: URL(fileURLWithPath: path)) }
        }
    }

    @Test func followsSymlinkToRegularFile() throws {
        try withTemporaryDirectory { directory in
            let tensor = try HostTensor(shape: [2], values: [1, 2])
            let target = directory.appendingPathComponent("x.npy")
            let link = directory.appendingPathComponent("link.npy")
            try NPY.write(tensor, to: target)
            try FileManager.default.createSymbolicLink(at: link, withDestinationURL: target)
            #expect(try NPY.read(contentsOf: link) == tensor)
            // A link to a device is refused like the device.
            let device = directory.appendingPathComponent("zero.npy")
            try FileManager.default.createSymbolicLink(atPath: device.path, withDestinationPath: "/dev/zero")
            expectError(.io, "character device") { try NPY.read(contentsOf: device) }
        }
    }

    @Test func missingFileStillSaysWhy() {
        expectError(.io, "/nonexistent/x.npy", "No such file") {
            try NPY.read(contentsOf: URL(fileURLWithPath: "/nonexistent/x.npy"))
        }
    }

    // MARK: NPY: declared sizes checked from the header

    @Test func npyDeclaring64GiBOnSmallFile() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("big.npy")
            // 2^34 float32 = 64 GiB declared, 4 bytes present.
            try Data(npyFile(f4Header("(17179869184,)"), data: float32Bytes([1]))).write(to: url)
            expectError(.invalidFile, url.path, "too short", "68719476736 bytes", "64.0 GiB", "but 4 follow") {
                try NPY.read(contentsOf: url, limits: smallLimits)
            }
        }
    }

    @Test func npyDeclaring64GiBOnSparseFile() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("sparse.npy")
            let headerSize = npyFile(f4Header("(17179869184,)"), data: []).count
            try sparseNPY(url, header: f4Header("(17179869184,)"), size: headerSize + (64 << 30))
            // The sizes agree, so the element limit is what refuses it, before any data is read.
            expectError(.sizeLimit, url.path, "17179869184 elements", "2147483647") {
                try NPY.read(contentsOf: url, limits: smallLimits)
            }
        }
    }

    @Test func npyOverBudgetOnSparseFile() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("sparse.npy")
            // 2^31 - 1 float64: within the element limit, 16 GiB of data plus 8 GiB as float32.
            let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2147483647,), }"
            let headerSize = npyFile(header, data: []).count
            try sparseNPY(url, header: header, size: headerSize + 8 * 2_147_483_647)
            expectError(.sizeLimit, url.path, "needs 24.0 GiB", "budget of 1.0 GiB", "NYQUIST_HOST_MEMORY_BUDGET") {
                try NPY.read(contentsOf: url, limits: smallLimits)
            }
        }
    }

    @Test func npyInMemoryBudget() throws {
        let file = npyFile(f4Header("(4, 4)"), data: float32Bytes(Array(repeating: 1, count: 16)))
        expectError(.sizeLimit, "needs 64 bytes", "budget of 63 bytes") {
            try NPY.decode(file, limits: HostLimits(memoryBudget: 63))
        }
        #expect(try NPY.decode(file, limits: HostLimits(memoryBudget: 64)).count == 16)
    }

    // MARK: Safetensors: declared sizes, tiling of the data section

    @Test func safetensorsDeclaringHugeTensorOnSmallFile() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("big.safetensors")
            let file = singleTensorFile(#""dtype":"F32","shape":[17179869184],"data_offsets":[0,68719476736]"#, data: [0, 0, 0, 0])
            try Data(file).write(to: url)
            expectError(.invalidFile, url.path, "ends at data byte 68719476736", "64.0 GiB", "has 4 bytes") {
                try Safetensors.read(contentsOf: url, limits: smallLimits)
            }
        }
    }

    @Test func safetensorsHugeSparseFile() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("sparse.safetensors")
            let header = singleTensorFile(#""dtype":"F32","shape":[17179869184],"data_offsets":[0,68719476736]"#, data: [])
            try Data(header).write(to: url)
            #expect(truncate(url.path, off_t(header.count + (64 << 30))) == 0)
            expectError(.sizeLimit, url.path, "17179869184 elements") {
                try Safetensors.read(contentsOf: url, limits: smallLimits)
            }
            // Within the element limit but over the budget.
            let within = singleTensorFile(#""dtype":"F32","shape":[1073741824],"data_offsets":[0,4294967296]"#, data: [])
            try Data(within).write(to: url)
            #expect(truncate(url.path, off_t(within.count + (4 << 30))) == 0)
            expectError(.sizeLimit, url.path, "needs 8.0 GiB", "budget of 1.0 GiB") {
                try Safetensors.read(contentsOf: url, limits: smallLimits)
            }
        }
    }

    /// Two F32 scalars "a" and "b" with the given offsets over `dataSize` bytes.
    private func twoTensors(_ a: (Int, Int), _ b: (Int, Int), dataSize: Int) -> [UInt8] {
        safetensorsFile(
            #"{"a":{"dtype":"F32","shape":[],"data_offsets":[\#(a.0),\#(a.1)]},"#
                + #""b":{"dtype":"F32","shape":[],"data_offsets":[\#(b.0),\#(b.1)]}}"#,
            data: float32Bytes(Array(repeating: 1, count: dataSize / 4)))
    }

    @Test func safetensorsOffsetsMustTileTheData() throws {
        // Accepted: contiguous, in either JSON order.
        #expect(try Safetensors.decode(twoTensors((0, 4), (4, 8), dataSize: 8)).count == 2)
        #expect(try Safetensors.decode(twoTensors((4, 8), (0, 4), dataSize: 8)).count == 2)
        expectError(.invalidFile, "tensor \"b\"", "overlaps tensor \"a\"") {
            try Safetensors.decode(twoTensors((0, 4), (0, 4), dataSize: 4))
        }
        expectError(.invalidFile, "tensor \"b\"", "gap of 4 bytes after tensor \"a\"") {
            try Safetensors.decode(twoTensors((0, 4), (8, 12), dataSize: 12))
        }
        expectError(.invalidFile, "gap of 4 bytes at the start") {
            try Safetensors.decode(twoTensors((4, 8), (8, 12), dataSize: 12))
        }
        expectError(.invalidFile, "tensor \"b\"", "ends at data byte 8", "leaving 4 bytes unused") {
            try Safetensors.decode(twoTensors((0, 4), (4, 8), dataSize: 12))
        }
        expectError(.invalidFile, "no tensors", "leaving 4 bytes unused") {
            try Safetensors.decode(safetensorsFile("{}", data: [1, 2, 3, 4]))
        }
        // Begin after end is refused per entry.
        expectError(.invalidFile, "begin after end") {
            try Safetensors.decode(twoTensors((0, 4), (8, 4), dataSize: 8))
        }
        // The file reader refuses the same layouts before reading any tensor.
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("overlap.safetensors")
            try Data(twoTensors((0, 4), (0, 4), dataSize: 4)).write(to: url)
            expectError(.invalidFile, url.path, "overlaps") { try Safetensors.read(contentsOf: url) }
        }
    }

    @Test func integerTensorAsParameterIsAWrongDType() throws {
        let file = safetensorsFile(
            #"{"conv.weight":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},"#
                + #""bn.weight":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}"#,
            data: Array(repeating: 0, count: 20))
        let contents = try Safetensors.decodeContents(file)
        #expect(contents.tensors.keys.sorted() == ["bn.weight"])
        #expect(contents.otherDTypes == ["conv.weight": "I64"])
        expectError(.invalidParameters, "layer:", "conv.weight has dtype I64", "expected F16, BF16, F32 or F64") {
            try contents.parameters(expecting: ["bn.weight", "conv.weight"], layer: "layer")
        }
        #expect(try contents.parameters(expecting: ["bn.weight"], layer: "layer").count == 1)
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("p.safetensors")
            try Data(file).write(to: url)
            #expect(try Safetensors.readContents(contentsOf: url) == contents)
        }
    }

    // MARK: HostLimits

    @Test func byteCountsParseAndFormat() {
        #expect(HostLimits.parseByteCount("1234") == 1234)
        #expect(HostLimits.parseByteCount("2G") == 2 << 30)
        #expect(HostLimits.parseByteCount(" 512m ") == 512 << 20)
        #expect(HostLimits.parseByteCount("64KiB") == 64 << 10)
        #expect(HostLimits.parseByteCount("1TB") == 1 << 40)
        for bad in ["", "G", "-1", "1.5G", "12X", "99999999999999999999", "9999999999T", "１２"] {
            #expect(HostLimits.parseByteCount(bad) == nil, "\(bad)")
        }
        #expect(HostLimits.format(bytes: 512) == "512 bytes")
        #expect(HostLimits.format(bytes: 1536) == "1.5 KiB")
        #expect(HostLimits.format(bytes: 64 << 30) == "64.0 GiB")
    }

    @Test func environmentAndDefaults() {
        let fromEnvironment = HostLimits.fromEnvironment([
            "NYQUIST_HOST_MEMORY_BUDGET": "2G", "NYQUIST_PNG_DECODE_BUDGET": "16M",
        ])
        #expect(fromEnvironment == HostLimits(memoryBudget: 2 << 30, pngDecodeBudget: 16 << 20))
        // The PNG budget defaults to min(256 MiB, memory budget).
        #expect(HostLimits.fromEnvironment(["NYQUIST_HOST_MEMORY_BUDGET": "100M"]).pngDecodeBudget == 100 << 20)
        #expect(HostLimits.fromEnvironment(["NYQUIST_HOST_MEMORY_BUDGET": "8G"]).pngDecodeBudget == 256 << 20)
        // Unreadable values fall back to the default, which has a floor.
        let fallback = HostLimits.fromEnvironment(["NYQUIST_HOST_MEMORY_BUDGET": "lots"])
        #expect(fallback.memoryBudget >= HostLimits.minimumBudget)
        #expect(HostLimits.defaultMemoryBudget() >= HostLimits.minimumBudget)
    }

    @Test func checkAllocationIsOverflowSafe() {
        let limits = HostLimits(memoryBudget: 1000)
        #expect(throws: Never.self) { try limits.checkAllocation(bytes: 1000, what: "x") }
        expectError(.sizeLimit, "x needs 1001 bytes", "budget of 1000 bytes") {
            try limits.checkAllocation(bytes: 1001, what: "x")
        }
        expectError(.sizeLimit, "more bytes than can be counted") {
            try limits.checkAllocation(count: Int.max / 2, bytesPerElement: 4, what: "y")
        }
        expectError(.sizeLimit, "more bytes than can be counted") { try limits.checkAllocation(bytes: -1, what: "z") }
    }
}
