import Foundation
import Nyquist
import NyquistCore
import NyquistReference

/// `nyquist run lift-down-pool | lift-up-pool`: LiftPool on `.npy` files (SPEC.md section 4).
///
/// Rank-3 inputs (N, C, L) run the 1-D layers, rank-4 inputs (N, C, H, W) the 2-D ones. The
/// parameters come from `--params` (a PyTorch `state_dict` in safetensors) or, without it, from
/// the default initialisation with seed 0. Band files in `--extra DIR`: `ll.npy`, `lh.npy`,
/// `hl.npy`, `hh.npy` (2-D) or `s.npy`, `d.npy` (1-D).
///
/// * lift-down-pool writes the pooled output to `--output` and, when `--extra` is given, the
///   bands there; with `--train` or a backward also `regularisers.json` (c_u, c_p, loss). `--grad-output` is the
///   gradient of the pooled output; the backward adds the regulariser loss with weight 1 (set
///   `--lambda-u 0 --lambda-p 0` to leave it out) and writes `--grad-input` and `--grad-params`.
/// * lift-up-pool reads the coarse band (LL or s) from `--input` and the detail bands from
///   `--extra`; the target size is `--height`/`--width` (default twice the band size; 1-D:
///   `--width` is the length). `--grad-output` is the gradient of the reconstruction;
///   `--grad-input` receives the coarse band's gradient, `--extra` the detail bands' gradients
///   as `grad_<band>.npy`, `--grad-params` the parameters'.
///
/// Everything is computed before any file is written, and the files are written all or nothing
/// (``OutputTransaction``).
struct LiftRun {
    let command: Run
    let down: Bool

    /// Band names of a layer of `rank` (3: 1-D, 4: 2-D).
    static func bandNames(rank: Int) -> [String] { rank == 3 ? ["s", "d"] : ["ll", "lh", "hl", "hh"] }

    /// The computed tensors and files to write, by path.
    private struct Outcome {
        var files: [(URL, HostTensor)] = []
        var parameterGradients: [String: HostTensor]?
        var regularisers: (cu: Double, cp: Double, loss: Double)?
        var summary = ""
    }

    func run() throws {
        let name = down ? LiftPoolConfiguration.operatorName : LiftPoolConfiguration.inverseOperatorName
        for (option, given) in [
            ("--stride", command.stride != nil), ("--pad", command.pad != nil), ("--filter-size", command.filterSize != nil),
            ("--padding", command.padding != nil), ("--pad-offset", command.padOffset != nil),
        ] where given {
            throw CLIFailure("option \(option) does not apply to \(name) (its options: --kernel, --lambda-u, --lambda-p, --params, --extra, --height, --width)")
        }
        if down, command.height != nil || command.width != nil {
            throw CLIFailure("--height/--width apply only to lift-up-pool (the target size)")
        }
        if !down, command.extra == nil {
            throw CLIFailure("\(name) needs --extra DIR (the detail bands are read there)")
        }
        let extraURL = URL(fileURLWithPath: command.extra ?? ".")
        switch (command.gradOutput, command.gradInput) {
        case (nil, nil):
            if command.gradParams != nil { throw CLIFailure("--grad-params needs --grad-output and --grad-input") }
        case (_?, _?): break
        case (nil, _?): throw CLIFailure("--grad-input needs --grad-output (the gradient with respect to the output)")
        case (_?, nil): throw CLIFailure("--grad-output needs --grad-input (where to write the input gradient)")
        }
        let backend = command.backend ?? "opencl"
        guard backend == "opencl" || backend == "reference" else {
            throw CLIFailure("unknown backend '\(backend)'; use opencl or reference")
        }
        if backend == "reference", command.device != nil { throw CLIFailure("--device applies only to --backend opencl") }

        let x = try TensorFiles.read(command.input)
        guard x.rank == 3 || x.rank == 4 else {
            throw CLIFailure("\(name): input \(command.input) must have rank 3 (N, C, L) or 4 (N, C, H, W), has shape \(Format.shape(x.shape))")
        }
        let configuration = try LiftPoolConfiguration(
            channels: x.shape[1], kernelSize: command.kernel ?? 5, lambdaU: command.lambdaU ?? 0.01,
            lambdaP: command.lambdaP ?? 0.1)
        let parameters: LiftPoolParameters<Float> =
            try command.params.map {
                try LiftPoolParameters(
                    configuration,
                    stateDict: TensorFiles.readParameters(
                        $0, expecting: LiftPoolParameters<Float>.names.map { (command.paramsPrefix ?? "") + $0 },
                        layer: LiftPoolConfiguration.operatorName),
                    prefix: command.paramsPrefix ?? "")
            }
            ?? LiftPoolParameters(configuration, seed: 0)
        let gradOutput = try command.gradOutput.map { try NPY.read(contentsOf: URL(fileURLWithPath: $0)) }
        let names = Self.bandNames(rank: x.rank)
        var outcome: Outcome
        if down {
            outcome = try runDown(x, configuration, parameters, gradOutput: gradOutput, backend: backend)
        } else {
            var bands = [x]
            for band in names.dropFirst() {
                bands.append(try NPY.read(contentsOf: extraURL.appendingPathComponent("\(band).npy")))
            }
            outcome = try runUp(bands, configuration, parameters, gradOutput: gradOutput, backend: backend)
        }
        // As for the other operators, the --extra folder is created when missing (and removed
        // again when a write fails).
        var transaction = OutputTransaction()
        for (url, tensor) in outcome.files {
            if url == self.url(command.output) {
                transaction.stage(url) { [output = command.output] in try TensorFiles.write(tensor, to: $0.path, as: output) }
            } else {
                let inExtra = command.extra != nil && url.deletingLastPathComponent().standardizedFileURL == extraURL.standardizedFileURL
                transaction.stage(url, createsFolder: inExtra) { try NPY.write(tensor, to: $0) }
            }
        }
        if let gradients = outcome.parameterGradients, let path = command.gradParams {
            transaction.stage(URL(fileURLWithPath: path)) { try Safetensors.write(gradients, to: $0) }
        }
        if let regularisers = outcome.regularisers, command.extra != nil {
            let json = "{\"c_u\": \(regularisers.cu), \"c_p\": \(regularisers.cp), \"loss\": \(regularisers.loss)}\n"
            transaction.stage(extraURL.appendingPathComponent("regularisers.json"), createsFolder: true) {
                try Data(json.utf8).write(to: $0)
            }
        }
        try transaction.commit()
        var summary = "\(name) \(configuration.description): \(outcome.summary); wrote \(command.output)"
        if down, let extra = command.extra { summary += " and the bands in \(extra)" }
        print(summary)
    }

    private func url(_ path: String) -> URL { URL(fileURLWithPath: path) }

    private func runDown(
        _ x: HostTensor, _ configuration: LiftPoolConfiguration, _ parameters: LiftPoolParameters<Float>,
        gradOutput: HostTensor?, backend: String
    ) throws -> Outcome {
        let extraURL = url(command.extra ?? ".")
        let names = Self.bandNames(rank: x.rank)
        let bandShape = x.rank == 3
            ? try configuration.outputShape1D(for: x.shape)
            : try configuration.outputShape(for: Shape4D(x.shape, role: "input \(command.input)")).dimensions
        try TensorFiles.checkOutput(shape: bandShape, path: command.output)
        if let gradOutput, gradOutput.shape != bandShape {
            throw CLIFailure(
                "gradient of the output \(command.gradOutput ?? "") has shape \(Format.shape(gradOutput.shape)), but \(LiftPoolConfiguration.operatorName) maps \(Format.shape(x.shape)) to \(Format.shape(bandShape))")
        }
        let training = command.train || gradOutput != nil
        var outcome = Outcome()
        var output: HostTensor
        var bands: [HostTensor]
        var gradInput: HostTensor?
        if backend == "reference" {
            if x.rank == 3 {
                let (b, r) = try Reference.liftDownPool1D(x, parameters, configuration)
                (output, bands) = (b.output, [b.s, b.d])
                if training { outcome.regularisers = (Double(r.cu), Double(r.cp), Double(r.loss)) }
                if let gradOutput {
                    let g = try Reference.liftDownPool1DBackward(input: x, parameters, configuration, gradOutput: gradOutput)
                    (gradInput, outcome.parameterGradients) = (g.input, g.parameters)
                }
            } else {
                let (b, r) = try Reference.liftDownPool2D(x, parameters, configuration)
                (output, bands) = (b.output, [b.ll, b.lh, b.hl, b.hh])
                if training { outcome.regularisers = (Double(r.cu), Double(r.cp), Double(r.loss)) }
                if let gradOutput {
                    let g = try Reference.liftDownPool2DBackward(input: x, parameters, configuration, gradOutput: gradOutput)
                    (gradInput, outcome.parameterGradients) = (g.input, g.parameters)
                }
            }
            outcome.summary = "\(Format.shape(x.shape)) -> \(Format.shape(output.shape)) on the CPU reference"
        } else {
            let device = try command.device.map { try Device(named: $0) } ?? Device.default()
            let input = try DeviceTensor(x, on: device)
            let gy = try gradOutput.map { try DeviceTensor($0, on: device) }
            var parameterGradients: [String: DeviceTensor]?
            var regularisers: LiftRegularisers?
            let (result, seconds) = try device.measure { () throws -> (DeviceTensor, [DeviceTensor], DeviceTensor?) in
                if x.rank == 3 {
                    let pool = try LiftDownPool1D(configuration, parameters: parameters, on: device)
                    guard training else {
                        let b = try pool(input)
                        return (b.output, [b.s, b.d], nil)
                    }
                    let (b, r, saved) = try pool.forwardTraining(input)
                    regularisers = r
                    let g = try gy.map { try pool.backward(saved, gradOutput: $0) }
                    parameterGradients = g?.parameters
                    return (b.output, [b.s, b.d], g?.input)
                }
                let pool = try LiftDownPool2D(configuration, parameters: parameters, on: device)
                guard training else {
                    let b = try pool(input)
                    return (b.output, b.bands, nil)
                }
                let (b, r, saved) = try pool.forwardTraining(input)
                regularisers = r
                let g = try gy.map { try pool.backward(saved, gradOutput: $0) }
                parameterGradients = g?.parameters
                return (b.output, b.bands, g?.input)
            }
            output = try result.0.toHost()
            bands = try result.1.map { try $0.toHost() }
            gradInput = try result.2?.toHost()
            if let regularisers { outcome.regularisers = (regularisers.cu, regularisers.cp, regularisers.loss) }
            if let parameterGradients {
                outcome.parameterGradients = try parameterGradients.mapValues { try $0.toHost() }
            }
            let info = device.info
            outcome.summary =
                "\(Format.shape(x.shape)) -> \(Format.shape(output.shape)) on \(info.name) (\(info.typeName), \(info.platformName)), kernel time \(Format.fixed(seconds * 1e3, 3)) ms"
        }
        outcome.files.append((url(command.output), output))
        if command.extra != nil {
            for (name, band) in zip(names, bands) { outcome.files.append((extraURL.appendingPathComponent("\(name).npy"), band)) }
        }
        if let gradInput, let path = command.gradInput { outcome.files.append((url(path), gradInput)) }
        return outcome
    }

    private func runUp(
        _ bands: [HostTensor], _ configuration: LiftPoolConfiguration, _ parameters: LiftPoolParameters<Float>,
        gradOutput: HostTensor?, backend: String
    ) throws -> Outcome {
        let layer = LiftPoolConfiguration.inverseOperatorName
        let extraURL = url(command.extra ?? ".")
        let names = Self.bandNames(rank: bands[0].rank)
        for (name, band) in zip(names, bands) where band.shape != bands[0].shape {
            throw CLIFailure("\(layer): band \(name) has shape \(Format.shape(band.shape)) but the input band has \(Format.shape(bands[0].shape))")
        }
        let oneD = bands[0].rank == 3
        if oneD, command.height != nil { throw CLIFailure("--height does not apply to a 1-D (N, C, L) band; use --width") }
        let height = oneD ? 1 : command.height ?? 2 * bands[0].shape[2]
        let width = command.width ?? 2 * bands[0].shape[bands[0].rank - 1]
        let outputShape = oneD ? [bands[0].shape[0], bands[0].shape[1], width] : [bands[0].shape[0], bands[0].shape[1], height, width]
        try TensorFiles.checkOutput(shape: outputShape, path: command.output)
        if let gradOutput, gradOutput.shape != outputShape {
            throw CLIFailure(
                "gradient of the output \(command.gradOutput ?? "") has shape \(Format.shape(gradOutput.shape)), but \(layer) produces \(Format.shape(outputShape))")
        }
        var outcome = Outcome()
        var output: HostTensor
        var bandGradients: [HostTensor]?
        if backend == "reference" {
            if oneD {
                output = try Reference.liftUpPool1D(s: bands[0], d: bands[1], length: width, parameters, configuration)
                if let gradOutput {
                    let g = try Reference.liftUpPool1DBackward(
                        gradOutput: gradOutput, s: bands[0], d: bands[1], length: width, parameters, configuration)
                    (bandGradients, outcome.parameterGradients) = (g.bands, g.parameters)
                }
            } else {
                output = try Reference.liftUpPool2D(
                    ll: bands[0], lh: bands[1], hl: bands[2], hh: bands[3], height: height, width: width, parameters, configuration)
                if let gradOutput {
                    let g = try Reference.liftUpPool2DBackward(
                        gradOutput: gradOutput, ll: bands[0], lh: bands[1], hl: bands[2], hh: bands[3], height: height,
                        width: width, parameters, configuration)
                    (bandGradients, outcome.parameterGradients) = (g.bands, g.parameters)
                }
            }
            outcome.summary = "bands \(Format.shape(bands[0].shape)) -> \(Format.shape(output.shape)) on the CPU reference"
        } else {
            let device = try command.device.map { try Device(named: $0) } ?? Device.default()
            let deviceBands = try bands.map { try DeviceTensor($0, on: device) }
            let gx = try gradOutput.map { try DeviceTensor($0, on: device) }
            let weights = try LiftPoolDeviceParameters(parameters, configuration, on: device)
            var gradients: LiftUpGradients?
            let (result, seconds) = try device.measure { () throws -> DeviceTensor in
                if oneD {
                    let unpool = LiftUpPool1D(weights)
                    let y = try unpool(s: deviceBands[0], d: deviceBands[1], length: width)
                    gradients = try gx.map { try unpool.backward(s: deviceBands[0], d: deviceBands[1], gradOutput: $0) }
                    return y
                }
                let unpool = LiftUpPool2D(weights)
                guard let gx else {
                    return try unpool(
                        ll: deviceBands[0], lh: deviceBands[1], hl: deviceBands[2], hh: deviceBands[3], height: height, width: width)
                }
                let (y, saved) = try unpool.forwardTraining(
                    ll: deviceBands[0], lh: deviceBands[1], hl: deviceBands[2], hh: deviceBands[3], height: height, width: width)
                gradients = try unpool.backward(saved, gradOutput: gx)
                return y
            }
            output = try result.toHost()
            if let gradients {
                bandGradients = try gradients.bands.map { try $0.toHost() }
                outcome.parameterGradients = try gradients.parameters.mapValues { try $0.toHost() }
            }
            let info = device.info
            outcome.summary =
                "bands \(Format.shape(bands[0].shape)) -> \(Format.shape(output.shape)) on \(info.name) (\(info.typeName), \(info.platformName)), kernel time \(Format.fixed(seconds * 1e3, 3)) ms"
        }
        outcome.files.append((url(command.output), output))
        if let bandGradients, let path = command.gradInput {
            outcome.files.append((url(path), bandGradients[0]))
            for (name, gradient) in zip(names.dropFirst(), bandGradients.dropFirst()) {
                outcome.files.append((extraURL.appendingPathComponent("grad_\(name).npy"), gradient))
            }
        }
        return outcome
    }
}
