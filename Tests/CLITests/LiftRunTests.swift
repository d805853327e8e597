import Foundation
import NyquistCore
import Testing

/// `nyquist run lift-down-pool | lift-up-pool`: bands through --extra, both backends agree,
/// the round trip reconstructs the input, gradients and parameters files.
@Suite("nyquist run: LiftPool")
struct LiftRunTests {
    @Test("lift-down-pool then lift-up-pool reconstructs the input; backends agree", arguments: [[2, 3, 7, 10], [2, 3, 9]])
    func roundTrip(_ shape: [Int]) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        var random = SplitMix64(seed: 41)
        let x = try random.tensor(shape)
        try workspace.write(x, "x.npy")
        let bands = shape.count == 3 ? ["s", "d"] : ["ll", "lh", "hl", "hh"]
        var outputs: [HostTensor] = []
        for backend in ["opencl", "reference"] {
            // No mkdir: lift-down-pool creates the --extra folder, as the other operators do.
            let down = try workspace.run(
                ["run", "lift-down-pool", "--input", "x.npy", "--output", "y-\(backend).npy", "--extra", backend, "--kernel", "3",
                 "--train", "--backend", backend])
            #expect(down.status == 0, "\(down)")
            outputs.append(try workspace.read("y-\(backend).npy"))
            for band in bands { #expect(workspace.exists("\(backend)/\(band).npy")) }
            #expect(workspace.exists("\(backend)/regularisers.json"))
            var upArguments = [
                "run", "lift-up-pool", "--input", "\(backend)/\(bands[0]).npy", "--output", "back-\(backend).npy", "--extra", backend,
                "--kernel", "3", "--width", "\(shape.last ?? 0)", "--backend", backend,
            ]
            if shape.count == 4 { upArguments += ["--height", "\(shape[2])"] }
            let up = try workspace.run(upArguments)
            #expect(up.status == 0, "\(up)")
            let back = try workspace.read("back-\(backend).npy")
            #expect(back.shape == x.shape)
            #expect(maxRelativeError(back, x) <= 1e-5)
        }
        #expect(maxRelativeError(outputs[0], outputs[1]) <= 2e-5)
    }

    @Test("gradients and parameter gradients; backends agree")
    func gradients() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        var random = SplitMix64(seed: 43)
        try workspace.write(random.tensor([1, 2, 6, 5]), "x.npy")
        try workspace.write(random.tensor([1, 2, 3, 3]), "gy.npy")
        try FileManager.default.createDirectory(at: workspace.url("bands"), withIntermediateDirectories: true)
        var gradients: [HostTensor] = []
        var parameters: [[String: HostTensor]] = []
        for backend in ["opencl", "reference"] {
            let outcome = try workspace.run(
                ["run", "lift-down-pool", "--input", "x.npy", "--output", "y.npy", "--extra", "bands", "--grad-output", "gy.npy",
                 "--grad-input", "gx-\(backend).npy", "--grad-params", "gp-\(backend).safetensors", "--backend", backend])
            #expect(outcome.status == 0, "\(outcome)")
            gradients.append(try workspace.read("gx-\(backend).npy"))
            parameters.append(try Safetensors.read(contentsOf: workspace.url("gp-\(backend).safetensors")))
        }
        #expect(maxRelativeError(gradients[0], gradients[1]) <= 1e-4)
        #expect(parameters[0].keys.sorted() == parameters[1].keys.sorted() && parameters[0].count == 8)
        for (name, value) in parameters[0] {
            let other = try #require(parameters[1][name])
            #expect(zip(value.values, other.values).allSatisfy { abs($0 - $1) <= 1e-4 * max(1, abs($1)) }, "\(name)")
        }
    }

    @Test("lift-down-pool without --extra writes the pooled output alone")
    func extraIsOptionalForLiftDown() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        var random = SplitMix64(seed: 48)
        try workspace.write(random.tensor([1, 2, 6, 5]), "x.npy")
        let outcome = try workspace.run(
            ["run", "lift-down-pool", "--input", "x.npy", "--output", "y.npy", "--train", "--backend", "reference"])
        #expect(outcome.status == 0, "\(outcome)")
        #expect(try workspace.files() == ["x.npy", "y.npy"])
        #expect(try NPY.read(contentsOf: workspace.url("y.npy")).shape == [1, 2, 3, 3])
    }

    @Test("missing --extra of lift-up-pool, bad kernel size and misshapen params are one-line errors that write nothing")
    func errors() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        var random = SplitMix64(seed: 47)
        try workspace.write(random.tensor([1, 2, 4, 4]), "x.npy")
        try FileManager.default.createDirectory(at: workspace.url("bands"), withIntermediateDirectories: true)
        let noExtra = try workspace.run(["run", "lift-up-pool", "--input", "x.npy", "--output", "y.npy"])
        expectCLIError(noExtra, in: workspace, mentioning: "--extra")
        let badKernel = try workspace.run(
            ["run", "lift-down-pool", "--input", "x.npy", "--output", "y.npy", "--extra", "bands", "--kernel", "4"])
        expectCLIError(badKernel, in: workspace, mentioning: "kernel size 4")
        try Safetensors.write(["predict.0.weight": try HostTensor(shape: [2, 1, 3], repeating: 0)], to: workspace.url("p.safetensors"))
        let badParams = try workspace.run(
            ["run", "lift-down-pool", "--input", "x.npy", "--output", "y.npy", "--extra", "bands", "--params", "p.safetensors"])
        expectCLIError(badParams, in: workspace, mentioning: "predict.0.weight")
        #expect(!workspace.exists("y.npy"))
    }
}
