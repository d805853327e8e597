import Foundation
import NyquistCore
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The file limits as the CLI reports them: one error line, no output.
@Suite("nyquist run: file limits")
struct FileLimitsCLITests {
    private func workspaceWithInput() throws -> Workspace {
        let workspace = try Workspace()
        var random = SplitMix64(seed: 5)
        try workspace.write(random.tensor([1, 4, 8, 8]), "x.npy")
        return workspace
    }

    @Test("an integer tensor under a parameter's name is a wrong dtype, not a missing parameter")
    func integerParameter() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let json = #"{"conv.weight":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#
        let header = Array(json.utf8)
        try workspace.write(
            bytes: withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init) + header + Array(repeating: 0, count: 16),
            "p.safetensors")
        let outcome = try workspace.run([
            "run", "adaptive-blur-pool", "--input", "x.npy", "--output", "y.npy", "--params", "p.safetensors",
            "--backend", "reference",
        ])
        expectCLIError(outcome, in: workspace, mentioning: "conv.weight has dtype I64; expected F16, BF16, F32 or F64")
    }

    @Test("a FIFO as input is refused without blocking")
    func fifoInput() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        #expect(mkfifo(workspace.url("pipe.npy").path, 0o600) == 0)
        let outcome = try workspace.run([
            "run", "max-pool", "--input", "pipe.npy", "--output", "y.npy", "--backend", "reference",
        ])
        expectCLIError(outcome, in: workspace, mentioning: "is a FIFO, not a regular file")
    }

    @Test("NYQUIST_HOST_MEMORY_BUDGET refuses an input over it")
    func memoryBudget() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let outcome = try workspace.run(
            ["run", "max-pool", "--input", "x.npy", "--output", "y.npy", "--backend", "reference"],
            environment: ["NYQUIST_HOST_MEMORY_BUDGET": "1K"])
        expectCLIError(outcome, in: workspace, mentioning: "needs 2.0 KiB, more than the host memory budget of 1.0 KiB")
    }
}
