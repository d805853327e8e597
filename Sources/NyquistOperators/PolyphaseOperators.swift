import Nyquist
import NyquistCore
import NyquistReference

/// aps-pool and tips-pool in the registry.
enum PolyphaseOperators {
    static let all = [aps, tips]

    /// APS: the phase indices come back as the extra `indices` (shape [N], floats 0...3) and
    /// can be given as the input `indices` to sample those phases instead of choosing.
    static let aps = OperatorDescriptor(
        name: APSPool2DConfiguration.operatorName, summary: "adaptive polyphase sampling (Chaman & Dokmanic 2021)",
        options: [
            OperatorOption("filter-size", "circular pre-blur filter size (default 1: none)"),
            OperatorOption("norm", "phase norm l2, l1 or linf (default l2)"),
        ],
        parameterNames: [], inputRanks: [4], extraOutputs: { _ in ["indices"] }, scalarsName: nil, extraInputs: { _ in ["indices"] },
        describe: { options, shape in try apsConfiguration(options, shape[1]).description },
        shape: { options, shape in try apsConfiguration(options, shape[1]).outputShape(for: Shape4D(shape)).dimensions },
        extraShapes: { _, shape in ["indices": [shape[0]]] },
        defaults: { _, _ in [:] },
        device: { options, shape, _, _ in
            let layer = APSPool2D(try apsConfiguration(options, shape[1]))
            let name = APSPool2DConfiguration.operatorName
            return AnyLayer(
                name: name, parameters: { [:] },
                forward: { inputs in
                    OperatorValues(
                        try layer(try ErasedInputs.require(inputs, ErasedInputs.main, operator: name), indices: inputs["indices"]))
                },
                training: { inputs in
                    let (output, saved) = try layer.forwardTraining(
                        try ErasedInputs.require(inputs, ErasedInputs.main, operator: name), indices: inputs["indices"])
                    return (OperatorValues(output), saved)
                },
                backward: { gradients, saved in
                    OperatorGradientValues(try layer.backward(gradients.output, try ErasedInputs.cast(saved, name) as APSPool2DSaved))
                })
        },
        host: { options, shape, _ in
            let configuration = try apsConfiguration(options, shape[1])
            let name = APSPool2DConfiguration.operatorName
            func run(_ inputs: [String: HostTensor]) throws -> (OperatorValues<HostTensor>, Reference.APSSaved<Float>) {
                let x = try ErasedInputs.require(inputs, ErasedInputs.main, operator: name)
                let given = inputs["indices"].map { $0.values.map { Int($0) } }
                let (output, indices, saved) = try Reference.apsPool2DTraining(x, configuration, indices: given)
                let indexTensor = try HostTensor(shape: [indices.count], values: indices.map { Float($0) })
                return (OperatorValues(output: output, extras: ["indices": indexTensor]), saved)
            }
            return AnyReferenceLayer(
                name: name, parameters: { [:] }, forward: { try run($0).0 }, training: { try run($0) },
                backward: { gradients, saved in
                    OperatorGradientValues(
                        input: try Reference.apsPool2DBackward(
                            gradOutput: gradients.output, saved: try ErasedInputs.cast(saved, name), configuration))
                })
        })

    static func apsConfiguration(_ options: OperatorOptions, _ channels: Int) throws -> APSPool2DConfiguration {
        try APSPool2DConfiguration(
            channels: channels, filterSize: options.int("filter-size", 1), norm: options.choice("norm", PolyphaseNorm.l2))
    }

    /// TIPS: training forward returns `psi`, `tau` and the losses `fm` and `undo` (the L_undo
    /// target's shift drawn from `seed`, within `max-shift`, filled by `shift-fill`); backward
    /// weighs the losses with `lambda-fm` and `lambda-undo` (or the gradients of `fm` and `undo`)
    /// and takes gradients of `psi` and `tau` too.
    static let tips = OperatorDescriptor(
        name: TIPSPool2DConfiguration.operatorName, summary: "translation-invariant polyphase sampling (Saha & Gokhale 2025)",
        options: [
            OperatorOption("kernel", "odd depthwise kernel size (default 3)"),
            OperatorOption("seed", "seed of the default weights and of the L_undo shift (default 0)"),
            OperatorOption("lambda-fm", "weight of L_FM in the backward objective (default 0)"),
            OperatorOption("lambda-undo", "weight of L_undo in the backward objective (default 0)"),
            OperatorOption("max-shift", "largest |shift| of the L_undo target on each axis (default 2)"),
            OperatorOption("shift-fill", "circular or zero fill of the L_undo shift (default circular)"),
        ],
        parameterNames: TIPSPool2DConfiguration.parameterNames, inputRanks: [4], extraOutputs: { _ in ["psi", "tau"] }, scalarsName: "losses",
        extraInputs: { _ in [] },
        describe: { options, shape in try TIPSTraining(options, shape[1]).configuration.description },
        shape: { options, shape in
            try TIPSTraining(options, shape[1]).configuration.outputShape(for: Shape4D(shape)).dimensions
        },
        extraShapes: { options, shape in
            let padded = try TIPSTraining(options, shape[1]).configuration.paddedShape(for: Shape4D(shape))
            return ["psi": padded.dimensions, "tau": [shape[0], shape[1], 4]]
        },
        producedOutputs: { _, _, training in training ? ["psi", "tau"] : ["tau"] },
        differentiableOutputs: { _ in ["psi", "tau"] }, scalarGradientNames: ["fm", "undo"],
        defaults: { options, channels in
            try TIPSPool2DConfiguration(channels: channels, kernelSize: options.int("kernel", 3))
                .defaultParameters(seed: options.seed("seed", 0))
        },
        device: { options, shape, parameters, device in
            let training = try TIPSTraining(options, shape[1])
            let layer = try TIPSPool2D(training.configuration, parameters: parameters, on: device)
            let name = TIPSPool2DConfiguration.operatorName
            return AnyLayer(
                name: name, parameters: { layer.parameters }, load: { try layer.loadParameters($0) },
                forward: { inputs in OperatorValues(try layer(try ErasedInputs.require(inputs, ErasedInputs.main, operator: name))) },
                training: { inputs in
                    let (output, saved) = try layer.forwardTraining(
                        try ErasedInputs.require(inputs, ErasedInputs.main, operator: name), undoShift: training.shift)
                    return (OperatorValues(output), saved)
                },
                backward: { gradients, saved in
                    OperatorGradientValues(
                        try layer.backward(
                            TIPSPool2DOutputGradients(
                                output: gradients.output, psi: gradients.extras["psi"], tau: gradients.extras["tau"],
                                lossWeights: try training.weights(gradients.scalars)),
                            try ErasedInputs.cast(saved, name)))
                })
        },
        host: { options, shape, parameters in
            let training = try TIPSTraining(options, shape[1])
            let configuration = training.configuration
            try configuration.validate(parameters: parameters)
            let name = TIPSPool2DConfiguration.operatorName
            return AnyReferenceLayer(
                name: name, parameters: { parameters.filter { configuration.parameterShapes[$0.key] != nil } },
                forward: { inputs in
                    let result = try Reference.tipsPool2D(
                        try ErasedInputs.require(inputs, ErasedInputs.main, operator: name), configuration, parameters: parameters)
                    return OperatorValues(output: result.output, extras: ["tau": result.tau])
                },
                training: { inputs in
                    let (result, saved) = try Reference.tipsPool2DTraining(
                        try ErasedInputs.require(inputs, ErasedInputs.main, operator: name), configuration,
                        parameters: parameters, shift: training.shift)
                    let target = try training.shift.map { try Reference.tipsUndoTarget(saved.input, configuration, shift: $0) }
                    let losses = try Reference.tipsLosses(result: result, target: target)
                    var scalars = ["fm": losses.fm]
                    if let undo = losses.undo { scalars["undo"] = undo }
                    return (
                        OperatorValues(output: result.output, extras: ["psi": result.psi, "tau": result.tau], scalars: scalars),
                        saved
                    )
                },
                backward: { outputGradients, saved in
                    let gradients = try Reference.tipsPool2DBackward(
                        gradOutput: outputGradients.output, saved: try ErasedInputs.cast(saved, name), configuration,
                        lossWeights: try training.weights(outputGradients.scalars), gradPsi: outputGradients.extras["psi"],
                        gradTau: outputGradients.extras["tau"])
                    return OperatorGradientValues(input: gradients.input, parameters: gradients.parameters)
                })
        })

    /// TIPS's configuration and training options.
    struct TIPSTraining: Sendable {
        let configuration: TIPSPool2DConfiguration
        let weights: TIPSLossWeights
        /// The L_undo target's shift.
        let shift: MapShift?

        init(_ options: OperatorOptions, _ channels: Int) throws {
            configuration = try TIPSPool2DConfiguration(channels: channels, kernelSize: options.int("kernel", 3))
            weights = try TIPSLossWeights(fm: options.double("lambda-fm", 0), undo: options.double("lambda-undo", 0))
            let largest = try options.int("max-shift", 2)
            var generator = try ShiftGenerator(
                seed: options.seed("seed", 0), maxShiftH: largest, maxShiftW: largest,
                fill: options.choice("shift-fill", ShiftFill.circular))
            shift = generator.next()
        }

        /// The loss weights of one backward: the scalar gradients `fm` and `undo` where given,
        /// else the options' lambdas.
        func weights(_ scalars: [String: Double]) throws -> TIPSLossWeights {
            try TIPSLossWeights(fm: scalars["fm"] ?? weights.fm, undo: scalars["undo"] ?? weights.undo)
        }
    }
}
