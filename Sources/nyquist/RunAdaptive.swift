import Foundation
import Nyquist
import NyquistCore
import NyquistReference

extension Run {
    /// What one adaptive-blur-pool run computed (on either backend).
    private struct AdaptiveResult {
        var output: HostTensor
        var filters: HostTensor
        var gradInput: HostTensor?
        var gradParameters: [String: HostTensor]?
        /// Batch statistics and updated running statistics (training only), by file stem.
        var statistics: [String: HostTensor] = [:]
        var `where`: String
        var kernelSeconds: Double?
    }

    /// `nyquist run adaptive-blur-pool`: options checked, then files read, computed, written.
    func runAdaptive() throws {
        let layerName = AdaptiveBlurPool2DConfiguration.operatorName
        for (option, given) in [("--pad", pad != nil), ("--filter-size", filterSize != nil), ("--pad-offset", padOffset != nil)]
        where given {
            throw CLIFailure(
                "option \(option) does not apply to \(layerName) (its options: --kernel, --stride, --groups, --softmax, "
                    + "--padding, --params)")
        }
        let softmaxMode: AdaptiveSoftmax
        if let softmax {
            guard let mode = AdaptiveSoftmax(rawValue: softmax) else {
                throw CLIFailure("unknown softmax '\(softmax)'; use joint or per-group")
            }
            softmaxMode = mode
        } else {
            softmaxMode = .joint
        }
        var paddingMode = PaddingMode.reflect
        if let padding {
            guard let mode = PaddingMode(rawValue: padding) else {
                throw CLIFailure(
                    "unknown padding '\(padding)'; use \(PaddingMode.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            paddingMode = mode
        }
        let backend = try selectedBackend()
        if backend == .reference, device != nil {
            throw CLIFailure("--device applies only to --backend opencl")
        }
        let gradientPaths = try gradientFiles()
        if gradParams != nil, gradientPaths == nil {
            throw CLIFailure("--grad-params needs --grad-output and --grad-input")
        }
        let outputURL = URL(fileURLWithPath: output)
        let written = [output, gradientPaths?.input, gradParams].compactMap { $0 }.map { URL(fileURLWithPath: $0).standardized }
        guard Set(written).count == written.count else {
            throw CLIFailure("--output, --grad-input and --grad-params must name different files")
        }

        let x = try TensorFiles.read(input)
        let inputShape = try Shape4D(x.shape, role: "input \(input)")
        let configuration = try AdaptiveBlurPool2DConfiguration(
            channels: inputShape.c, kernelSize: kernel ?? 3, stride: stride ?? 2, groups: groups, padding: paddingMode,
            softmax: softmaxMode)
        let outputShape = try configuration.outputShape(for: inputShape)
        try TensorFiles.checkOutput(shape: outputShape.dimensions, path: output)
        // The filters (G*k*k per output position) are the largest host result.
        let filterShape = try configuration.filterShape(for: inputShape)
        try HostLimits.current.checkAllocation(count: filterShape.count, bytesPerElement: 4, what: "the filters \(filterShape)")
        let parameters: AdaptiveBlurPool2DParameters<Float>
        if let params {
            parameters = try AdaptiveBlurPool2DParameters(
                stateDict: TensorFiles.readParameters(
                    params, expecting: AdaptiveBlurPool2DParameters<Float>.names.map { (paramsPrefix ?? "") + $0 },
                    layer: AdaptiveBlurPool2DConfiguration.operatorName),
                configuration: configuration, prefix: paramsPrefix ?? "")
        } else {
            parameters = AdaptiveBlurPool2DParameters(configuration: configuration, seed: 0)
        }
        var gy: HostTensor?
        if let gradientPaths {
            let tensor = try NPY.read(contentsOf: URL(fileURLWithPath: gradientPaths.output))
            guard tensor.shape == outputShape.dimensions else {
                throw CLIFailure(
                    "gradient of the output \(gradientPaths.output) has shape \(Format.shape(tensor.shape)), but "
                        + "\(layerName) maps input \(inputShape) to \(outputShape)")
            }
            gy = tensor
        }
        // Without --train, gradients are PyTorch's module.eval() then backward: the running
        // statistics are constants and the output is the inference output.
        let training = train

        let result: AdaptiveResult
        switch backend {
        case .reference:
            result = try adaptiveReference(x, parameters, configuration, training: training, gradOutput: gy)
        case .opencl:
            result = try adaptiveDevice(x, parameters, configuration, training: training, gradOutput: gy)
        }

        // Everything is written or nothing is (OutputTransaction).
        var transaction = OutputTransaction()
        transaction.stage(outputURL) { [output] in try TensorFiles.write(result.output, to: $0.path, as: output) }
        if let path = gradientPaths?.input, let gradInput = result.gradInput {
            transaction.stage(URL(fileURLWithPath: path)) { try NPY.write(gradInput, to: $0) }
        }
        if let gradParams, let gradients = result.gradParameters {
            transaction.stage(URL(fileURLWithPath: gradParams)) { try Safetensors.write(gradients, to: $0) }
        }
        if let extra {
            let directory = URL(fileURLWithPath: extra, isDirectory: true)
            for (stem, tensor) in [("filters", result.filters)] + result.statistics.sorted(by: { $0.key < $1.key }) {
                transaction.stage(directory.appendingPathComponent("\(stem).npy"), createsFolder: true) {
                    try NPY.write(tensor, to: $0)
                }
            }
        }
        try transaction.commit()
        var summary = "\(configuration): \(inputShape) -> \(outputShape) on \(result.where)"
        summary += training ? " (training)" : gy != nil ? " (frozen statistics)" : ""
        if let seconds = result.kernelSeconds { summary += ", kernel time \(Format.fixed(seconds * 1e3, 3)) ms" }
        summary += "; wrote " + transaction.destinations.map(\.path).joined(separator: ", ")
        print(summary)
    }

    private func adaptiveReference(
        _ x: HostTensor, _ parameters: AdaptiveBlurPool2DParameters<Float>, _ configuration: AdaptiveBlurPool2DConfiguration,
        training: Bool, gradOutput: HostTensor?
    ) throws -> AdaptiveResult {
        let place = "the CPU reference"
        guard training else {
            let (y, filters) = try Reference.adaptiveBlurPool2D(x, parameters: parameters, configuration)
            var result = AdaptiveResult(output: y, filters: filters, where: place)
            if let gradOutput {
                let saved = Reference.AdaptiveSaved(input: x, parameters: parameters, batchStatistics: false)
                let gradients = try Reference.adaptiveBlurPool2DBackward(gradOutput: gradOutput, saved: saved, configuration)
                result.gradInput = gradients.input
                result.gradParameters = gradients.parameters
            }
            return result
        }
        let forward = try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, configuration)
        var result = AdaptiveResult(output: forward.output, filters: forward.filters, where: place)
        result.statistics = [
            "batch_mean": forward.batchMean, "batch_var": forward.batchVariance,
            "running_mean": forward.updatedParameters.runningMean, "running_var": forward.updatedParameters.runningVar,
        ]
        if let gradOutput {
            let gradients = try Reference.adaptiveBlurPool2DBackward(
                gradOutput: gradOutput, saved: forward.saved, configuration)
            result.gradInput = gradients.input
            result.gradParameters = gradients.parameters
        }
        return result
    }

    private func adaptiveDevice(
        _ x: HostTensor, _ parameters: AdaptiveBlurPool2DParameters<Float>, _ configuration: AdaptiveBlurPool2DConfiguration,
        training: Bool, gradOutput: HostTensor?
    ) throws -> AdaptiveResult {
        let device = try device.map { try Device(named: $0) } ?? Device.default()
        let layer = try AdaptiveBlurPool2D(configuration, parameters: parameters, on: device)
        let xDevice = try DeviceTensor(x, on: device)
        let gyDevice = try gradOutput.map { try DeviceTensor($0, on: device) }
        let info = device.info
        let place = "\(info.name) (\(info.typeName), \(info.platformName))"
        if !training && gyDevice == nil {
            let ((y, filters), seconds) = try device.measure { try layer.forwardWithFilters(xDevice) }
            return AdaptiveResult(output: try y.toHost(), filters: try filters.toHost(), where: place, kernelSeconds: seconds)
        }
        let ((y, filters, saved, gradients), seconds) = try device.measure {
            () throws -> (DeviceTensor, DeviceTensor?, AdaptiveSavedForBackward, Gradients?) in
            let (y, filters, saved) = try layer.forwardTraining(xDevice, withFilters: true, frozenStatistics: !training)
            let gradients = try gyDevice.map { try layer.backward($0, saved) }
            return (y, filters, saved, gradients)
        }
        guard let filters else {
            throw CLIFailure("\(AdaptiveBlurPool2DConfiguration.operatorName): the device returned no filters")
        }
        var result = AdaptiveResult(output: try y.toHost(), filters: try filters.toHost(), where: place, kernelSeconds: seconds)
        guard training else {
            result.gradInput = try gradients?.input.toHost()
            result.gradParameters = try gradients?.parameters.mapValues { try $0.toHost() }
            return result
        }
        result.statistics = [
            "batch_mean": try saved.batchMean.toHost(), "batch_var": try saved.batchVariance.toHost(),
            "running_mean": layer.parameters.runningMean, "running_var": layer.parameters.runningVar,
        ]
        if let gradients {
            result.gradInput = try gradients.input.toHost()
            var named: [String: HostTensor] = [:]
            for (name, tensor) in gradients.parameters { named[name] = try tensor.toHost() }
            result.gradParameters = named
        }
        return result
    }
}
