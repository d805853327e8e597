import Nyquist
import NyquistCore
import NyquistReference

/// The operator names of the CLI contract (DESIGN.md).
enum OperatorName: String, CaseIterable, Sendable {
    case maxPool = "max-pool"
    case avgPool = "avg-pool"
    case blurPool = "blur-pool"
    case maxBlurPool = "max-blur-pool"
    case apsPool = "aps-pool"
    case tipsPool = "tips-pool"

    /// Names the contract reserves for operators this build does not implement yet.
    static let planned: [String] = []

    /// Every name `nyquist run` accepts: these cases, the LiftPool pair (run by `LiftRun`, whose
    /// multi-band outputs do not fit ``PoolOperator``) and adaptive-blur-pool (parameters and its
    /// own path, RunAdaptive.swift).
    static var available: String {
        (allCases.map(\.rawValue) + [
            LiftPoolConfiguration.operatorName, LiftPoolConfiguration.inverseOperatorName,
            AdaptiveBlurPool2DConfiguration.operatorName,
        ]).joined(separator: ", ")
    }

    /// The operator called `name`; a failure with exit status 2 for a planned operator and a
    /// list of the valid names for anything else.
    static func parse(_ name: String) throws -> OperatorName {
        if let known = OperatorName(rawValue: name) { return known }
        if planned.contains(name) {
            throw CLIFailure(
                "operator '\(name)' is not implemented yet; available: \(available)",
                exitCode: CLIFailure.notImplementedExitCode)
        }
        throw CLIFailure(
            "unknown operator '\(name)'; valid operators: \(available)")
    }

    /// True for the window baselines (options --kernel, --stride, --pad).
    var isWindowBaseline: Bool { self == .maxPool || self == .avgPool }

    /// True for the polyphase samplers (aps-pool, tips-pool), which have extra outputs.
    var isPolyphase: Bool { self == .apsPool || self == .tipsPool }

    /// The operator options that apply to this operator.
    var ownOptionList: [String] {
        switch self {
        case .maxPool, .avgPool: ["--kernel", "--stride", "--pad"]
        case .blurPool, .maxBlurPool: ["--filter-size", "--stride", "--padding", "--pad-offset"]
        case .apsPool: ["--filter-size", "--norm"]
        case .tipsPool: ["--kernel"]
        }
    }

    /// ``ownOptionList`` as listed in errors.
    var ownOptions: String { ownOptionList.joined(separator: ", ") }
}

/// One operator with validated options: the bridge from the CLI to the device layers and the
/// CPU reference, which share the configuration value.
enum PoolOperator: Sendable {
    case maxPool(MaxPool2DConfiguration)
    case avgPool(AvgPool2DConfiguration)
    case blurPool(BlurPool2DConfiguration)
    case maxBlurPool(MaxBlurPool2DConfiguration)
    case apsPool(APSPool2DConfiguration)
    /// TIPS with its weights (from --params, or the seeded default initialisation).
    case tipsPool(TIPSPool2DConfiguration, parameters: [String: HostTensor])

    /// The operator's options as a short string (`blur-pool C=3 k=4 s=2 reflect offset=0`).
    var summary: String {
        switch self {
        case .maxPool(let configuration): configuration.description
        case .avgPool(let configuration): configuration.description
        case .blurPool(let configuration): configuration.description
        case .maxBlurPool(let configuration): configuration.description
        case .apsPool(let configuration): configuration.description
        case .tipsPool(let configuration, _): configuration.description
        }
    }

    /// The CLI name.
    var name: OperatorName {
        switch self {
        case .maxPool: .maxPool
        case .avgPool: .avgPool
        case .blurPool: .blurPool
        case .maxBlurPool: .maxBlurPool
        case .apsPool: .apsPool
        case .tipsPool: .tipsPool
        }
    }

    /// The output shape for `input`, with the configuration's typed errors.
    func outputShape(for input: Shape4D) throws -> Shape4D {
        switch self {
        case .maxPool(let configuration): try configuration.outputShape(for: input)
        case .avgPool(let configuration): try configuration.outputShape(for: input)
        case .blurPool(let configuration): try configuration.outputShape(for: input)
        case .maxBlurPool(let configuration): try configuration.outputShape(for: input)
        case .apsPool(let configuration): try configuration.outputShape(for: input)
        case .tipsPool(let configuration, _): try configuration.outputShape(for: input)
        }
    }

    // MARK: Device

    /// The OpenCL layer for these options.
    var layer: any PoolingLayer {
        get throws {
            switch self {
            case .maxPool(let configuration): MaxPool2D(configuration)
            case .avgPool(let configuration): AvgPool2D(configuration)
            case .blurPool(let configuration): BlurPool2D(configuration)
            case .maxBlurPool(let configuration): MaxBlurPool2D(configuration)
            case .apsPool(let configuration): APSPool2D(configuration)
            case .tipsPool(let configuration, let parameters): try TIPSPool2D(configuration, parameters: parameters)
            }
        }
    }

    // MARK: CPU reference

    /// Inference forward on the CPU reference.
    func reference(_ x: HostTensor) throws -> HostTensor {
        switch self {
        case .maxPool(let configuration): try Reference.maxPool2D(x, configuration)
        case .avgPool(let configuration): try Reference.avgPool2D(x, configuration)
        case .blurPool(let configuration): try Reference.blurPool2D(x, configuration)
        case .maxBlurPool(let configuration): try Reference.maxBlurPool2D(x, configuration)
        case .apsPool(let configuration): try Reference.apsPool2D(x, configuration).output
        case .tipsPool(let configuration, let parameters):
            try Reference.tipsPool2D(x, configuration, parameters: parameters).output
        }
    }

    /// Training forward on the CPU reference: the output and what backward needs.
    func referenceTraining(_ x: HostTensor) throws -> (output: HostTensor, saved: Reference.Saved<Float>) {
        switch self {
        case .maxPool(let configuration): try Reference.maxPool2DTraining(x, configuration)
        case .avgPool(let configuration): try Reference.avgPool2DTraining(x, configuration)
        case .blurPool(let configuration): try Reference.blurPool2DTraining(x, configuration)
        case .maxBlurPool(let configuration): try Reference.maxBlurPool2DTraining(x, configuration)
        case .apsPool, .tipsPool: (try reference(x), Reference.Saved(input: x))
        }
    }

    /// Backward on the CPU reference: the gradient with respect to the input.
    func referenceBackward(_ gradOutput: HostTensor, _ saved: Reference.Saved<Float>) throws -> HostTensor {
        switch self {
        case .maxPool(let configuration):
            try Reference.maxPool2DBackward(gradOutput: gradOutput, saved: saved, configuration)
        case .avgPool(let configuration):
            try Reference.avgPool2DBackward(gradOutput: gradOutput, saved: saved, configuration)
        case .blurPool(let configuration):
            try Reference.blurPool2DBackward(gradOutput: gradOutput, saved: saved, configuration)
        case .maxBlurPool(let configuration):
            try Reference.maxBlurPool2DBackward(gradOutput: gradOutput, saved: saved, configuration)
        case .apsPool(let configuration):
            try Reference.apsPool2DBackward(
                gradOutput: gradOutput, saved: Reference.apsPool2DTraining(saved.input, configuration).saved, configuration)
        case .tipsPool(let configuration, let parameters):
            try Reference.tipsPool2DBackward(
                gradOutput: gradOutput, saved: .init(input: saved.input, parameters: parameters, shift: nil), configuration
            ).input
        }
    }
}

/// The options of one operator as given on the command line (nil = not given).
struct OperatorOptions: Sendable {
    /// Window size of max-pool / avg-pool.
    var kernel: Int?
    /// Stride of every operator.
    var stride: Int?
    /// Integer padding of max-pool / avg-pool.
    var pad: Int?
    /// Binomial filter size of blur-pool / max-blur-pool.
    var filterSize: Int?
    /// Padding mode name of blur-pool / max-blur-pool.
    var padding: String?
    /// Extra padding of blur-pool / max-blur-pool.
    var padOffset: Int?
    /// Phase norm name of aps-pool.
    var norm: String?
    /// Weights of tips-pool (nil: the default initialisation from `seed`).
    var parameters: [String: HostTensor]?
    /// Seed of tips-pool's default initialisation.
    var seed: UInt64 = 0

    /// Builds the operator `name` for inputs with `channels` channels; throws one-line failures
    /// for options that do not apply to `name` and for values the configuration refuses.
    func makeOperator(_ name: OperatorName, channels: Int) throws -> PoolOperator {
        let given: [(String, Bool)] = [
            ("--kernel", kernel != nil), ("--stride", stride != nil), ("--pad", pad != nil),
            ("--filter-size", filterSize != nil), ("--padding", padding != nil), ("--pad-offset", padOffset != nil),
            ("--norm", norm != nil),
        ]
        if let (option, _) = given.first(where: { $0.1 && !name.ownOptionList.contains($0.0) }) {
            throw CLIFailure("option \(option) does not apply to \(name.rawValue) (its options: \(name.ownOptions))")
        }
        switch name {
        case .maxPool:
            return .maxPool(try MaxPool2DConfiguration(kernelSize: kernel ?? 2, stride: stride, padding: pad ?? 0))
        case .avgPool:
            return .avgPool(try AvgPool2DConfiguration(kernelSize: kernel ?? 2, stride: stride, padding: pad ?? 0))
        case .blurPool:
            return .blurPool(
                try BlurPool2DConfiguration(
                    channels: channels, filterSize: filterSize ?? 4, stride: stride ?? 2, padding: try paddingMode(),
                    padOffset: padOffset ?? 0))
        case .maxBlurPool:
            return .maxBlurPool(
                try MaxBlurPool2DConfiguration(
                    channels: channels, filterSize: filterSize ?? 4, stride: stride ?? 2, padding: try paddingMode(),
                    padOffset: padOffset ?? 0))
        case .apsPool:
            return .apsPool(try APSPool2DConfiguration(channels: channels, filterSize: filterSize ?? 1, norm: try normValue()))
        case .tipsPool:
            let configuration = try TIPSPool2DConfiguration(channels: channels, kernelSize: kernel ?? 3)
            let weights = parameters ?? configuration.defaultParameters(seed: seed)
            try configuration.validate(parameters: weights)
            return .tipsPool(configuration, parameters: weights.filter { configuration.parameterShapes[$0.key] != nil })
        }
    }

    /// The norm named by `--norm` (l2 when not given).
    private func normValue() throws -> PolyphaseNorm {
        guard let norm else { return .l2 }
        guard let value = PolyphaseNorm(rawValue: norm) else {
            throw CLIFailure("unknown norm '\(norm)'; use \(PolyphaseNorm.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return value
    }

    /// The padding mode named by `--padding` (reflect when not given).
    private func paddingMode() throws -> PaddingMode {
        guard let padding else { return .reflect }
        guard let mode = PaddingMode(rawValue: padding) else {
            throw CLIFailure(
                "unknown padding '\(padding)'; use \(PaddingMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return mode
    }
}
