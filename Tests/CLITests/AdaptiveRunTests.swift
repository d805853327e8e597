import Foundation
import NyquistCore
import Testing

@Suite("nyquist run adaptive-blur-pool")
struct AdaptiveRunTests {
    static let options = ["--kernel", "3", "--groups", "2", "--softmax", "per-group", "--padding", "replicate"]

    /// x (2x4x7x6), gy for the stride-2 output (2x4x4x3), and a parameter file.
    private func workspace() throws -> Workspace {
        let workspace = try Workspace()
        var random = SplitMix64(seed: 41)
        try workspace.write(random.tensor([2, 4, 7, 6]), "x.npy")
        try workspace.write(random.tensor([2, 4, 4, 3]), "gy.npy")
        let p = 18
        let parameters: [String: HostTensor] = [
            "conv.weight": try random.tensor([p, 4, 3, 3], range: -0.3...0.3),
            "bn.weight": try random.tensor([p], range: 0.5...1.5), "bn.bias": try random.tensor([p], range: -0.5...0.5),
            "bn.running_mean": try random.tensor([p], range: -0.2...0.2),
            "bn.running_var": try random.tensor([p], range: 0.5...2),
            "bn.num_batches_tracked": try HostTensor(shape: [1], values: [0]),
        ]
        try Safetensors.write(parameters, to: workspace.url("p.safetensors"))
        return workspace
    }

    @Test("Inference: backends agree on the output and the filters")
    func inference() throws {
        let workspace = try workspace()
        defer { workspace.remove() }
        var outputs: [(HostTensor, HostTensor)] = []
        for backend in ["opencl", "reference"] {
            let outcome = try workspace.run(
                ["run", "adaptive-blur-pool", "--input", "x.npy", "--output", "y-\(backend).npy", "--params", "p.safetensors",
                 "--extra", "extra-\(backend)", "--backend", backend] + Self.options)
            #expect(outcome.status == 0 && outcome.standardError.isEmpty, "\(outcome)")
            #expect(outcome.standardOutput.contains("adaptive-blur-pool"), "\(outcome)")
            outputs.append((try workspace.read("y-\(backend).npy"), try workspace.read("extra-\(backend)/filters.npy")))
        }
        #expect(outputs[0].0.shape == [2, 4, 4, 3] && outputs[0].1.shape == [2, 18, 4, 3])
        #expect(maxRelativeError(outputs[0].0, outputs[1].0) <= 1e-4)
        #expect(maxRelativeError(outputs[0].1, outputs[1].1) <= 1e-4)
    }

    @Test("Training with gradients: backends agree on every file")
    func training() throws {
        let workspace = try workspace()
        defer { workspace.remove() }
        for backend in ["opencl", "reference"] {
            let outcome = try workspace.run(
                ["run", "adaptive-blur-pool", "--input", "x.npy", "--output", "y-\(backend).npy", "--params", "p.safetensors",
                 "--train", "--grad-output", "gy.npy", "--grad-input", "gx-\(backend).npy", "--grad-params",
                 "gp-\(backend).safetensors", "--extra", "extra-\(backend)", "--backend", backend] + Self.options)
            #expect(outcome.status == 0 && outcome.standardError.isEmpty, "\(outcome)")
        }
        for name in ["y-%.npy", "gx-%.npy", "extra-%/filters.npy", "extra-%/batch_mean.npy", "extra-%/batch_var.npy",
                     "extra-%/running_mean.npy", "extra-%/running_var.npy"] {
            let device = try workspace.read(name.replacingOccurrences(of: "%", with: "opencl"))
            let reference = try workspace.read(name.replacingOccurrences(of: "%", with: "reference"))
            #expect(device.shape == reference.shape, "\(name)")
            #expect(maxRelativeError(device, reference) <= 1e-3, "\(name)")
        }
        let device = try Safetensors.read(contentsOf: workspace.url("gp-opencl.safetensors"))
        let reference = try Safetensors.read(contentsOf: workspace.url("gp-reference.safetensors"))
        #expect(Set(device.keys) == ["conv.weight", "bn.weight", "bn.bias"])
        for (name, tensor) in reference {
            let actual = try #require(device[name])
            #expect(maxRelativeError(actual, tensor) <= 1e-3, "\(name)")
        }
    }

    @Test("Bad options and parameters: one error line, no output")
    func errors() throws {
        let workspace = try workspace()
        defer { workspace.remove() }
        let base = ["run", "adaptive-blur-pool", "--input", "x.npy", "--output", "y.npy"]
        expectCLIError(try workspace.run(base + ["--groups", "3"]), in: workspace, mentioning: "groups 3")
        expectCLIError(try workspace.run(base + ["--kernel", "4"]), in: workspace, mentioning: "kernel size 4")
        expectCLIError(try workspace.run(base + ["--softmax", "sparse"]), in: workspace, mentioning: "sparse")
        expectCLIError(try workspace.run(base + ["--filter-size", "3"]), in: workspace, mentioning: "--filter-size")
        // p.safetensors was written for G = 2; the default G = gcd(8, 4) = 4 needs other shapes.
        expectCLIError(try workspace.run(base + ["--params", "p.safetensors"]), in: workspace, mentioning: "conv.weight")
        expectCLIError(
            try workspace.run(base + ["--grad-params", "gp.safetensors"]), in: workspace, outputs: ["y.npy", "gp.safetensors"],
            mentioning: "--grad-params")
        expectCLIError(
            try workspace.run(["run", "blur-pool", "--input", "x.npy", "--output", "y.npy", "--groups", "2"]),
            in: workspace, mentioning: "--groups")
    }
}
