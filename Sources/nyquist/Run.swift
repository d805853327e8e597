import ArgumentParser
import Foundation
import Nyquist
import NyquistCore

/// `nyquist run OP`: one operator on `.npy` files, on an OpenCL device or the CPU reference.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one pooling operator on an .npy tensor.",
        discussion: """
            OP is max-pool, avg-pool, blur-pool, max-blur-pool, lift-down-pool or lift-up-pool. \
            max-pool and avg-pool take \
            --kernel (default 2), --stride (default: the kernel) and --pad (default 0); blur-pool and \
            max-blur-pool take --filter-size (1...7, default 4), --stride (default 2), --padding \
            zero|reflect|replicate|circular (default reflect) and --pad-offset (default 0). The \
            channel count comes from the input (N, C, H, W).

            With --grad-output and --grad-input the command also runs the training forward and \
            the backward pass and writes the gradient with respect to the input. Everything is \
            validated and computed before any file is written; on failure no output file is left.

            lift-down-pool / lift-up-pool (LiftPool; rank-3 input: 1-D, rank-4: 2-D) take --kernel \
            (K of P and U: 1, 3, 5, 7; default 5), --lambda-u (0.01), --lambda-p (0.1), --params \
            (safetensors state_dict; default: seeded initialisation) and --extra DIR for the bands \
            (ll/lh/hl/hh.npy or s/d.npy; written by lift-down-pool with regularisers.json, read by \
            lift-up-pool, whose --input is the LL / s band and --height/--width the target size). \
            Backward also writes --grad-params; lift-up-pool writes the detail bands' gradients \
            as DIR/grad_<band>.npy.
            """)

    @Argument(help: "The operator: max-pool, avg-pool, blur-pool, max-blur-pool, lift-down-pool or lift-up-pool.")
    var op: String

    @Option(help: ArgumentHelp("Input tensor (N, C, H, W), float32 or float64 .npy.", valueName: "x.npy"))
    var input: String

    @Option(help: ArgumentHelp("Where to write the output (float32 .npy).", valueName: "y.npy"))
    var output: String

    @Option(help: "Window size of max-pool / avg-pool (default 2); K of LiftPool's P and U (default 5).")
    var kernel: Int?

    @Option(help: "LiftPool: weight of the regulariser c_u (default 0.01).")
    var lambdaU: Double?

    @Option(help: "LiftPool: weight of the regulariser c_p (default 0.1).")
    var lambdaP: Double?

    @Option(help: "lift-up-pool: target height (default twice the band's).")
    var height: Int?

    @Option(help: "lift-up-pool: target width, or length for 1-D bands (default twice the band's).")
    var width: Int?

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

    @Option(help: ArgumentHelp("Parameters (.safetensors; LiftPool only).", valueName: "file"))
    var params: String?

    @Option(help: ArgumentHelp("Band files (LiftPool only).", valueName: "dir"))
    var extra: String?

    @Option(help: ArgumentHelp(
        "Where to write parameter gradients (.safetensors; LiftPool only).", valueName: "file"))
    var gradParams: String?

    /// The computation the command performs, after every option has been checked.
    private enum Backend: String {
        case opencl
        case reference
    }

    func run() throws {
        if op == LiftPoolConfiguration.operatorName || op == LiftPoolConfiguration.inverseOperatorName {
            try LiftRun(command: self, down: op == LiftPoolConfiguration.operatorName).run()
            return
        }
        let name = try OperatorName.parse(op)
        for (option, given) in [
            ("--lambda-u", lambdaU != nil), ("--lambda-p", lambdaP != nil), ("--height", height != nil), ("--width", width != nil),
        ] where given {
            throw CLIFailure("option \(option) applies only to lift-down-pool / lift-up-pool")
        }
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

    private func selectedBackend() throws -> Backend {
        guard let backend else { return .opencl }
        guard let value = Backend(rawValue: backend) else {
            throw CLIFailure("unknown backend '\(backend)'; use opencl or reference")
        }
        return value
    }

    /// The gradient files, or nil when neither is given; a failure when only one is.
    private func gradientFiles() throws -> (output: String, input: String)? {
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
