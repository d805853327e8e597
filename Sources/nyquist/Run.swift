import ArgumentParser
import Foundation
import Nyquist
import NyquistCore

/// `nyquist run OP`: one operator on `.npy` files, on an OpenCL device or the CPU reference.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one pooling operator on an .npy tensor.",
        discussion: """
            OP is max-pool, avg-pool, blur-pool, max-blur-pool or adaptive-blur-pool. max-pool and avg-pool take \
            --kernel (default 2), --stride (default: the kernel) and --pad (default 0); blur-pool and \
            max-blur-pool take --filter-size (1...7, default 4), --stride (default 2), --padding \
            zero|reflect|replicate|circular (default reflect) and --pad-offset (default 0). The \
            channel count comes from the input (N, C, H, W). adaptive-blur-pool takes --kernel \
            (3, 5, 7; default 3), --stride (default 2), --groups (default gcd(8, C)), --softmax \
            joint|per-group (default joint), --padding (default reflect), --params (a PyTorch \
            state_dict as safetensors; default: Kaiming-normal init with seed 0), --grad-params \
            (gradients of conv.weight, bn.weight, bn.bias) and --extra DIR (filters.npy and, with \
            --train or gradients, batch_mean.npy, batch_var.npy and the updated running_mean.npy, \
            running_var.npy).

            With --grad-output and --grad-input the command also runs the training forward and \
            the backward pass and writes the gradient with respect to the input. Everything is \
            validated and computed before any file is written; on failure no output file is left.
            """)

    @Argument(help: "The operator: max-pool, avg-pool, blur-pool, max-blur-pool or adaptive-blur-pool.")
    var op: String

    @Option(help: ArgumentHelp("Input tensor (N, C, H, W), float32 or float64 .npy.", valueName: "x.npy"))
    var input: String

    @Option(help: ArgumentHelp("Where to write the output (float32 .npy).", valueName: "y.npy"))
    var output: String

    @Option(help: "Window size of max-pool / avg-pool (default 2).")
    var kernel: Int?

    @Option(help: "Stride (default: the kernel for max-pool / avg-pool, 2 for the blur pools).")
    var stride: Int?

    @Option(help: "Padding on every side for max-pool / avg-pool, at most kernel/2 (default 0).")
    var pad: Int?

    @Option(help: "Binomial filter size of blur-pool / max-blur-pool, 1...7 (default 4).")
    var filterSize: Int?

    @Option(help: ArgumentHelp(
        "Padding mode of blur-pool / max-blur-pool (default reflect).", valueName: "zero|reflect|replicate|circular"))
    var padding: String?

    @Option(help: "Extra padding on every side for blur-pool / max-blur-pool (default 0).")
    var padOffset: Int?

    @Option(help: "Filter groups of adaptive-blur-pool; must divide C (default gcd(8, C)).")
    var groups: Int?

    @Option(help: ArgumentHelp("Softmax of adaptive-blur-pool (default joint).", valueName: "joint|per-group"))
    var softmax: String?

    @Option(help: ArgumentHelp("Where to compute (default opencl).", valueName: "opencl|reference"))
    var backend: String?

    @Option(help: ArgumentHelp(
        "OpenCL device: an index from `nyquist devices` or a name substring.", valueName: "spec"))
    var device: String?

    @Flag(help: "Run the training forward pass (the same output for these operators).")
    var train = false

    @Option(help: ArgumentHelp("Gradient with respect to the output (needs --grad-input).", valueName: "gy.npy"))
    var gradOutput: String?

    @Option(help: ArgumentHelp("Where to write the gradient with respect to the input.", valueName: "gx.npy"))
    var gradInput: String?

    @Option(help: ArgumentHelp("Parameters (.safetensors, PyTorch names) of adaptive-blur-pool.", valueName: "file"))
    var params: String?

    @Option(help: ArgumentHelp("Directory for extra outputs (adaptive-blur-pool: filters, batch statistics).", valueName: "dir"))
    var extra: String?

    @Option(help: ArgumentHelp(
        "Where to write parameter gradients (.safetensors; adaptive-blur-pool).", valueName: "file"))
    var gradParams: String?

    /// The computation the command performs, after every option has been checked.
    enum Backend: String {
        case opencl
        case reference
    }

    func run() throws {
        if op == AdaptiveBlurPool2DConfiguration.operatorName {
            try runAdaptive()
            return
        }
        for (option, value) in [("--groups", groups != nil), ("--softmax", softmax != nil)] where value {
            throw CLIFailure("option \(option) applies only to adaptive-blur-pool")
        }
        let name = try OperatorName.parse(op)
        var options = OperatorOptions()
        options.kernel = kernel
        options.stride = stride
        options.pad = pad
        options.filterSize = filterSize
        options.padding = padding
        options.padOffset = padOffset
        // Validate the options before touching any file (channels are checked again below).
        _ = try options.makeOperator(name, channels: 1)

        for (option, value, what) in [
            ("--params", params, "has no parameters"), ("--extra", extra, "takes no extra inputs"),
            ("--grad-params", gradParams, "has no parameters"),
        ] where value != nil {
            throw CLIFailure("\(name.rawValue) \(what); \(option) does not apply")
        }
        let backend = try selectedBackend()
        if backend == .reference, device != nil {
            throw CLIFailure("--device applies only to --backend opencl")
        }
        let gradientPaths = try gradientFiles()
        let outputURL = URL(fileURLWithPath: output)
        if let gradientPaths, URL(fileURLWithPath: gradientPaths.input).standardized == outputURL.standardized {
            throw CLIFailure("--output and --grad-input name the same file (\(output))")
        }

        let x = try NPY.read(contentsOf: URL(fileURLWithPath: input))
        let inputShape = try Shape4D(x.shape, role: "input \(input)")
        let pool = try options.makeOperator(name, channels: inputShape.c)
        let outputShape = try pool.outputShape(for: inputShape)
        var gradOutputTensor: HostTensor?
        if let gradientPaths {
            let gy = try NPY.read(contentsOf: URL(fileURLWithPath: gradientPaths.output))
            guard gy.shape == outputShape.dimensions else {
                throw CLIFailure(
                    "gradient of the output \(gradientPaths.output) has shape \(Format.shape(gy.shape)), but "
                        + "\(name.rawValue) maps input \(inputShape) to \(outputShape)")
            }
            gradOutputTensor = gy
        }

        let result: Computed
        switch backend {
        case .reference:
            result = try runReference(pool, x, gradOutput: gradOutputTensor)
        case .opencl:
            result = try runDevice(pool, x, gradOutput: gradOutputTensor)
        }
        try write(result, gradientInputPath: gradientPaths?.input)
        var summary =
            "\(pool.summary): \(inputShape) -> \(Format.shape(result.output.shape)) on \(result.where)"
        if let seconds = result.kernelSeconds { summary += ", kernel time \(Format.fixed(seconds * 1e3, 3)) ms" }
        summary += "; wrote \(output)"
        if let gradInput = gradientPaths?.input { summary += " and \(gradInput)" }
        print(summary)
    }

    /// What a backend computed.
    private struct Computed {
        var output: HostTensor
        var gradInput: HostTensor?
        var `where`: String
        var kernelSeconds: Double?
    }

    func selectedBackend() throws -> Backend {
        guard let backend else { return .opencl }
        guard let value = Backend(rawValue: backend) else {
            throw CLIFailure("unknown backend '\(backend)'; use opencl or reference")
        }
        return value
    }

    /// The gradient files, or nil when neither is given; a failure when only one is.
    func gradientFiles() throws -> (output: String, input: String)? {
        switch (gradOutput, gradInput) {
        case (nil, nil): return nil
        case (let output?, let input?): return (output, input)
        case (nil, _?): throw CLIFailure("--grad-input needs --grad-output (the gradient with respect to the output)")
        case (_?, nil): throw CLIFailure("--grad-output needs --grad-input (where to write the input gradient)")
        }
    }

    private func runReference(_ pool: PoolOperator, _ x: HostTensor, gradOutput: HostTensor?) throws -> Computed {
        guard gradOutput != nil || train else {
            return Computed(output: try pool.reference(x), where: "the CPU reference")
        }
        let (y, saved) = try pool.referenceTraining(x)
        let gradInput = try gradOutput.map { try pool.referenceBackward($0, saved) }
        return Computed(output: y, gradInput: gradInput, where: "the CPU reference")
    }

    private func runDevice(_ pool: PoolOperator, _ x: HostTensor, gradOutput: HostTensor?) throws -> Computed {
        let device = try device.map { try Device(named: $0) } ?? Device.default()
        let layer = pool.layer
        let xDevice = try DeviceTensor(x, on: device)
        let gradOutputDevice = try gradOutput.map { try DeviceTensor($0, on: device) }
        let ((y, gradInput), seconds) = try device.measure { () throws -> (DeviceTensor, DeviceTensor?) in
            guard gradOutputDevice != nil || train else { return (try layer(xDevice), nil) }
            let (y, saved) = try layer.forwardTraining(xDevice)
            let gradInput = try gradOutputDevice.map { try layer.backward($0, saved).input }
            return (y, gradInput)
        }
        let info = device.info
        return Computed(
            output: try y.toHost(), gradInput: try gradInput?.toHost(),
            where: "\(info.name) (\(info.typeName), \(info.platformName))", kernelSeconds: seconds)
    }

    /// Writes the output, then the input gradient; removes the output again when the second
    /// write fails, so that a failed command leaves no file behind.
    private func write(_ result: Computed, gradientInputPath: String?) throws {
        let outputURL = URL(fileURLWithPath: output)
        try NPY.write(result.output, to: outputURL)
        guard let gradientInputPath, let gradInput = result.gradInput else { return }
        do {
            try NPY.write(gradInput, to: URL(fileURLWithPath: gradientInputPath))
        } catch {
            try? FileManager.default.removeItem(at: outputURL)
            throw error
        }
    }
}
