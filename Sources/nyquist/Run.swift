import ArgumentParser
import Foundation
import Nyquist
import NyquistCore
import NyquistOperators

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

    @Option(help: "Seed of the default parameters (tips-pool, LiftPool, adaptive-blur-pool) and of tips-pool's L_undo shift (default 0).")
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
        let descriptor: OperatorDescriptor
        do {
            descriptor = try OperatorRegistry.named(op)
        } catch let error as NyquistError {
            throw CLIFailure(error.message)
        }
        // Options that do not apply are refused before any file is read; their values are
        // checked with the input's shape, before anything is computed or written.
        let options = OperatorOptions(try registryOptions(descriptor))
        for (option, value, what) in [
            ("--params", params, "has no parameters"), ("--grad-params", gradParams, "has no parameters"),
        ] where value != nil && descriptor.parameterNames.isEmpty {
            throw CLIFailure("\(op) \(what); \(option) does not apply")
        }
        if extra != nil, descriptor.extraOutputs(4).isEmpty, descriptor.extraInputs(4).allSatisfy({ $0 == "indices" }) {
            throw CLIFailure("\(op) takes no extra inputs; --extra does not apply")
        }
        if indices != nil, !descriptor.extraInputs(4).contains("indices") {
            throw CLIFailure("option --indices applies only to aps-pool")
        }
        let backend = try selectedBackend()
        if backend == .reference, device != nil {
            throw CLIFailure("--device applies only to --backend opencl")
        }
        let gradientPaths = try gradientFiles()
        let written = [output, gradientPaths?.input, gradParams].compactMap { $0 }.map { URL(fileURLWithPath: $0).standardized }
        guard Set(written).count == written.count else {
            throw CLIFailure("--output, --grad-input and --grad-params must name different files")
        }
        if gradParams != nil && gradientPaths == nil {
            throw CLIFailure("--grad-params needs --grad-output and --grad-input (a backward pass)")
        }

        let x = try TensorFiles.read(input)
        let inputShape = Format.shape(x.shape)
        var parameters: [String: HostTensor]?
        if let params {
            let names = descriptor.parameterNames
            let stateDict = try TensorFiles.readParameters(
                params, expecting: names.map { (paramsPrefix ?? "") + $0 }, layer: op)
            parameters = try StateDictSelection.select(
                stateDict, prefix: paramsPrefix ?? "", expected: names, ignored: descriptor.ignoredParameterNames, layer: op)
        }
        let outputShape = try descriptor.outputShape(options, inputShape: x.shape)
        var inputs = ["input": x]
        if let indices {
            let given = try readIndices(indices, batch: x.shape[0])
            inputs["indices"] = try HostTensor(shape: [given.count], values: given.map { Float($0) })
        }
        // Further inputs (LiftUpPool's detail bands) are read from --extra, shaped like --input.
        for name in descriptor.extraInputs(x.rank) where name != "indices" {
            guard let extra else {
                throw CLIFailure("\(op) needs --extra DIR (its input \(name).npy is read there)")
            }
            let path = URL(fileURLWithPath: extra).appendingPathComponent("\(name).npy")
            let tensor = try NPY.read(contentsOf: path)
            guard tensor.shape == x.shape else {
                throw CLIFailure(
                    "\(op): \(path.path) has shape \(Format.shape(tensor.shape)) but --input has \(inputShape)")
            }
            inputs[name] = tensor
        }
        try TensorFiles.checkOutput(shape: outputShape, path: output)
        // The host copies of the output and the input gradient, before any device work.
        try HostLimits.current.checkAllocation(
            count: outputShape.reduce(1, *), bytesPerElement: 4, what: "the output \(Format.shape(outputShape))")
        var gradOutputTensor: HostTensor?
        if let gradientPaths {
            let gy = try NPY.read(contentsOf: URL(fileURLWithPath: gradientPaths.output))
            guard gy.shape == outputShape else {
                throw CLIFailure(
                    "gradient of the output \(gradientPaths.output) has shape \(Format.shape(gy.shape)), but "
                        + "\(op) maps input \(inputShape) to \(Format.shape(outputShape))")
            }
            gradOutputTensor = gy
        }

        let result: Computed
        switch backend {
        case .reference:
            let layer = try descriptor.makeReference(options, inputShape: x.shape, parameters: parameters)
            result = try compute(layer, inputs: inputs, gradOutput: gradOutputTensor)
                .computed(where: "the CPU reference", seconds: nil) { $0 }
        case .opencl:
            let device = try device.map { try Device(named: $0) } ?? Device.default()
            let layer = try descriptor.makeLayer(options, inputShape: x.shape, parameters: parameters, on: device)
            let deviceInputs = try inputs.mapValues { try DeviceTensor($0, on: device) }
            let gradOutputDevice = try gradOutputTensor.map { try DeviceTensor($0, on: device) }
            let (computed, seconds) = try device.measure {
                try compute(layer, inputs: deviceInputs, gradOutput: gradOutputDevice)
            }
            result = try computed.computed(where: deviceDescription(device), seconds: seconds) { try $0.toHost() }
        }
        try write(result, gradientInputPath: gradientPaths?.input, scalarsName: descriptor.scalarsName)
        var summary =
            "\(try descriptor.description(options, inputShape: x.shape)): \(inputShape) -> \(Format.shape(result.output.shape)) on \(result.where)"
        if let seconds = result.kernelSeconds { summary += ", kernel time \(Format.fixed(seconds * 1e3, 3)) ms" }
        summary += "; wrote \(output)"
        if let gradInput = gradientPaths?.input { summary += " and \(gradInput)" }
        print(summary)
    }

    /// The operator options given on the command line, by the registry's names. Two follow
    /// from the command rather than from an option: an operator with train and eval behaviour
    /// (a `statistics` option) trains only with --train (without it, gradients are those of
    /// PyTorch's eval mode), and one that can return its filters does so for --extra.
    private func registryOptions(_ descriptor: OperatorDescriptor) throws -> [String: String] {
        let given: [(String, String?)] = [
            ("kernel", kernel.map { "\($0)" }), ("stride", stride.map { "\($0)" }), ("pad", pad.map { "\($0)" }),
            ("filter-size", filterSize.map { "\($0)" }), ("padding", padding), ("pad-offset", padOffset.map { "\($0)" }),
            ("norm", norm), ("lambda-fm", lambdaFm.map { "\($0)" }), ("lambda-undo", lambdaUndo.map { "\($0)" }),
            ("max-shift", maxShift.map { "\($0)" }), ("shift-fill", shiftFill), ("seed", seed.map { "\($0)" }),
            ("lambda-u", lambdaU.map { "\($0)" }), ("lambda-p", lambdaP.map { "\($0)" }), ("height", height.map { "\($0)" }),
            ("width", width.map { "\($0)" }), ("groups", groups.map { "\($0)" }), ("softmax", softmax),
        ]
        var values: [String: String] = [:]
        for (name, value) in given { if let value { values[name] = value } }
        let takes = Set(descriptor.options.map(\.name))
        if let refused = given.first(where: { $0.1 != nil && !takes.contains($0.0) }) {
            let flags = Set(given.map(\.0))
            let own = descriptor.options.map(\.name).filter(flags.contains).map { "--" + $0 }
            throw CLIFailure(
                "option --\(refused.0) does not apply to \(descriptor.name) (its options: "
                    + (own.isEmpty ? "none" : own.joined(separator: ", ")) + ")")
        }
        if takes.contains("statistics") { values["statistics"] = train ? "batch" : "running" }
        if takes.contains("filters"), extra != nil { values["filters"] = "true" }
        return values
    }

    /// Runs `layer` on `inputs`: inference, or (with --train, a backward, or --extra, whose
    /// results come from the training forward) the training forward, then the backward when
    /// `gradOutput` is given. Scalars (losses) are kept only for a training run.
    private func compute<Tensor>(_ layer: ErasedLayer<Tensor>, inputs: [String: Tensor], gradOutput: Tensor?) throws
        -> Results<Tensor>
    {
        let training = train || gradOutput != nil
        guard training || extra != nil else { return Results(values: try layer(inputs), gradients: nil, training: false) }
        let (values, saved) = try layer.forwardTraining(inputs)
        let gradients = try gradOutput.map { try layer.backward($0, saved) }
        return Results(values: values, gradients: gradients, training: training)
    }

    /// What ``compute(_:inputs:gradOutput:)`` returns, on either backend.
    private struct Results<Tensor> {
        var values: OperatorValues<Tensor>
        var gradients: OperatorGradientValues<Tensor>?
        var training: Bool

        /// The results on the host (`host` copies one tensor there), with the extras under
        /// their file names and the scalars of a training run as the losses.
        func computed(where place: String, seconds: Double?, _ host: (Tensor) throws -> HostTensor) throws -> Computed {
            var computed = Computed(
                output: try host(values.output), gradInput: try gradients.map { try host($0.input) }, where: place,
                kernelSeconds: seconds)
            for (name, tensor) in values.extras { computed.extras["\(name).npy"] = try host(tensor) }
            for (name, tensor) in gradients?.extras ?? [:] { computed.extras["grad_\(name).npy"] = try host(tensor) }
            if training, case let scalars = try values.scalars, !scalars.isEmpty { computed.scalars = scalars }
            if let parameters = gradients?.parameters, !parameters.isEmpty {
                computed.gradParameters = try parameters.mapValues(host)
            }
            return computed
        }
    }

    /// What a backend computed.
    private struct Computed {
        var output: HostTensor
        var gradInput: HostTensor?
        var `where`: String
        var kernelSeconds: Double?
        /// Extra outputs by file name (indices.npy, psi.npy, tau.npy).
        var extras: [String: HostTensor] = [:]
        /// Scalar results (losses, regularisers) for <scalarsName>.json.
        var scalars: [String: Double]?
        /// Parameter gradients by PyTorch name.
        var gradParameters: [String: HostTensor]?
    }

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

    /// Writes the output, the input gradient, the extra outputs and the parameter gradients all
    /// or nothing (``OutputTransaction``): a failed write leaves no new file or folder and every
    /// file that existed before as it was.
    private func write(_ result: Computed, gradientInputPath: String?, scalarsName: String?) throws {
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
            if let scalars = result.scalars, let name = scalarsName {
                transaction.stage(folder.appendingPathComponent("\(name).json"), createsFolder: true) { url in
                    let encoder = JSONEncoder()
                    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                    try encoder.encode(scalars).write(to: url)
                }
            }
        }
        if let gradParams, let gradients = result.gradParameters {
            transaction.stage(URL(fileURLWithPath: gradParams)) { try Safetensors.write(gradients, to: $0) }
        }
        try transaction.commit()
    }
}
