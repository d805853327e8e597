import Foundation
import NyquistCore
import Testing

// The bad-input catalogue: option extremes, malformed and strange files, and writes that fail
// halfway with an output already in place. Every case must end the same way: a non-zero exit,
// no crash signal, no hang, exactly one `nyquist: error:` line on stderr, no new file or folder,
// and every file that existed before byte-identical. The CLI runs under an address-space limit
// so that an absurd allocation fails the case instead of exhausting the machine.

/// One bad command: its arguments, the files it needs besides the standard ones, and extra
/// environment variables.
struct BadInput: CustomTestStringConvertible, Sendable {
    let name: String
    let arguments: [String]
    let environment: [String: String]
    let prepare: @Sendable (Workspace) throws -> Void

    init(
        _ name: String, _ arguments: [String], environment: [String: String] = [:],
        prepare: @escaping @Sendable (Workspace) throws -> Void = { _ in }
    ) {
        self.name = name
        self.arguments = arguments
        self.environment = environment
        self.prepare = prepare
    }

    var testDescription: String { name }
}

/// 2^31, 2^62 and Int.max: a 32-bit wrap, an overflow on doubling, an overflow on anything.
private let extremes = ["2147483648", "4611686018427387904", "9223372036854775807"]

/// Options whose extreme values must be refused: (operator, option, other arguments).
private let integerOptions: [(String, String, [String])] = [
    ("max-pool", "--kernel", []), ("max-pool", "--stride", []), ("max-pool", "--pad", ["--kernel", "3"]),
    ("avg-pool", "--kernel", ["--backend", "reference"]), ("avg-pool", "--pad", ["--kernel", "3"]),
    ("blur-pool", "--stride", []), ("blur-pool", "--pad-offset", []), ("blur-pool", "--filter-size", []),
    ("max-blur-pool", "--pad-offset", []), ("max-blur-pool", "--stride", []), ("aps-pool", "--filter-size", []),
    ("tips-pool", "--kernel", []), ("tips-pool", "--max-shift", []), ("adaptive-blur-pool", "--groups", []),
    ("adaptive-blur-pool", "--kernel", []), ("adaptive-blur-pool", "--stride", []), ("lift-down-pool", "--kernel", []),
]

private func optionCases() -> [BadInput] {
    var cases: [BadInput] = []
    for (op, option, rest) in integerOptions {
        for value in extremes {
            cases.append(BadInput("\(op) \(option) \(value)", ["run", op, "--input", "x.npy", "--output", "out.npy", option, value] + rest))
        }
    }
    for (option, value) in [("--width", extremes[2]), ("--height", extremes[1]), ("--width", extremes[0])] {
        cases.append(
            BadInput(
                "lift-up-pool \(option) \(value)",
                ["run", "lift-up-pool", "--input", "ll.npy", "--output", "out.npy", "--extra", "bands", option, value]))
    }
    cases.append(
        BadInput(
            "blur-pool pad offset 2^31 with stride 2^30 + 1 (once a kernel read out of bounds)",
            ["run", "blur-pool", "--input", "x1.npy", "--output", "out.npy", "--padding", "zero", "--pad-offset", "2147483648",
             "--stride", "1073741825"]))
    let weights: [(String, String, String?)] = [
        ("lift-down-pool", "--lambda-u", "nan"), ("lift-down-pool", "--lambda-p=-1", nil), ("lift-down-pool", "--lambda-u", "inf"),
        ("tips-pool", "--lambda-fm", "1e300"), ("tips-pool", "--lambda-undo", "nan"),
    ]
    for (op, option, value) in weights {
        cases.append(
            BadInput(
                "\(op) \(option) \(value ?? "")",
                ["run", op, "--input", "x.npy", "--output", "out.npy", "--grad-output", "gy.npy", "--grad-input", "gx.npy",
                 option] + (value.map { [$0] } ?? [])))
    }
    cases.append(
        BadInput("an option value that is not a number", ["run", "blur-pool", "--input", "x.npy", "--output", "out.npy", "--stride", "two"]))
    cases.append(BadInput("a negative number read as an option", ["run", "blur-pool", "--input", "x.npy", "--output", "out.npy", "--stride", "-2"]))
    cases.append(
        BadInput("adaptive-blur-pool --groups 3 on 8 channels", ["run", "adaptive-blur-pool", "--input", "x.npy", "--output", "out.npy", "--groups", "3"]))
    cases.append(
        BadInput(
            "adaptive-blur-pool with 8192 groups of 8192 channels (21.7 GB of weights)",
            ["run", "adaptive-blur-pool", "--input", "wide.npy", "--output", "out.npy", "--groups", "8192"],
            prepare: { try $0.write(HostTensor(shape: [1, 8192, 4, 4], repeating: 0.5), "wide.npy") }))
    cases.append(BadInput("unknown operator", ["run", "median-pool", "--input", "x.npy", "--output", "out.npy"]))
    cases.append(BadInput("unknown padding", ["run", "blur-pool", "--input", "x.npy", "--output", "out.npy", "--padding", "mirror"]))
    return cases
}

/// An NPY header (version 1.0) for `descr` and `shape`, without data.
private func npyHeader(descr: String, shape: [Int]) -> [UInt8] {
    handWrittenNPY(descr: descr, shape: shape, payload: [])
}

/// A safetensors file from a JSON header and raw data bytes.
private func safetensors(header: String, data: [UInt8]) -> [UInt8] {
    let json = Array(header.utf8)
    return withUnsafeBytes(of: UInt64(json.count).littleEndian, Array.init) + json + data
}

/// A tips-pool parameter file for 8 channels and k = 3 whose two entries are
/// (dtype, shape, begin, end), plus `extra` JSON entries and `dataBytes` of zeros.
private func tipsParameters(
    conv1: (String, [Int], Int, Int), conv2: (String, [Int], Int, Int), extra: String = "", dataBytes: Int
) -> [UInt8] {
    func entry(_ value: (String, [Int], Int, Int)) -> String {
        "{\"dtype\":\"\(value.0)\",\"shape\":\(value.1),\"data_offsets\":[\(value.2),\(value.3)]}"
    }
    return safetensors(
        header: "{\"conv1.weight\":\(entry(conv1)),\"conv2.weight\":\(entry(conv2))\(extra)}",
        data: [UInt8](repeating: 0, count: dataBytes))
}

/// A tips-pool case whose --params file is `tipsParameters(...)`.
private func tipsParametersCase(
    _ name: String, conv1: (String, [Int], Int, Int), conv2: (String, [Int], Int, Int), extra: String = "",
    dataBytes: Int, options: [String] = []
) -> BadInput {
    BadInput(name, tips(["--params", "p.safetensors"] + options)) { workspace in
        try workspace.write(
            bytes: tipsParameters(conv1: conv1, conv2: conv2, extra: extra, dataBytes: dataBytes), "p.safetensors")
    }
}

/// CRC-32 (PNG's chunk checksum), bit by bit: small inputs only.
private func crc32(_ bytes: [UInt8]) -> UInt32 {
    var crc: UInt32 = 0xffff_ffff
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = (crc >> 1) ^ (0xedb8_8320 & (0 &- (crc & 1))) }
    }
    return ~crc
}

/// A PNG chunk with its length and checksum.
private func pngChunk(_ type: String, _ data: [UInt8]) -> [UInt8] {
    let typeBytes = Array(type.utf8)
    let length = UInt32(data.count)
    return withUnsafeBytes(of: length.bigEndian, Array.init) + typeBytes + data
        + withUnsafeBytes(of: crc32(typeBytes + data).bigEndian, Array.init)
}

/// A gray 8-bit PNG whose header declares `width` x `height` but whose data is one tiny
/// zlib stream: a decoder must refuse it from the header, before inflating anything.
private func hugePNG(width: UInt32, height: UInt32) -> [UInt8] {
    let signature: [UInt8] = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]
    let header = withUnsafeBytes(of: width.bigEndian, Array.init) + withUnsafeBytes(of: height.bigEndian, Array.init)
        + [8, 0, 0, 0, 0]
    // An empty stored zlib block: valid deflate, no data.
    let data: [UInt8] = [0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01]
    return signature + pngChunk("IHDR", header) + pngChunk("IDAT", data) + pngChunk("IEND", [])
}

private func fileCases() -> [BadInput] {
    let run = ["run", "blur-pool", "--output", "out.npy"]
    var cases: [BadInput] = [
        BadInput("input missing", run + ["--input", "missing.npy"]),
        BadInput("input is a folder", run + ["--input", "folder"], prepare: { try makeFolder($0, "folder") }),
        BadInput("input is /dev/zero", run + ["--input", "/dev/zero"]),
        BadInput("input is /dev/null", run + ["--input", "/dev/null"]),
        BadInput(
            "input is a FIFO with no writer", run + ["--input", "fifo.npy"],
            prepare: { workspace in
                guard mkfifo(workspace.url("fifo.npy").path, 0o644) == 0 else { throw HarnessError("mkfifo failed") }
            }),
        BadInput("input is empty", run + ["--input", "empty.npy"], prepare: { try $0.write(bytes: [], "empty.npy") }),
        BadInput("input is text", run + ["--input", "text.npy"], prepare: { try $0.write(bytes: Array("hello\n".utf8), "text.npy") }),
        BadInput(
            "input payload shorter than its header says", run + ["--input", "short.npy"],
            prepare: { try $0.write(bytes: npyHeader(descr: "<f4", shape: [1, 1, 8, 8]) + [UInt8](repeating: 0, count: 100), "short.npy") }),
        BadInput(
            "input header declares 64 GiB on a 128-byte file", run + ["--input", "claims.npy"],
            prepare: { try $0.write(bytes: npyHeader(descr: "<f4", shape: [1, 1, 131_072, 131_072]), "claims.npy") }),
        BadInput(
            "input header declares 64 GiB on a sparse 64 GiB file", run + ["--input", "sparse.npy"],
            prepare: { workspace in
                let header = npyHeader(descr: "<f4", shape: [1, 1, 131_072, 131_072])
                try workspace.write(bytes: header, "sparse.npy")
                guard truncate(workspace.url("sparse.npy").path, off_t(header.count) + (off_t(1) << 36)) == 0 else {
                    throw HarnessError("truncate failed")
                }
            }),
        BadInput(
            "input header declares more elements than an Int holds", run + ["--input", "overflow.npy"],
            prepare: { try $0.write(bytes: npyHeader(descr: "<f4", shape: [4_294_967_296, 4_294_967_296, 4]), "overflow.npy") }),
        BadInput(
            "input of complex dtype", run + ["--input", "complex.npy"],
            prepare: { try $0.write(bytes: npyHeader(descr: "<c8", shape: [1, 1, 2, 2]) + [UInt8](repeating: 0, count: 32), "complex.npy") }),
        BadInput("input of rank 3 for blur-pool", run + ["--input", "rank3.npy"], prepare: { try $0.write(HostTensor(shape: [1, 8, 16], repeating: 1), "rank3.npy") }),
        BadInput("gradient file missing", run + ["--input", "x.npy", "--grad-output", "nothing.npy", "--grad-input", "gx.npy"]),
        BadInput("gradient of the wrong shape", run + ["--input", "x.npy", "--grad-output", "x.npy", "--grad-input", "gx.npy"]),
        BadInput(
            "aps-pool phase index 7", ["run", "aps-pool", "--input", "x.npy", "--output", "out.npy", "--indices", "indices.npy"],
            prepare: { try $0.write(HostTensor(shape: [1], values: [7]), "indices.npy") }),
        // Parameters (safetensors) of tips-pool: 8 channels, k = 3.
        BadInput("params missing", tips(["--params", "missing.safetensors"])),
        BadInput("params is a folder", tips(["--params", "folder"]), prepare: { try makeFolder($0, "folder") }),
        BadInput("params is garbage", tips(["--params", "p.safetensors"]), prepare: { try $0.write(bytes: Array("not a safetensors file".utf8), "p.safetensors") }),
        BadInput(
            "params header length of 2^62", tips(["--params", "p.safetensors"]),
            prepare: { try $0.write(bytes: withUnsafeBytes(of: (UInt64(1) << 62).littleEndian, Array.init) + Array("{}".utf8), "p.safetensors") }),
        tipsParametersCase(
            "params with overlapping data offsets", conv1: ("F32", [8, 1, 3, 3], 0, 288), conv2: ("F32", [8, 1, 1, 1], 256, 288),
            dataBytes: 288),
        tipsParametersCase(
            "params with a gap between tensors", conv1: ("F32", [8, 1, 3, 3], 0, 288), conv2: ("F32", [8, 1, 1, 1], 292, 324),
            dataBytes: 324),
        tipsParametersCase(
            "params with an unexpected tensor", conv1: ("F32", [8, 1, 3, 3], 0, 288), conv2: ("F32", [8, 1, 1, 1], 288, 320),
            extra: ",\"fc.weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[320,324]}", dataBytes: 324),
        tipsParametersCase(
            "params with an integer weight", conv1: ("I32", [8, 1, 3, 3], 0, 288), conv2: ("F32", [8, 1, 1, 1], 288, 320),
            dataBytes: 320),
        tipsParametersCase(
            "params of the wrong shape", conv1: ("F32", [8, 1, 5, 5], 0, 800), conv2: ("F32", [8, 1, 1, 1], 800, 832),
            dataBytes: 832),
        tipsParametersCase(
            "params prefix that matches nothing", conv1: ("F32", [8, 1, 3, 3], 0, 288), conv2: ("F32", [8, 1, 1, 1], 288, 320),
            dataBytes: 320, options: ["--params-prefix", "layer9."]),
        BadInput("params prefix without params", tips(["--params-prefix", "layer1."])),
        // PNG
        BadInput(
            "PNG truncated after its signature", ["run", "blur-pool", "--input", "cut.png", "--output", "out.npy"],
            prepare: { try $0.write(bytes: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0], "cut.png") }),
        BadInput(
            "PNG that is an NPY file", ["run", "blur-pool", "--input", "fake.png", "--output", "out.npy"],
            prepare: { try $0.write(HostTensor(shape: [1, 1, 4, 4], repeating: 1), "fake.png") }),
        BadInput(
            "PNG declaring 30000 x 30000 pixels over the decode budget",
            ["run", "blur-pool", "--input", "huge.png", "--output", "out.npy"], environment: ["NYQUIST_PNG_DECODE_BUDGET": "64M"],
            prepare: { try $0.write(bytes: hugePNG(width: 30_000, height: 30_000), "huge.png") }),
        BadInput(
            "PNG declaring 2^31 - 1 x 2^31 - 1 pixels", ["run", "blur-pool", "--input", "huge.png", "--output", "out.npy"],
            prepare: { try $0.write(bytes: hugePNG(width: 0x7fff_ffff, height: 0x7fff_ffff), "huge.png") }),
        BadInput(
            "PNG output of 8 channels", ["run", "blur-pool", "--input", "x.npy", "--output", "y.png"]),
        BadInput(
            "host memory budget too small for the input", ["run", "blur-pool", "--input", "x.npy", "--output", "out.npy"],
            environment: ["NYQUIST_HOST_MEMORY_BUDGET": "1K"]),
    ]
    cases.append(BadInput("unknown backend", run + ["--input", "x.npy", "--backend", "cuda"]))
    return cases
}

private func tips(_ rest: [String]) -> [String] {
    ["run", "tips-pool", "--input", "x.npy", "--output", "out.npy"] + rest
}

private func makeFolder(_ workspace: Workspace, _ name: String) throws {
    try FileManager.default.createDirectory(at: workspace.url(name), withIntermediateDirectories: true)
}

/// Commands that compute everything and then fail on one of their writes, with `out.npy` (and
/// `gx.npy`) already in place.
private func writeFailureCases() -> [BadInput] {
    let gradients = ["--grad-output", "gy.npy", "--grad-input", "gx.npy"]
    return [
        BadInput(
            "aps-pool: indices.npy in --extra is a folder",
            ["run", "aps-pool", "--input", "x.npy", "--output", "out.npy", "--extra", "ex"],
            prepare: { try makeFolder($0, "ex/indices.npy") }),
        BadInput(
            "tips-pool: losses.json in --extra is a folder",
            ["run", "tips-pool", "--input", "x.npy", "--output", "out.npy", "--train", "--extra", "ex"],
            prepare: { try makeFolder($0, "ex/losses.json") }),
        BadInput(
            "lift-down-pool: regularisers.json in --extra is a folder",
            ["run", "lift-down-pool", "--input", "x.npy", "--output", "out.npy", "--train", "--extra", "ex"],
            prepare: { try makeFolder($0, "ex/regularisers.json") }),
        BadInput(
            "adaptive-blur-pool: --grad-params under a regular file",
            ["run", "adaptive-blur-pool", "--input", "x.npy", "--output", "out.npy", "--grad-params", "notes.txt/gp.safetensors"]
                + gradients),
        BadInput(
            "blur-pool: --grad-input under a regular file",
            ["run", "blur-pool", "--input", "x.npy", "--output", "out.npy", "--grad-output", "gy.npy", "--grad-input", "notes.txt/gx.npy"]),
        BadInput(
            "tips-pool: --grad-params is a folder",
            ["run", "tips-pool", "--input", "x.npy", "--output", "out.npy", "--grad-params", "folder"] + gradients,
            prepare: { try makeFolder($0, "folder") }),
        BadInput(
            "aps-pool: a new --extra folder and an output that cannot be written",
            ["run", "aps-pool", "--input", "x.npy", "--output", "notes.txt/out.npy", "--extra", "new/deeper"]),
        BadInput(
            "blur-pool: --extra names a regular file",
            ["run", "aps-pool", "--input", "x.npy", "--output", "out.npy", "--extra", "notes.txt"]),
        BadInput(
            "blur-pool: --output is a folder", ["run", "blur-pool", "--input", "x.npy", "--output", "folder"],
            prepare: { try makeFolder($0, "folder") }),
        BadInput(
            "blur-pool: --output and --grad-input name one file",
            ["run", "blur-pool", "--input", "x.npy", "--output", "gx.npy", "--grad-output", "gy.npy", "--grad-input", "gx.npy"]),
        BadInput(
            "lift-down-pool: ll.npy in --extra is a folder",
            ["run", "lift-down-pool", "--input", "x.npy", "--output", "out.npy", "--extra", "ex"],
            prepare: { try makeFolder($0, "ex/ll.npy") }),
        BadInput(
            "adaptive-blur-pool: filters.npy in --extra is a folder",
            ["run", "adaptive-blur-pool", "--input", "x.npy", "--output", "out.npy", "--extra", "ex"] + gradients,
            prepare: { try makeFolder($0, "ex/filters.npy") }),
    ]
}

/// Every path under `root` (files and folders, relative), with the bytes of each small file
/// (large, sparse ones by size only).
private func snapshot(_ root: URL) throws -> [String: Data?] {
    var result: [String: Data?] = [:]
    let keys: [URLResourceKey] = [.isDirectoryKey, .fileSizeKey, .isRegularFileKey]
    guard let walker = FileManager.default.enumerator(at: root, includingPropertiesForKeys: keys) else { return [:] }
    let prefix = root.resolvingSymlinksInPath().path + "/"
    for case let url as URL in walker {
        let path = url.resolvingSymlinksInPath().path
        let relative = path.hasPrefix(prefix) ? String(path.dropFirst(prefix.count)) : path
        let values = try url.resourceValues(forKeys: Set(keys))
        if values.isRegularFile == true, (values.fileSize ?? 0) <= 1 << 20 {
            result[relative] = try Data(contentsOf: url)
        } else {
            result[relative] = Data("size \(values.fileSize ?? -1) folder \(values.isDirectory == true)".utf8)
        }
    }
    return result
}

@Suite("Bad-input catalogue")
struct BadInputCatalogueTests {
    static let cases = optionCases() + fileCases() + writeFailureCases()

    @Test func catalogueIsLargeEnough() {
        #expect(Self.cases.count >= 80, "the catalogue has \(Self.cases.count) cases")
        #expect(Set(Self.cases.map(\.name)).count == Self.cases.count, "case names are unique")
    }

    @Test(arguments: cases)
    func refusedCleanly(_ badInput: BadInput) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        try workspace.write(HostTensor(shape: [1, 8, 16, 16]) { Float(($0 * 37) % 101) / 101 }, "x.npy")
        try workspace.write(HostTensor(shape: [1, 1, 8, 8]) { Float($0 % 7) }, "x1.npy")
        try workspace.write(HostTensor(shape: [1, 8, 8, 8], repeating: 0.25), "gy.npy")
        try workspace.write(HostTensor(shape: [1, 8, 8, 8], repeating: 0.5), "ll.npy")
        for band in ["lh", "hl", "hh"] {
            try makeFolder(workspace, "bands")
            try workspace.write(HostTensor(shape: [1, 8, 8, 8], repeating: 0.1), "bands/\(band).npy")
        }
        try workspace.write(bytes: Array("an output from an earlier command\n".utf8), "out.npy")
        try workspace.write(bytes: Array("an input gradient from an earlier command\n".utf8), "gx.npy")
        try workspace.write(bytes: Array("a regular file\n".utf8), "notes.txt")
        try badInput.prepare(workspace)
        let before = try snapshot(workspace.directory)

        let outcome = try CLI.run(
            badInput.arguments, in: workspace.directory, environment: badInput.environment,
            addressSpaceLimitKiB: 4 << 20, timeLimit: 120)

        #expect(!outcome.timedOut, "hung: \(badInput.name)")
        #expect(outcome.signal == nil, "crashed with signal \(outcome.signal ?? 0): \(outcome)")
        #expect(outcome.status != 0, "succeeded: \(outcome)")
        #expect(outcome.errorLines.count == 1, "stderr is not one line: \(outcome)")
        #expect(outcome.errorLines.first?.hasPrefix("nyquist: error: ") == true, "\(outcome)")
        let after = try snapshot(workspace.directory)
        #expect(Set(after.keys) == Set(before.keys), "files added \(Set(after.keys).subtracting(before.keys).sorted()), removed \(Set(before.keys).subtracting(after.keys).sorted())")
        for (path, contents) in before where after[path] != nil {
            #expect(after[path] == contents, "\(path) changed")
        }
    }
}
