import ArgumentParser
import Foundation
import Nyquist
import NyquistCore
import NyquistReference

/// `nyquist run OP`: one operator on `.npy` files, on an OpenCL device or the CPU reference.
struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one pooling operator on an .npy tensor.",
        discussion: """
            OP is max-pool, avg-pool, blur-pool, max-blur-pool, aps-pool, tips-pool, lift-down-pool \
            or lift-up-pool. max-pool and \
            avg-pool take --kernel (default 2), --stride (default: the kernel) and --pad (default 0); \
            blur-pool and max-blur-pool take --filter-size (1...7, default 4), --stride (default 2), \
            --padding zero|reflect|replicate|circular (default reflect) and --pad-offset (default 0); \
            aps-pool takes --filter-size (circular pre-blur, default 1 = none), --norm l2|l1|linf and \
            --indices (sample these phases instead of choosing); \
            tips-pool takes --kernel (odd, default 3), --params (conv1.weight, conv2.weight; default: \
            PyTorch's initialisation drawn from --seed), and for training --lambda-fm, --lambda-undo, \
            --max-shift and --shift-fill circular|zero (the L_undo shift is drawn from --seed); \
            lift-down-pool and lift-up-pool are described in docs/liftpool.md. The \
            channel count comes from the input (N, C, H, W). adaptive-blur-pool takes --kernel \
            (3, 5, 7; default 3), --stride (default 2), --groups (default gcd(8, C)), --softmax \
            joint|per-group (default joint), --padding (default reflect), --params (a PyTorch \
            state_dict as safetensors; default: Kaiming-normal init with seed 0), --grad-params \
            (gradients of conv.weight, bn.weight, bn.bias) and --extra DIR (filters.npy and, with \
            --train, batch_mean.npy, batch_var.npy and the updated running_mean.npy, \
            running_var.npy).

            --extra DIR writes aps-pool's phase indices (indices.npy, shape N) and tips-pool's psi.npy, \
            tau.npy and, with --train or gradients, losses.json (L_FM and L_undo). --grad-params \
            writes tips-pool's weight gradients as safetensors.

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

            PNG: --input and --output ending in .png are images, everything else is .npy. An input \
            PNG becomes a (1, C, H, W) tensor with values in [0, 1] (gray: C = 1; RGB and palette: \
            C = 3; alpha is dropped; 16-bit samples are divided by 65535). An output PNG needs N = 1 \
            and C = 1 or 3; each value v is written as round(255 * clamp(v, 0, 1)) (NaN as 0), so \
            values outside [0, 1] are clipped: write .npy to keep them.
            """)

    @Argument(help: "The operator: max-pool, avg-pool, blur-pool, max-blur-pool, aps-pool, tips-pool, lift-down-pool, lift-up-pool or adaptive-blur-pool.")
    var op: String

    @Option(help: ArgumentHelp("Input tensor (N, C, H, W), float32 or float64 .npy, or a .png image (1, C, H, W).", valueName: "x.npy"))
    var input: String

    @Option(help: ArgumentHelp("Where to write the output (float32 .npy, or 8-bit .png when N = 1 and C = 1 or 3).", valueName: "y.npy"))
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

    @Option(help: ArgumentHelp("Phase norm of aps-pool (default l2).", valueName: "l2|l1|linf"))
    var norm: String?

    @Option(help: ArgumentHelp(
        "aps-pool: phases to sample instead of choosing (N values in 0...3, e.g. another run's indices.npy).",
        valueName: "indices.npy"))
    var indices: String?

    @Option(help: "Weight of tips-pool's L_FM in the backward objective (default 0).")
    var lambdaFm: Double?

    @Option(help: "Weight of tips-pool's L_undo in the backward objective (default 0).")
    var lambdaUndo: Double?

    @Option(help: "Largest |shift| of tips-pool's L_undo target on each axis (default 2).")
    var maxShift: Int?

    @Option(help: ArgumentHelp("Fill of tips-pool's L_undo shift (default circular).", valueName: "circular|zero"))
    var shiftFill: String?

    @Option(help: "Seed of tips-pool's default weights and of its L_undo shift (default 0).")
    var seed: UInt64?

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

    @Option(help: ArgumentHelp("Parameters (.safetensors) of tips-pool, adaptive-blur-pool and the LiftPool pair; the others have none.", valueName: "file"))
    var params: String?

    @Option(help: ArgumentHelp(
        "With --params: the submodule to load from a whole model's state_dict (names starting with this prefix, which is stripped; e.g. layer1.0.pool.). Without it every name in the file must be one the layer expects.",
        valueName: "prefix"))
    var paramsPrefix: String?

    @Option(help: ArgumentHelp(
        "Folder for extra outputs (aps-pool: indices; tips-pool: psi, tau, losses; LiftPool: bands; adaptive-blur-pool: filters, batch statistics).", valueName: "dir"))
    var extra: String?

    @Option(help: ArgumentHelp(
        "Where to write parameter gradients (.safetensors) of tips-pool, adaptive-blur-pool and the LiftPool pair.", valueName: "file"))
    var gradParams: String?

    /// The computation the command performs, after every option has been checked.
    enum Backend: String {
        case opencl
        case reference
    }

    func run() throws {
        if paramsPrefix != nil, params == nil {
            throw CLIFailure("--params-prefix needs --params (the state_dict file to select from)")
        }
        if op == LiftPoolConfiguration.operatorName || op == LiftPoolConfiguration.inverseOperatorName {
            try LiftRun(command: self, down: op == LiftPoolConfiguration.operatorName).run()
            return
        }
        if op == AdaptiveBlurPool2DConfiguration.operatorName {
            try runAdaptive()
            return
        }
        for (option, value) in [("--groups", groups != nil), ("--softmax", softmax != nil)] where value {
            throw CLIFailure("option \(option) applies only to adaptive-blur-pool")
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
        options.norm = norm
        options.seed = seed ?? 0
        // Validate the options before touching any file (channels are checked again below).
        _ = try options.makeOperator(name, channels: 1)

        for (option, value, what) in [
            ("--params", params, "has no parameters"), ("--extra", extra, "takes no extra inputs"),
            ("--grad-params", gradParams, "has no parameters"),
        ] where value != nil && !(name == .tipsPool || (name == .apsPool && option == "--extra")) {
            throw CLIFailure("\(name.rawValue) \(what); \(option) does not apply")
        }
        let tipsOptions: [(String, Bool)] = [
            ("--lambda-fm", lambdaFm != nil), ("--lambda-undo", lambdaUndo != nil), ("--max-shift", maxShift != nil),
            ("--shift-fill", shiftFill != nil), ("--seed", seed != nil),
        ]
        if name != .tipsPool, let (option, _) = tipsOptions.first(where: \.1) {
            throw CLIFailure("option \(option) applies only to tips-pool")
        }
        if name != .apsPool, indices != nil {
            throw CLIFailure("option --indices applies only to aps-pool")
        }
        let undo = try undoShift()
        let backend = try selectedBackend()
        if backend == .reference, device != nil {
            throw CLIFailure("--device applies only to --backend opencl")
        }
        let gradientPaths = try gradientFiles()
        let outputURL = URL(fileURLWithPath: output)
        if let gradientPaths, URL(fileURLWithPath: gradientPaths.input).standardized == outputURL.standardized {
            throw CLIFailure("--output and --grad-input name the same file (\(output))")
        }

        let x = try TensorFiles.read(input)
        let inputShape = try Shape4D(x.shape, role: "input \(input)")
        if let params {
            let names = TIPSPool2DConfiguration.parameterNames
            let stateDict = try TensorFiles.readParameters(
                params, expecting: names.map { (paramsPrefix ?? "") + $0 }, layer: name.rawValue)
            options.parameters = try StateDictSelection.select(
                stateDict, prefix: paramsPrefix ?? "", expected: names, layer: name.rawValue)
        }
        let givenIndices = try indices.map { try readIndices($0, batch: inputShape.n) }
        let pool = try options.makeOperator(name, channels: inputShape.c)
        let outputShape = try pool.outputShape(for: inputShape)
        try TensorFiles.checkOutput(shape: outputShape.dimensions, path: output)
        // The host copies of the output and the input gradient, before any device work.
        try HostLimits.current.checkAllocation(count: outputShape.count, bytesPerElement: 4, what: "the output \(outputShape)")
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
        switch (backend, name.isPolyphase) {
        case (.reference, false):
            result = try runReference(pool, x, gradOutput: gradOutputTensor)
        case (.opencl, false):
            result = try runDevice(pool, x, gradOutput: gradOutputTensor)
        case (_, true):
            result = try runPolyphase(
                pool, x, gradOutput: gradOutputTensor, undo: undo, givenIndices: givenIndices, onDevice: backend == .opencl)
        }
        if gradParams != nil && result.gradParameters == nil {
            throw CLIFailure("--grad-params needs --grad-output and --grad-input (a backward pass)")
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
        /// Extra outputs by file name (indices.npy, psi.npy, tau.npy).
        var extras: [String: HostTensor] = [:]
        /// Loss values for losses.json.
        var losses: [String: Double]?
        /// Parameter gradients by PyTorch name.
        var gradParameters: [String: HostTensor]?
    }

    /// The L_undo shift of tips-pool, drawn from --seed, when its weight is non-zero or losses
    /// are requested (a training run with --extra).
    private func undoShift() throws -> MapShift? {
        let fill: ShiftFill
        if let shiftFill {
            guard let value = ShiftFill(rawValue: shiftFill) else {
                throw CLIFailure("unknown shift fill '\(shiftFill)'; use circular or zero")
            }
            fill = value
        } else {
            fill = .circular
        }
        let largest = maxShift ?? 2
        var generator = try ShiftGenerator(seed: seed ?? 0, maxShiftH: largest, maxShiftW: largest, fill: fill)
        return generator.next()
    }

    /// aps-pool and tips-pool, on the device or the reference, with their extra outputs.
    /// The phase indices of `path`: `batch` whole numbers in 0...3.
    private func readIndices(_ path: String, batch: Int) throws -> [Int] {
        let tensor = try NPY.read(contentsOf: URL(fileURLWithPath: path))
        guard tensor.shape == [batch] else {
            throw CLIFailure(
                "phase indices \(path) have shape \(Format.shape(tensor.shape)); expected \(batch) values (one per sample)")
        }
        return try tensor.values.map { value in
            guard value.isFinite, value.rounded() == value, (0...3).contains(value) else {
                throw CLIFailure("phase indices \(path) hold \(value); every index must be 0, 1, 2 or 3")
            }
            return Int(value)
        }
    }

    private func runPolyphase(
        _ pool: PoolOperator, _ x: HostTensor, gradOutput: HostTensor?, undo: MapShift?, givenIndices: [Int]?,
        onDevice: Bool
    ) throws -> Computed {
        let training = train || gradOutput != nil
        let weights = try TIPSLossWeights(fm: lambdaFm ?? 0, undo: lambdaUndo ?? 0)
        switch (pool, onDevice) {
        case (.apsPool(let configuration), false):
            let (y, indices, saved) = try Reference.apsPool2DTraining(x, configuration, indices: givenIndices)
            let gradInput = try gradOutput.map { try Reference.apsPool2DBackward(gradOutput: $0, saved: saved, configuration) }
            return Computed(
                output: y, gradInput: gradInput, where: "the CPU reference",
                extras: ["indices.npy": try HostTensor(shape: [indices.count], values: indices.map { Float($0) })])
        case (.tipsPool(let configuration, let parameters), false):
            let (result, saved) = try Reference.tipsPool2DTraining(x, configuration, parameters: parameters, shift: undo)
            var computed = Computed(
                output: result.output, where: "the CPU reference", extras: ["psi.npy": result.psi, "tau.npy": result.tau])
            if training {
                let losses = try Reference.tipsLosses(saved: saved, configuration)
                computed.losses = ["fm": losses.fm, "undo": losses.undo ?? 0]
            }
            if let gradOutput {
                let gradients = try Reference.tipsPool2DBackward(
                    gradOutput: gradOutput, saved: saved, configuration, lossWeights: weights)
                computed.gradInput = gradients.input
                computed.gradParameters = gradients.parameters
            }
            return computed
        case (.apsPool(let configuration), true):
            let device = try device.map { try Device(named: $0) } ?? Device.default()
            let layer = APSPool2D(configuration)
            let xDevice = try DeviceTensor(x, on: device)
            let gradOutputDevice = try gradOutput.map { try DeviceTensor($0, on: device) }
            let given = try givenIndices.map {
                try DeviceTensor(HostTensor(shape: [$0.count], values: $0.map { Float($0) }), on: device)
            }
            let ((y, indices, gradInput), seconds) = try device.measure {
                () throws -> (DeviceTensor, DeviceTensor, DeviceTensor?) in
                let (y, indices, saved) = try layer.forwardTraining(xDevice, indices: given)
                return (y, indices, try gradOutputDevice.map { try layer.backward($0, saved).input })
            }
            return Computed(
                output: try y.toHost(), gradInput: try gradInput?.toHost(), where: deviceDescription(device),
                kernelSeconds: seconds, extras: ["indices.npy": try indices.toHost()])
        case (.tipsPool(let configuration, let parameters), true):
            let device = try device.map { try Device(named: $0) } ?? Device.default()
            let layer = try TIPSPool2D(configuration, parameters: parameters)
            let xDevice = try DeviceTensor(x, on: device)
            let gradOutputDevice = try gradOutput.map { try DeviceTensor($0, on: device) }
            let ((outputs, saved, gradients), seconds) = try device.measure {
                () throws -> (TIPSOutputs, SavedForBackward, Gradients?) in
                let (outputs, saved) = try layer.forwardTraining(xDevice, undoShift: undo)
                return (outputs, saved, try gradOutputDevice.map { try layer.backward($0, saved, lossWeights: weights) })
            }
            var computed = Computed(
                output: try outputs.output.toHost(), gradInput: try gradients?.input.toHost(), where: deviceDescription(device),
                kernelSeconds: seconds, extras: ["psi.npy": try outputs.psi.toHost(), "tau.npy": try outputs.tau.toHost()])
            if training {
                let losses = try layer.losses(saved)
                computed.losses = ["fm": losses.fm, "undo": losses.undo ?? 0]
            }
            if let gradients { computed.gradParameters = try gradients.parameters.mapValues { try $0.toHost() } }
            return computed
        default:
            throw CLIFailure("\(pool.name.rawValue) is not a polyphase operator")
        }
    }

    private func deviceDescription(_ device: Device) -> String {
        let info = device.info
        return "\(info.name) (\(info.typeName), \(info.platformName))"
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
        let layer = try pool.layer
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

    /// Writes the output, the input gradient, the extra outputs and the parameter gradients all
    /// or nothing (``OutputTransaction``): a failed write leaves no new file or folder and every
    /// file that existed before as it was.
    private func write(_ result: Computed, gradientInputPath: String?) throws {
        var transaction = OutputTransaction()
        transaction.stage(URL(fileURLWithPath: output)) { [output] in
            try TensorFiles.write(result.output, to: $0.path, as: output)
        }
        if let gradientInputPath, let gradInput = result.gradInput {
            transaction.stage(URL(fileURLWithPath: gradientInputPath)) { try NPY.write(gradInput, to: $0) }
        }
        if let extra {
            let folder = URL(fileURLWithPath: extra, isDirectory: true)
            for (name, tensor) in result.extras.sorted(by: { $0.key < $1.key }) {
                transaction.stage(folder.appendingPathComponent(name), createsFolder: true) { try NPY.write(tensor, to: $0) }
            }
            if let losses = result.losses {
                transaction.stage(folder.appendingPathComponent("losses.json"), createsFolder: true) { url in
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    try encoder.encode(losses).write(to: url)
                }
            }
        }
        if let gradParams, let gradients = result.gradParameters {
            transaction.stage(URL(fileURLWithPath: gradParams)) { try Safetensors.write(gradients, to: $0) }
        }
        try transaction.commit()
    }
}
