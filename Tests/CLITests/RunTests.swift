import Foundation
import NyquistCore
import Testing

/// One `nyquist run` configuration and the output shape it must give.
struct RunCase: Sendable, CustomTestStringConvertible {
    var op: String
    var options: [String]
    var input: [Int]
    var output: [Int]

    var testDescription: String { ([op] + options).joined(separator: " ") }

    static let all: [RunCase] = [
        RunCase(op: "max-pool", options: [], input: [2, 3, 9, 10], output: [2, 3, 4, 5]),
        RunCase(op: "max-pool", options: ["--kernel", "3", "--stride", "2", "--pad", "1"], input: [2, 3, 9, 10], output: [2, 3, 5, 5]),
        RunCase(op: "avg-pool", options: [], input: [2, 3, 9, 10], output: [2, 3, 4, 5]),
        RunCase(op: "avg-pool", options: ["--kernel", "3", "--stride", "1", "--pad", "1"], input: [2, 3, 9, 10], output: [2, 3, 9, 10]),
        RunCase(op: "blur-pool", options: [], input: [2, 3, 9, 10], output: [2, 3, 5, 5]),
        RunCase(
            op: "blur-pool", options: ["--filter-size", "5", "--stride", "3", "--padding", "circular", "--pad-offset", "1"],
            input: [2, 3, 9, 10], output: [2, 3, 4, 4]),
        RunCase(op: "max-blur-pool", options: [], input: [2, 3, 9, 10], output: [2, 3, 4, 5]),
        RunCase(op: "max-blur-pool", options: ["--filter-size", "3", "--padding", "zero"], input: [2, 3, 9, 10], output: [2, 3, 4, 5]),
        RunCase(op: "aps-pool", options: [], input: [2, 3, 9, 10], output: [2, 3, 5, 5]),
        RunCase(op: "aps-pool", options: ["--filter-size", "4", "--norm", "linf"], input: [2, 3, 9, 10], output: [2, 3, 5, 5]),
        RunCase(op: "tips-pool", options: [], input: [2, 3, 9, 10], output: [2, 3, 5, 5]),
        RunCase(op: "tips-pool", options: ["--kernel", "5", "--seed", "4"], input: [2, 3, 9, 10], output: [2, 3, 5, 5]),
    ]
}

@Suite("nyquist run: success paths")
struct RunTests {
    @Test("OpenCL and the CPU reference agree", arguments: RunCase.all)
    func backendsAgree(_ run: RunCase) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        var random = SplitMix64(seed: 17)
        try workspace.write(random.tensor(run.input), "x.npy")
        var outputs: [HostTensor] = []
        for backend in ["opencl", "reference"] {
            let name = "y-\(backend).npy"
            let outcome = try workspace.run(
                ["run", run.op, "--input", "x.npy", "--output", name, "--backend", backend] + run.options)
            #expect(outcome.status == 0, "\(outcome)")
            #expect(outcome.standardError.isEmpty, "\(outcome)")
            #expect(outcome.standardOutput.contains(run.op), "\(outcome)")
            let y = try workspace.read(name)
            #expect(y.shape == run.output)
            outputs.append(y)
        }
        #expect(maxRelativeError(outputs[0], outputs[1]) <= 1e-5)
    }

    @Test(
        "--grad-output/--grad-input write the input gradient; backends agree",
        arguments: ["max-pool", "avg-pool", "blur-pool", "max-blur-pool", "aps-pool", "tips-pool"])
    func gradients(_ op: String) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let run = try #require(RunCase.all.first { $0.op == op && $0.options.isEmpty })
        var random = SplitMix64(seed: 29)
        try workspace.write(random.tensor(run.input), "x.npy")
        try workspace.write(random.tensor(run.output), "gy.npy")
        var results: [(HostTensor, HostTensor)] = []
        for backend in ["opencl", "reference"] {
            let outcome = try workspace.run([
                "run", op, "--input", "x.npy", "--output", "y-\(backend).npy", "--grad-output", "gy.npy",
                "--grad-input", "gx-\(backend).npy", "--backend", backend,
            ])
            #expect(outcome.status == 0, "\(outcome)")
            #expect(outcome.standardError.isEmpty, "\(outcome)")
            let y = try workspace.read("y-\(backend).npy")
            let gx = try workspace.read("gx-\(backend).npy")
            #expect(y.shape == run.output)
            #expect(gx.shape == run.input)
            results.append((y, gx))
        }
        #expect(maxRelativeError(results[0].0, results[1].0) <= 1e-5)
        #expect(maxRelativeError(results[0].1, results[1].1) <= 1e-5)
        #expect(results[1].1.values.contains { $0 != 0 })
    }

    @Test("aps-pool and tips-pool write their extra outputs and tips-pool its weight gradients; backends agree")
    func polyphaseExtras() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        var random = SplitMix64(seed: 41)
        try workspace.write(random.tensor([2, 3, 9, 10]), "x.npy")
        try workspace.write(random.tensor([2, 3, 5, 5]), "gy.npy")
        var indices: [HostTensor] = []
        var taus: [HostTensor] = []
        var gradients: [[String: HostTensor]] = []
        var losses: [[String: Double]] = []
        for backend in ["opencl", "reference"] {
            let aps = try workspace.run([
                "run", "aps-pool", "--input", "x.npy", "--output", "a-\(backend).npy", "--extra", "aps-\(backend)",
                "--norm", "l1", "--backend", backend,
            ])
            #expect(aps.status == 0, "\(aps)")
            let chosen = try workspace.read("aps-\(backend)/indices.npy")
            #expect(chosen.shape == [2] && chosen.values.allSatisfy { [0, 1, 2, 3].contains($0) })
            indices.append(chosen)
            let tips = try workspace.run([
                "run", "tips-pool", "--input", "x.npy", "--output", "t-\(backend).npy", "--extra", "tips-\(backend)",
                "--grad-output", "gy.npy", "--grad-input", "gx-\(backend).npy", "--grad-params",
                "gp-\(backend).safetensors", "--lambda-fm", "0.5", "--lambda-undo", "2", "--max-shift", "3",
                "--shift-fill", "zero", "--seed", "9", "--backend", backend,
            ])
            #expect(tips.status == 0, "\(tips)")
            #expect(try workspace.read("tips-\(backend)/psi.npy").shape == [2, 3, 10, 10])
            let tau = try workspace.read("tips-\(backend)/tau.npy")
            #expect(tau.shape == [2, 3, 4])
            taus.append(tau)
            let parameters = try Safetensors.read(contentsOf: workspace.url("gp-\(backend).safetensors"))
            #expect(parameters["conv1.weight"]?.shape == [3, 1, 3, 3] && parameters["conv2.weight"]?.shape == [3, 1, 1, 1])
            gradients.append(parameters)
            let json = try Data(contentsOf: workspace.url("tips-\(backend)/losses.json"))
            losses.append(try JSONDecoder().decode([String: Double].self, from: json))
        }
        #expect(indices[0] == indices[1])
        // Given indices (a residual shortcut reusing the main branch's phases) are sampled as given.
        try workspace.write(try HostTensor(shape: [2], values: [3, 2]), "given.npy")
        for backend in ["opencl", "reference"] {
            let outcome = try workspace.run([
                "run", "aps-pool", "--input", "x.npy", "--output", "g-\(backend).npy", "--indices", "given.npy",
                "--extra", "given-\(backend)", "--backend", backend,
            ])
            #expect(outcome.status == 0, "\(outcome)")
            #expect(try workspace.read("given-\(backend)/indices.npy").values == [3, 2])
        }
        #expect(try workspace.read("g-opencl.npy") == workspace.read("g-reference.npy"))
        #expect(maxRelativeError(taus[0], taus[1]) <= 1e-5)
        for name in ["conv1.weight", "conv2.weight"] {
            let device = try #require(gradients[0][name])
            let reference = try #require(gradients[1][name])
            #expect(maxRelativeError(device, reference) <= 1e-4, "\(name)")
        }
        for key in ["fm", "undo"] {
            let device = try #require(losses[0][key])
            let reference = try #require(losses[1][key])
            #expect(abs(device - reference) <= 1e-5 * max(abs(reference), 1), "\(key)")
        }
    }

    @Test("--train gives the same output as inference")
    func trainingForward() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        var random = SplitMix64(seed: 3)
        try workspace.write(random.tensor([1, 4, 12, 12]), "x.npy")
        for arguments in [["--output", "plain.npy"], ["--output", "train.npy", "--train"]] {
            let outcome = try workspace.run(["run", "blur-pool", "--input", "x.npy"] + arguments)
            #expect(outcome.status == 0, "\(outcome)")
            #expect(outcome.standardError.isEmpty, "\(outcome)")
        }
        #expect(try workspace.read("plain.npy") == workspace.read("train.npy"))
    }

    @Test("float64 input is accepted and the output is float32")
    func float64Input() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let values: [Double] = (0..<16).map { Double($0) }
        let payload = values.flatMap { value in
            (0..<8).map { UInt8(truncatingIfNeeded: value.bitPattern >> (8 * UInt64($0))) }
        }
        try workspace.write(bytes: handWrittenNPY(descr: "<f8", shape: [1, 1, 4, 4], payload: payload), "x64.npy")
        let outcome = try workspace.run(["run", "max-pool", "--input", "x64.npy", "--output", "y.npy"])
        #expect(outcome.status == 0, "\(outcome)")
        let y = try workspace.read("y.npy")
        #expect(y.shape == [1, 1, 2, 2])
        #expect(y.values == [5, 7, 13, 15])
        let bytes = try Data(contentsOf: workspace.url("y.npy"))
        #expect(String(decoding: bytes.prefix(128), as: UTF8.self).contains("<f4"))
    }
}
