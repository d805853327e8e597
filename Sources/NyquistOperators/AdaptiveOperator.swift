import Nyquist
import NyquistCore
import NyquistReference

/// adaptive-blur-pool in the registry. The device layer's training forward updates its running
/// statistics (as PyTorch's train mode); the reference's leaves its parameters as given. The
/// predicted filters are not among the results (writing them would double a forward's output):
/// `AdaptiveBlurPool2D.forwardWithFilters(_:)` and the reference give them.
enum AdaptiveOperator {
    static func configuration(_ options: OperatorOptions, _ channels: Int) throws -> AdaptiveBlurPool2DConfiguration {
        try AdaptiveBlurPool2DConfiguration(
            channels: channels, kernelSize: options.int("kernel", 3), stride: options.int("stride", 2),
            groups: options.int("groups"), padding: options.choice("padding", PaddingMode.reflect),
            softmax: options.choice("softmax", AdaptiveSoftmax.joint))
    }

    /// Whether the results include the predicted filters (option `filters`, default false:
    /// writing them would double a forward's output), and whether training uses the batch
    /// statistics (option `statistics`: `batch`, PyTorch's train mode, the default; `running`:
    /// eval mode with gradients, the running statistics as constants).
    struct Mode: Sendable {
        let filters: Bool
        let batchStatistics: Bool

        init(_ options: OperatorOptions) throws {
            filters = try options.flag("filters", false)
            switch options.values["statistics"] ?? "batch" {
            case "batch": batchStatistics = true
            case "running": batchStatistics = false
            case let other:
                throw NyquistError(.invalidConfiguration, "unknown statistics '\(other)'; use batch or running")
            }
        }
    }

    static let descriptor = OperatorDescriptor(
        name: AdaptiveBlurPool2DConfiguration.operatorName,
        summary: "content-aware blur pooling (Zou et al. 2020) with grouped softmax filters",
        options: [
            OperatorOption("kernel", "filter size 3, 5 or 7 (default 3)"), OperatorOption("stride", "stride (default 2)"),
            OperatorOption("groups", "channel groups G (default gcd(8, C))"),
            OperatorOption("padding", "reflect, replicate or zero (default reflect)"),
            OperatorOption("softmax", "joint or per-group (default joint)"),
            OperatorOption("seed", "seed of the default parameters (default 0)"),
            OperatorOption("statistics", "training with batch statistics (train mode) or running ones (eval mode); default batch"),
            OperatorOption("filters", "true: the results include the predicted filters (default false)"),
        ],
        parameterNames: AdaptiveBlurPool2DParameters<Float>.names,
        ignoredParameterNames: AdaptiveBlurPool2DParameters<Float>.ignoredNames, inputRanks: [4],
        extraOutputs: { _ in ["filters", "batch_mean", "batch_var", "running_mean", "running_var"] }, scalarsName: nil,
        extraInputs: { _ in [] },
        describe: { options, shape in
            _ = try Mode(options)
            return try configuration(options, shape[1]).description
        },
        shape: { options, shape in try configuration(options, shape[1]).outputShape(for: Shape4D(shape)).dimensions },
        extraShapes: { options, shape in
            let configuration = try configuration(options, shape[1])
            let p = [configuration.predictorChannels]
            return [
                "filters": try configuration.filterShape(for: Shape4D(shape)).dimensions, "batch_mean": p, "batch_var": p,
                "running_mean": p, "running_var": p,
            ]
        },
        producedOutputs: { options, _, training in
            let mode = try Mode(options)
            return (mode.filters ? ["filters"] : [])
                + (training && mode.batchStatistics ? ["batch_mean", "batch_var", "running_mean", "running_var"] : [])
        },
        trainableParameterNames: ["conv.weight", "bn.weight", "bn.bias"],
        defaults: { options, channels in
            AdaptiveBlurPool2DParameters<Float>(
                configuration: try configuration(options, channels), seed: try options.seed("seed", 0)
            ).stateDict
        },
        device: { options, shape, parameters, device in
            let configuration = try configuration(options, shape[1])
            let mode = try Mode(options)
            let layer = try AdaptiveBlurPool2D(
                configuration, parameters: AdaptiveBlurPool2DParameters(stateDict: parameters, configuration: configuration),
                on: device)
            let name = AdaptiveBlurPool2DConfiguration.operatorName
            return AnyLayer(
                name: name, parameters: { layer.parameters }, load: { try layer.loadParameters($0) },
                forward: { inputs in
                    let x = try ErasedInputs.require(inputs, ErasedInputs.main, operator: name)
                    guard mode.filters else { return OperatorValues(output: try layer(x)) }
                    let (output, filters) = try layer.forwardWithFilters(x)
                    return OperatorValues(output: output, extras: ["filters": filters])
                },
                training: { inputs in
                    let x = try ErasedInputs.require(inputs, ErasedInputs.main, operator: name)
                    let (output, filters, saved) = try layer.forwardTraining(
                        x, withFilters: mode.filters, frozenStatistics: !mode.batchStatistics)
                    var extras: [String: DeviceTensor] = [:]
                    if let filters { extras["filters"] = filters }
                    if mode.batchStatistics {
                        // Copies of the running statistics after this step (the layer's own
                        // change in place with the next one).
                        extras["batch_mean"] = saved.batchMean
                        extras["batch_var"] = saved.batchVariance
                        for (name, key) in [("running_mean", "bn.running_mean"), ("running_var", "bn.running_var")] {
                            guard let statistic = layer.parameters[key] else {
                                throw NyquistError(.invalidParameters, "adaptive-blur-pool: \(key) is missing")
                            }
                            extras[name] = try device.copy(statistic)
                        }
                    }
                    return (OperatorValues(output: output, extras: extras), saved)
                },
                backward: { gradients, saved in
                    OperatorGradientValues(
                        try layer.backward(gradients.output, try ErasedInputs.cast(saved, name) as AdaptiveSavedForBackward))
                })
        },
        host: { options, shape, parameters in
            let configuration = try configuration(options, shape[1])
            let mode = try Mode(options)
            let typed = try AdaptiveBlurPool2DParameters<Float>(stateDict: parameters, configuration: configuration)
            let name = AdaptiveBlurPool2DConfiguration.operatorName
            func inference(_ x: HostTensor) throws -> OperatorValues<HostTensor> {
                let result = try Reference.adaptiveBlurPool2D(x, parameters: typed, configuration)
                return OperatorValues(output: result.output, extras: mode.filters ? ["filters": result.filters] : [:])
            }
            return AnyReferenceLayer(
                name: name, parameters: { typed.stateDict },
                forward: { inputs in try inference(try ErasedInputs.require(inputs, ErasedInputs.main, operator: name)) },
                training: { inputs in
                    let x = try ErasedInputs.require(inputs, ErasedInputs.main, operator: name)
                    guard mode.batchStatistics else {
                        return (
                            try inference(x), Reference.AdaptiveSaved(input: x, parameters: typed, batchStatistics: false)
                        )
                    }
                    let result = try Reference.adaptiveBlurPool2DTraining(x, parameters: typed, configuration)
                    var extras = [
                        "batch_mean": result.batchMean, "batch_var": result.batchVariance,
                        "running_mean": result.updatedParameters.runningMean,
                        "running_var": result.updatedParameters.runningVar,
                    ]
                    if mode.filters { extras["filters"] = result.filters }
                    return (OperatorValues(output: result.output, extras: extras), result.saved)
                },
                backward: { outputGradients, saved in
                    let gradients = try Reference.adaptiveBlurPool2DBackward(
                        gradOutput: outputGradients.output, saved: try ErasedInputs.cast(saved, name), configuration)
                    return OperatorGradientValues(
                        input: gradients.input,
                        parameters: [
                            "conv.weight": gradients.convWeight, "bn.weight": gradients.bnWeight, "bn.bias": gradients.bnBias,
                        ])
                })
        })
}

