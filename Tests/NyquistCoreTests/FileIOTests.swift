import Foundation
import NyquistCore
import Testing

@Suite("File reading and atomic writing")
struct FileIOTests {
    let tensor: HostTensor

    init() throws {
        tensor = try HostTensor(shape: [2, 3]) { Float($0) - 1 }
    }

    @Test func npyWriteThenRead() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("x.npy")
            try NPY.write(tensor, to: url)
            #expect(try NPY.read(contentsOf: url) == tensor)
            #expect(try listing(directory) == ["x.npy"])
        }
    }

    @Test func safetensorsWriteThenRead() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("p.safetensors")
            try Safetensors.write(["w": tensor], metadata: ["format": "pt"], to: url)
            #expect(try Safetensors.read(contentsOf: url) == ["w": tensor])
            #expect(try Safetensors.decodeMetadata(Array(Data(contentsOf: url))) == ["format": "pt"])
            #expect(try listing(directory) == ["p.safetensors"])
        }
    }

    @Test func overwriteReplacesWholeFile() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("x.npy")
            try Data(repeating: 0xAB, count: 10_000).write(to: url)
            try NPY.write(tensor, to: url)
            #expect(try Array(Data(contentsOf: url)) == NPY.encode(tensor))
            #expect(try listing(directory) == ["x.npy"])
        }
    }

    @Test func writeIntoMissingDirectoryFails() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("missing/x.npy")
            expectError(.io, "cannot write", url.path) { try NPY.write(tensor, to: url) }
            expectError(.io, "cannot write", url.path) { try Safetensors.write(["w": tensor], to: url) }
            let names = try listing(directory)
            #expect(names.isEmpty)
        }
    }

    @Test func writeBelowARegularFileFails() throws {
        // Works even as root, where a read-only directory would not stop the write.
        try withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("plain")
            try Data([1]).write(to: file)
            expectError(.io, "cannot write") { try NPY.write(tensor, to: file.appendingPathComponent("x.npy")) }
            #expect(try listing(directory) == ["plain"])
        }
    }

    @Test func failedRenameLeavesNoTemporaryFile() throws {
        // The data is fully written to the temporary file, then the rename onto a non-empty
        // directory fails: the temporary file must be removed and the directory left alone.
        try withTemporaryDirectory { directory in
            let target = directory.appendingPathComponent("out.npy")
            try FileManager.default.createDirectory(at: target, withIntermediateDirectories: false)
            try Data([1]).write(to: target.appendingPathComponent("keep"))
            expectError(.io, "cannot write", target.path) { try NPY.write(tensor, to: target) }
            #expect(try listing(directory) == ["out.npy"])
            #expect(try listing(target) == ["keep"])
        }
    }

    @Test func readMissingFileFails() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("absent.npy")
            expectError(.io, "cannot read \(url.path): ", "No such file") { try NPY.read(contentsOf: url) }
            expectError(.io, "cannot read \(url.path): ") { try Safetensors.read(contentsOf: url) }
        }
    }

    @Test func readDirectoryFails() throws {
        try withTemporaryDirectory { directory in
            expectError(.io, "cannot read \(directory.path)") { try NPY.read(contentsOf: directory) }
        }
    }

    @Test func readNonFileURLFails() throws {
        let url = try #require(URL(string: "https://example.com/x.npy"))
        expectError(.io, "not a file URL") { try NPY.read(contentsOf: url) }
    }

    @Test func invalidContentsNameThePath() throws {
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("bad.npy")
            try Data("not numpy".utf8).write(to: url)
            expectError(.invalidFile, url.path, "magic") { try NPY.read(contentsOf: url) }
            expectError(.invalidFile, url.path, "header length") { try Safetensors.read(contentsOf: url) }
        }
    }

    @Test func readsLargeFile() throws {
        // Larger than the 1 MiB read chunk, so the read loop runs more than once.
        let big = try HostTensor(shape: [3, 300, 700]) { Float($0 % 1000) }
        try withTemporaryDirectory { directory in
            let url = directory.appendingPathComponent("big.npy")
            try NPY.write(big, to: url)
            #expect(try NPY.read(contentsOf: url) == big)
        }
    }
}
