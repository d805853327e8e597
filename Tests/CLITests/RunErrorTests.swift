import Foundation
import NyquistCore
import Testing

/// Every bad input: non-zero exit, one `nyquist: error:` line, no output file.
@Suite("nyquist run: error paths")
struct RunErrorTests {
    /// A workspace holding a valid 1x3x8x8 input `x.npy`.
    private func workspaceWithInput() throws -> Workspace {
        let workspace = try Workspace()
        var random = SplitMix64(seed: 5)
        try workspace.write(random.tensor([1, 3, 8, 8]), "x.npy")
        return workspace
    }

    private func run(_ op: String, _ extra: [String], in workspace: Workspace, input: String = "x.npy") throws
        -> CLI.Outcome
    {
        try workspace.run(["run", op, "--input", input, "--output", "y.npy"] + extra)
    }

    @Test("missing input file")
    func missingFile() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try run("blur-pool", [], in: workspace, input: "does-not-exist.npy")
        expectCLIError(outcome, in: workspace, mentioning: "does-not-exist.npy")
    }

    @Test("input that is not an NPY file")
    func corruptFile() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        try workspace.write(bytes: Array("this is not an npy file\n".utf8), "x.npy")
        expectCLIError(try run("blur-pool", [], in: workspace), in: workspace, mentioning: "NPY")
    }

    @Test("truncated NPY file")
    func truncatedFile() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let bytes = handWrittenNPY(descr: "<f4", shape: [1, 1, 4, 4], payload: [UInt8](repeating: 0, count: 20))
        try workspace.write(bytes: bytes, "x.npy")
        expectCLIError(try run("max-pool", [], in: workspace), in: workspace)
    }

    @Test("int32 NPY input")
    func int32Input() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let bytes = handWrittenNPY(descr: "<i4", shape: [1, 1, 2, 2], payload: [UInt8](repeating: 1, count: 16))
        try workspace.write(bytes: bytes, "x.npy")
        expectCLIError(try run("max-pool", [], in: workspace), in: workspace, mentioning: "<i4")
    }

    @Test("rank-3 input")
    func rank3Input() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        try workspace.write(try HostTensor(shape: [3, 8, 8], repeating: 1), "x.npy")
        expectCLIError(try run("blur-pool", [], in: workspace), in: workspace, mentioning: "rank")
    }

    @Test("reflect padding larger than the map (1x1x2x2, filter 5)")
    func reflectPaddingTooLarge() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        try workspace.write(try HostTensor(shape: [1, 1, 2, 2], repeating: 1), "x.npy")
        let outcome = try run("blur-pool", ["--filter-size", "5"], in: workspace)
        expectCLIError(outcome, in: workspace, mentioning: "reflect")
    }

    @Test("max-blur-pool on a map too small for its 2x2 max")
    func maxBlurPoolTooSmall() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        try workspace.write(try HostTensor(shape: [1, 1, 1, 5], repeating: 1), "x.npy")
        expectCLIError(try run("max-blur-pool", [], in: workspace), in: workspace)
    }

    @Test("filter size 9")
    func filterSize9() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let outcome = try run("blur-pool", ["--filter-size", "9"], in: workspace)
        expectCLIError(outcome, in: workspace, mentioning: "filter size 9")
    }

    @Test("stride 0", arguments: ["max-pool", "avg-pool", "blur-pool", "max-blur-pool"])
    func strideZero(_ op: String) throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        expectCLIError(try run(op, ["--stride", "0"], in: workspace), in: workspace, mentioning: "stride")
    }

    @Test("max-pool padding over half the kernel")
    func maxPoolPaddingTooLarge() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        expectCLIError(try run("max-pool", ["--kernel", "2", "--pad", "2"], in: workspace), in: workspace)
    }

    @Test("unknown padding name")
    func badPaddingName() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let outcome = try run("blur-pool", ["--padding", "mirror"], in: workspace)
        expectCLIError(outcome, in: workspace, mentioning: "mirror")
    }

    @Test(
        "option that does not apply to the operator",
        arguments: [
            ("max-pool", ["--filter-size", "3"]), ("avg-pool", ["--padding", "zero"]),
            ("max-pool", ["--pad-offset", "1"]), ("blur-pool", ["--kernel", "3"]), ("max-blur-pool", ["--pad", "1"]),
        ])
    func optionNotApplicable(_ op: String, _ options: [String]) throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let outcome = try run(op, options, in: workspace)
        expectCLIError(outcome, in: workspace, mentioning: options[0])
    }

    @Test("parameter and extra-input options are refused", arguments: ["--params", "--extra", "--grad-params"])
    func parameterOptionsRefused(_ option: String) throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let outcome = try run("blur-pool", [option, "p.safetensors"], in: workspace)
        expectCLIError(outcome, in: workspace, mentioning: option)
    }

    /// A polyphase command line that must fail, and what its error must mention.
    struct PolyphaseErrorCase: Sendable, CustomTestStringConvertible {
        var op: String
        var options: [String]
        var mention: String
        var testDescription: String { ([op] + options).joined(separator: " ") }
    }

    @Test(
        "polyphase option errors",
        arguments: [
            PolyphaseErrorCase(op: "aps-pool", options: ["--norm", "l3"], mention: "l3"),
            PolyphaseErrorCase(op: "aps-pool", options: ["--kernel", "3"], mention: "--kernel"),
            PolyphaseErrorCase(op: "aps-pool", options: ["--filter-size", "8"], mention: "filter size 8"),
            PolyphaseErrorCase(op: "tips-pool", options: ["--kernel", "4"], mention: "odd"),
            PolyphaseErrorCase(op: "tips-pool", options: ["--norm", "l1"], mention: "--norm"),
            PolyphaseErrorCase(op: "blur-pool", options: ["--lambda-fm", "1"], mention: "--lambda-fm"),
            PolyphaseErrorCase(op: "aps-pool", options: ["--params", "p.safetensors"], mention: "--params"),
            PolyphaseErrorCase(op: "tips-pool", options: ["--shift-fill", "mirror"], mention: "mirror"),
            PolyphaseErrorCase(op: "tips-pool", options: ["--grad-params", "gp.safetensors"], mention: "--grad-params"),
            PolyphaseErrorCase(op: "blur-pool", options: ["--indices", "i.npy"], mention: "--indices"),
            PolyphaseErrorCase(op: "aps-pool", options: ["--indices", "bad-count.npy"], mention: "bad-count.npy"),
            PolyphaseErrorCase(op: "aps-pool", options: ["--indices", "bad-value.npy"], mention: "bad-value.npy"),
        ])
    func polyphaseOptionErrors(_ error: PolyphaseErrorCase) throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        try workspace.write(try HostTensor(shape: [2], values: [0, 1]), "bad-count.npy")
        try workspace.write(try HostTensor(shape: [1], values: [4]), "bad-value.npy")
        let outcome = try run(error.op, error.options, in: workspace)
        expectCLIError(outcome, in: workspace, outputs: ["y.npy", "gp.safetensors"], mentioning: error.mention)
    }

    @Test("tips-pool parameters with a wrong shape or missing name")
    func tipsBadParameters() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        try Safetensors.write(
            ["conv1.weight": try HostTensor(shape: [3, 1, 3, 3], repeating: 0.1),
             "conv2.weight": try HostTensor(shape: [3, 1, 1], repeating: 1)], to: workspace.url("bad.safetensors"))
        let outcome = try run("tips-pool", ["--params", "bad.safetensors"], in: workspace)
        expectCLIError(outcome, in: workspace, mentioning: "conv2.weight")
        try Safetensors.write(
            ["conv1.weight": try HostTensor(shape: [3, 1, 3, 3], repeating: 0.1)], to: workspace.url("missing.safetensors"))
        let missing = try run("tips-pool", ["--params", "missing.safetensors"], in: workspace)
        expectCLIError(missing, in: workspace, mentioning: "conv2.weight")
    }

    @Test("gradient of the output with the wrong shape")
    func gradientShapeMismatch() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        try workspace.write(try HostTensor(shape: [1, 3, 3, 4], repeating: 1), "gy.npy")
        let outcome = try run("blur-pool", ["--grad-output", "gy.npy", "--grad-input", "gx.npy"], in: workspace)
        expectCLIError(outcome, in: workspace, outputs: ["y.npy", "gx.npy"], mentioning: "gy.npy")
    }

    @Test("--grad-output and --grad-input only together")
    func gradientOptionsPaired() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        try workspace.write(try HostTensor(shape: [1, 3, 4, 4], repeating: 1), "gy.npy")
        expectCLIError(
            try run("blur-pool", ["--grad-output", "gy.npy"], in: workspace), in: workspace,
            mentioning: "--grad-input")
        expectCLIError(
            try run("blur-pool", ["--grad-input", "gx.npy"], in: workspace), in: workspace,
            outputs: ["y.npy", "gx.npy"], mentioning: "--grad-output")
    }

    @Test("unknown operator lists the valid ones")
    func unknownOperator() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let outcome = try run("median-pool", [], in: workspace)
        expectCLIError(outcome, in: workspace, mentioning: "median-pool")
        for op in ["max-pool", "avg-pool", "blur-pool", "max-blur-pool", "aps-pool", "tips-pool", "lift-down-pool", "lift-up-pool", "adaptive-blur-pool"] {
            #expect(outcome.standardError.contains(op), "\(op) missing from the list of valid operators")
        }
    }

    @Test("--device that matches no device")
    func noSuchDevice() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let outcome = try run("blur-pool", ["--device", "no-such-device"], in: workspace)
        expectCLIError(outcome, in: workspace, mentioning: "no-such-device")
    }

    @Test("--device index out of range")
    func deviceIndexOutOfRange() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        expectCLIError(try run("max-pool", ["--device", "99"], in: workspace), in: workspace, mentioning: "99")
    }

    @Test("unknown backend")
    func unknownBackend() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let outcome = try run("blur-pool", ["--backend", "cuda"], in: workspace)
        expectCLIError(outcome, in: workspace, mentioning: "cuda")
    }

    @Test("output in a missing directory")
    func unwritableOutput() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let outcome = try workspace.run(["run", "blur-pool", "--input", "x.npy", "--output", "missing/y.npy"])
        expectCLIError(outcome, in: workspace, outputs: ["missing"])
        #expect(try workspace.files() == ["x.npy"])
    }

    @Test("a failed second write removes the first output")
    func failedGradientWriteRemovesOutput() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        try workspace.write(try HostTensor(shape: [1, 3, 4, 4], repeating: 1), "gy.npy")
        let outcome = try run(
            "blur-pool", ["--grad-output", "gy.npy", "--grad-input", "missing/gx.npy"], in: workspace)
        expectCLIError(outcome, in: workspace, outputs: ["y.npy", "missing"])
        #expect(try workspace.files() == ["gy.npy", "x.npy"])
    }

    @Test("a failed run leaves an existing output file untouched")
    func existingOutputKept() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        let previous = try HostTensor(shape: [1, 1, 1, 3], values: [1, 2, 3])
        try workspace.write(previous, "y.npy")
        let outcome = try run("blur-pool", ["--filter-size", "9"], in: workspace)
        expectCLIError(outcome, in: workspace, outputs: [])
        #expect(try workspace.read("y.npy") == previous)
    }

    @Test("ArgumentParser's own errors exit non-zero with one line and write nothing")
    func parserErrors() throws {
        let workspace = try workspaceWithInput()
        defer { workspace.remove() }
        for arguments in [
            ["run", "blur-pool", "--input", "x.npy", "--output", "y.npy", "--stride", "two"],
            ["run", "blur-pool", "--input", "x.npy"],
            ["run", "blur-pool", "--input", "x.npy", "--output", "y.npy", "--no-such-option"],
        ] {
            let outcome = try workspace.run(arguments)
            #expect(outcome.status != 0, "\(outcome)")
            #expect(outcome.errorLines.count == 1, "\(outcome)")
            #expect(outcome.standardError.hasPrefix("nyquist: error: "), "\(outcome)")
            #expect(!workspace.exists("y.npy"))
        }
    }
}
