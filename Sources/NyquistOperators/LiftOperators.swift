import Nyquist
import NyquistCore
import NyquistReference

/// lift-down-pool and lift-up-pool in the registry: rank-4 inputs run the 2-D layers, rank-3
/// inputs (N, C, L) the 1-D ones. Band names: `ll`, `lh`, `hl`, `hh` (2-D) or `s`, `d` (1-D).
/// Backward adds the regulariser loss with weight 1 (the lambdas set its terms) unless the
/// gradient of the scalar `loss` says otherwise; the bands take gradients too.
enum LiftOperators {
    static let all = [down, up]

    static let commonOptions = [
        OperatorOption("kernel", "predictor/updater kernel size K, odd (default 5)"),
        OperatorOption("lambda-u", "weight of c_u in the regulariser loss (default 0.01)"),
        OperatorOption("lambda-p", "weight of c_p in the regulariser loss (default 0.1)"),
        OperatorOption("seed", "seed of the default parameters (default 0)"),
    ]

    static func configuration(_ options: OperatorOptions, _ channels: Int) throws -> LiftPoolConfiguration {
        try LiftPoolConfiguration(
            channels: channels, kernelSize: options.int("kernel", 5), lambdaU: options.double("lambda-u", 0.01),
            lambdaP: options.double("lambda-p", 0.1))
    }

    static func defaults(_ options: OperatorOptions, _ channels: Int) throws -> [String: HostTensor] {
        try LiftPoolParameters<Float>(configuration(options, channels), seed: options.seed("seed", 0)).stateDict()
    }

    static func bandNames(rank: Int) -> [String] { rank == 3 ? ["s", "d"] : ["ll", "lh", "hl", "hh"] }

    static let down = OperatorDescriptor(
        name: LiftPoolConfiguration.operatorName, summary: "LiftDownPool (Zhao & Snoek 2021): learnable lifting",
        options: commonOptions, parameterNames: LiftPoolParameters<Float>.names, inputRanks: [3, 4],
        extraOutputs: { rank in bandNames(rank: rank) }, scalarsName: "regularisers", extraInputs: { _ in [] },
        describe: { options, shape in try configuration(options, shape[1]).description },
        shape: { options, shape in
            let configuration = try configuration(options, shape[1])
            return shape.count == 3
                ? try configuration.outputShape1D(for: shape) : try configuration.outputShape(for: Shape4D(shape)).dimensions
        },
        extraShapes: { options, shape in
            let configuration = try configuration(options, shape[1])
            let band =
                shape.count == 3
                ? try configuration.outputShape1D(for: shape) : try configuration.outputShape(for: Shape4D(shape)).dimensions
            return Dictionary(uniqueKeysWithValues: bandNames(rank: shape.count).map { ($0, band) })
        },
        differentiableOutputs: { rank in bandNames(rank: rank) }, scalarGradientNames: ["loss"],
        defaults: defaults,
        device: { options, shape, parameters, device in
            let configuration = try configuration(options, shape[1])
            let host = try LiftPoolParameters<Float>(configuration, stateDict: parameters)
            if shape.count == 3 {
                let layer = try LiftDownPool1D(configuration, parameters: host, on: device)
                return AnyLayer(layer) { gradients in
                    LiftDownPool1DOutputGradients(
                        output: gradients.output, s: gradients.extras["s"], d: gradients.extras["d"],
                        regulariserLoss: gradients.scalars["loss"] ?? 1)
                }
            }
            let layer = try LiftDownPool2D(configuration, parameters: host, on: device)
            return AnyLayer(layer) { gradients in
                LiftDownPool2DOutputGradients(
                    output: gradients.output, ll: gradients.extras["ll"], lh: gradients.extras["lh"],
                    hl: gradients.extras["hl"], hh: gradients.extras["hh"], regulariserLoss: gradients.scalars["loss"] ?? 1)
            }
        },
        host: { options, shape, parameters in
            let configuration = try configuration(options, shape[1])
            let typed = try LiftPoolParameters<Float>(configuration, stateDict: parameters)
            let name = LiftPoolConfiguration.operatorName
            let oneD = shape.count == 3
            func run(_ x: HostTensor) throws -> OperatorValues<HostTensor> {
                if oneD {
                    let (bands, regularisers) = try Reference.liftDownPool1D(x, typed, configuration)
                    return OperatorValues(
                        output: bands.output, extras: ["s": bands.s, "d": bands.d], scalars: scalars(regularisers))
                }
                let (bands, regularisers) = try Reference.liftDownPool2D(x, typed, configuration)
                return OperatorValues(
                    output: bands.output, extras: ["ll": bands.ll, "lh": bands.lh, "hl": bands.hl, "hh": bands.hh],
                    scalars: scalars(regularisers))
            }
            return AnyReferenceLayer(
                name: name, parameters: { parameters },
                forward: { inputs in
                    let values = try run(try ErasedInputs.require(inputs, ErasedInputs.main, operator: name))
                    return OperatorValues(output: values.output, extras: values.extras)
                },
                training: { inputs in
                    let x = try ErasedInputs.require(inputs, ErasedInputs.main, operator: name)
                    return (try run(x), x)
                },
                backward: { outputGradients, saved in
                    let x: HostTensor = try ErasedInputs.cast(saved, name)
                    let bands = outputGradients.extras
                    let gradLoss = Float(outputGradients.scalars["loss"] ?? 1)
                    let gradients =
                        oneD
                        ? try Reference.liftDownPool1DBackward(
                            input: x, typed, configuration, gradOutput: outputGradients.output, gradS: bands["s"],
                            gradD: bands["d"], gradLoss: gradLoss)
                        : try Reference.liftDownPool2DBackward(
                            input: x, typed, configuration, gradOutput: outputGradients.output, gradLL: bands["ll"],
                            gradLH: bands["lh"], gradHL: bands["hl"], gradHH: bands["hh"], gradLoss: gradLoss)
                    return OperatorGradientValues(input: gradients.input, parameters: gradients.parameters)
                })
        })

    static func scalars(_ regularisers: Reference.LiftRegularisers<Float>) -> [String: Double] {
        ["c_u": Double(regularisers.cu), "c_p": Double(regularisers.cp), "loss": Double(regularisers.loss)]
    }

    /// LiftUpPool: `input` is the coarse band (LL or s), the detail bands are the inputs `lh`,
    /// `hl`, `hh` (or `d`); the target size is `height`/`width` (default twice the band size;
    /// 1-D: `width` is the length).
    static let up = OperatorDescriptor(
        name: LiftPoolConfiguration.inverseOperatorName, summary: "LiftUpPool: the exact inverse of LiftDownPool",
        options: commonOptions + [
            OperatorOption("height", "target height (default twice the bands')"),
            OperatorOption("width", "target width or length (default twice the bands')"),
        ],
        parameterNames: LiftPoolParameters<Float>.names, inputRanks: [3, 4],
        extraOutputs: { _ in [] }, scalarsName: nil, extraInputs: { rank in Array(bandNames(rank: rank).dropFirst()) },
        describe: { options, shape in try configuration(options, shape[1]).description },
        shape: { options, shape in
            let configuration = try configuration(options, shape[1])
            let (height, width) = try targetSize(options, shape)
            if shape.count == 3 {
                let band = try LiftPoolConfiguration.shape1D(shape, role: "band")
                return try configuration.checkInverse(bandShape: band, targetHeight: 1, targetWidth: width).dimensions
                    .enumerated().filter { $0.offset != 2 }.map(\.element)
            }
            return try configuration.checkInverse(bandShape: Shape4D(shape), targetHeight: height, targetWidth: width)
                .dimensions
        },
        defaults: defaults,
        device: { options, shape, parameters, device in
            let configuration = try configuration(options, shape[1])
            let weights = try LiftPoolDeviceParameters(
                LiftPoolParameters<Float>(configuration, stateDict: parameters), configuration, on: device)
            let name = LiftPoolConfiguration.inverseOperatorName
            let (height, width) = try targetSize(options, shape)
            if shape.count == 3 {
                return AnyLayer(
                    LiftUpPool1D(weights), name: name,
                    input: { inputs in
                        LiftUpPool1DInput(
                            s: try ErasedInputs.require(inputs, ErasedInputs.main, operator: name),
                            d: try ErasedInputs.require(inputs, "d", operator: name), length: width)
                    }, gradients: { $0.output })
            }
            return AnyLayer(
                LiftUpPool2D(weights), name: name,
                input: { inputs in
                    LiftUpPool2DInput(
                        ll: try ErasedInputs.require(inputs, ErasedInputs.main, operator: name),
                        lh: try ErasedInputs.require(inputs, "lh", operator: name),
                        hl: try ErasedInputs.require(inputs, "hl", operator: name),
                        hh: try ErasedInputs.require(inputs, "hh", operator: name), height: height, width: width)
                }, gradients: { $0.output })
        },
        host: { options, shape, parameters in
            let configuration = try configuration(options, shape[1])
            let typed = try LiftPoolParameters<Float>(configuration, stateDict: parameters)
            let name = LiftPoolConfiguration.inverseOperatorName
            let (height, width) = try targetSize(options, shape)
            let names = bandNames(rank: shape.count)
            func bands(_ inputs: [String: HostTensor]) throws -> [HostTensor] {
                [try ErasedInputs.require(inputs, ErasedInputs.main, operator: name)]
                    + (try names.dropFirst().map { try ErasedInputs.require(inputs, $0, operator: name) })
            }
            func forward(_ b: [HostTensor]) throws -> HostTensor {
                b.count == 2
                    ? try Reference.liftUpPool1D(s: b[0], d: b[1], length: width, typed, configuration)
                    : try Reference.liftUpPool2D(
                        ll: b[0], lh: b[1], hl: b[2], hh: b[3], height: height, width: width, typed, configuration)
            }
            return AnyReferenceLayer(
                name: name, parameters: { parameters },
                forward: { OperatorValues(output: try forward(try bands($0))) },
                training: { inputs in
                    let b = try bands(inputs)
                    return (OperatorValues(output: try forward(b)), b)
                },
                backward: { outputGradients, saved in
                    let gradOutput = outputGradients.output
                    let b: [HostTensor] = try ErasedInputs.cast(saved, name)
                    let gradients =
                        b.count == 2
                        ? try Reference.liftUpPool1DBackward(
                            gradOutput: gradOutput, s: b[0], d: b[1], length: width, typed, configuration)
                        : try Reference.liftUpPool2DBackward(
                            gradOutput: gradOutput, ll: b[0], lh: b[1], hl: b[2], hh: b[3], height: height, width: width,
                            typed, configuration)
                    return OperatorGradientValues(
                        input: gradients.bands[0],
                        extras: Dictionary(uniqueKeysWithValues: zip(names.dropFirst(), gradients.bands.dropFirst())),
                        parameters: gradients.parameters)
                })
        })

    /// The reconstruction's height and width for bands of `shape` (1-D: height 1).
    static func targetSize(_ options: OperatorOptions, _ shape: [Int]) throws -> (height: Int, width: Int) {
        if shape.count == 3 {
            if options.values["height"] != nil {
                throw NyquistError(.invalidConfiguration, "--height does not apply to a 1-D (N, C, L) band; use --width")
            }
            return (1, try options.int("width", 2 * shape[2]))
        }
        return (try options.int("height", 2 * shape[2]), try options.int("width", 2 * shape[3]))
    }
}
