import Nyquist
import NyquistCore
import NyquistReference

/// max-pool, avg-pool, blur-pool and max-blur-pool in the registry.
enum WindowOperators {
    static let all = [maxPool, avgPool, blurPool, maxBlurPool]

    static let windowOptions = [
        OperatorOption("kernel", "window size (default 2)"), OperatorOption("stride", "stride (default: the window size)"),
        OperatorOption("pad", "padding on every side, at most kernel/2 (default 0)"),
    ]
    static let blurOptions = [
        OperatorOption("filter-size", "binomial filter size 1...7 (default 4)"), OperatorOption("stride", "stride (default 2)"),
        OperatorOption("padding", "reflect, replicate or zero (default reflect)"),
        OperatorOption("pad-offset", "extra padding on every side (default 0)"),
    ]

    static let maxPool = descriptor(
        MaxPool2DConfiguration.operatorName, "max pooling, the aliasing baseline", windowOptions,
        configuration: { options, _ in
            try MaxPool2DConfiguration(
                kernelSize: options.int("kernel", 2), stride: options.int("stride"), padding: options.int("pad", 0))
        },
        layer: MaxPool2D.init, forward: { try Reference.maxPool2D($0, $1) },
        training: { try Reference.maxPool2DTraining($0, $1) },
        backward: { try Reference.maxPool2DBackward(gradOutput: $0, saved: $1, $2) })

    static let avgPool = descriptor(
        AvgPool2DConfiguration.operatorName, "average pooling", windowOptions,
        configuration: { options, _ in
            try AvgPool2DConfiguration(
                kernelSize: options.int("kernel", 2), stride: options.int("stride"), padding: options.int("pad", 0))
        },
        layer: AvgPool2D.init, forward: { try Reference.avgPool2D($0, $1) },
        training: { try Reference.avgPool2DTraining($0, $1) },
        backward: { try Reference.avgPool2DBackward(gradOutput: $0, saved: $1, $2) })

    static let blurPool = descriptor(
        BlurPool2DConfiguration.operatorName, "BlurPool (Zhang 2019): binomial low-pass, then subsampling", blurOptions,
        configuration: { options, channels in
            try BlurPool2DConfiguration(
                channels: channels, filterSize: options.int("filter-size", 4), stride: options.int("stride", 2),
                padding: options.choice("padding", PaddingMode.reflect), padOffset: options.int("pad-offset", 0))
        },
        layer: BlurPool2D.init, forward: { try Reference.blurPool2D($0, $1) },
        training: { try Reference.blurPool2DTraining($0, $1) },
        backward: { try Reference.blurPool2DBackward(gradOutput: $0, saved: $1, $2) })

    static let maxBlurPool = descriptor(
        MaxBlurPool2DConfiguration.operatorName, "MaxBlurPool: dense 2x2 max, then BlurPool", blurOptions,
        configuration: { options, channels in
            try MaxBlurPool2DConfiguration(
                channels: channels, filterSize: options.int("filter-size", 4), stride: options.int("stride", 2),
                padding: options.choice("padding", PaddingMode.reflect), padOffset: options.int("pad-offset", 0))
        },
        layer: MaxBlurPool2D.init, forward: { try Reference.maxBlurPool2D($0, $1) },
        training: { try Reference.maxBlurPool2DTraining($0, $1) },
        backward: { try Reference.maxBlurPool2DBackward(gradOutput: $0, saved: $1, $2) })

    /// A parameter-free window operator from its configuration, layer and reference functions.
    static func descriptor<Configuration: OperatorConfiguration, L: PoolingLayer>(
        _ name: String, _ summary: String, _ options: [OperatorOption],
        configuration: @escaping @Sendable (OperatorOptions, _ channels: Int) throws -> Configuration,
        layer: @escaping @Sendable (Configuration) -> L,
        forward: @escaping @Sendable (HostTensor, Configuration) throws -> HostTensor,
        training: @escaping @Sendable (HostTensor, Configuration) throws -> (output: HostTensor, saved: Reference.Saved<Float>),
        backward: @escaping @Sendable (HostTensor, Reference.Saved<Float>, Configuration) throws -> HostTensor
    ) -> OperatorDescriptor where L.Configuration == Configuration {
        OperatorDescriptor(
            name: name, summary: summary, options: options, parameterNames: [], inputRanks: [4],
            extraOutputs: { _ in [] }, scalarsName: nil, extraInputs: { _ in [] },
            describe: { options, shape in try configuration(options, shape[1]).description },
            shape: { options, shape in try configuration(options, shape[1]).outputShape(for: Shape4D(shape)).dimensions },
            defaults: { _, _ in [:] },
            device: { options, shape, _, _ in
                AnyLayer(layer(try configuration(options, shape[1])), gradients: { $0.output })
            },
            host: { options, shape, _ in
                let configured = try configuration(options, shape[1])
                return AnyReferenceLayer(
                    name: name, parameters: { [:] },
                    forward: { inputs in
                        OperatorValues(
                            output: try forward(try ErasedInputs.require(inputs, ErasedInputs.main, operator: name), configured))
                    },
                    training: { inputs in
                        let x = try ErasedInputs.require(inputs, ErasedInputs.main, operator: name)
                        let (output, saved) = try training(x, configured)
                        return (OperatorValues(output: output), saved)
                    },
                    backward: { gradients, saved in
                        OperatorGradientValues(input: try backward(gradients.output, try ErasedInputs.cast(saved, name), configured))
                    })
            })
    }
}
