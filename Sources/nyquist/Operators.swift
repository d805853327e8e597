import Nyquist
import NyquistCore
import NyquistReference

/// The operator names of the CLI contract (DESIGN.md).
enum OperatorName: String, CaseIterable, Sendable {
    case maxPool = "max-pool"
    case avgPool = "avg-pool"
    case blurPool = "blur-pool"
    case maxBlurPool = "max-blur-pool"

    /// Every operator `nyquist run` accepts: these cases and adaptive-blur-pool, which has
    /// parameters and its own path (RunAdaptive.swift).
    static var available: String {
        (allCases.map(\.rawValue) + [AdaptiveBlurPool2DConfiguration.operatorName]).joined(separator: ", ")
    }

    /// Names the contract reserves for operators this build does not implement yet.
    static let planned = ["lift-down-pool", "lift-up-pool", "aps-pool", "tips-pool"]

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
}

/// One operator with validated options: the bridge from the CLI to the device layers and the
/// CPU reference, which share the configuration value.
enum PoolOperator: Sendable {
    case maxPool(MaxPool2DConfiguration)
    case avgPool(AvgPool2DConfiguration)
    case blurPool(BlurPool2DConfiguration)
    case maxBlurPool(MaxBlurPool2DConfiguration)

    /// The operator's options as a short string (`blur-pool C=3 k=4 s=2 reflect offset=0`).
    var summary: String {
        switch self {
        case .maxPool(let configuration): configuration.description
        case .avgPool(let configuration): configuration.description
        case .blurPool(let configuration): configuration.description
        case .maxBlurPool(let configuration): configuration.description
        }
    }

    /// The CLI name.
    var name: OperatorName {
        switch self {
        case .maxPool: .maxPool
        case .avgPool: .avgPool
        case .blurPool: .blurPool
        case .maxBlurPool: .maxBlurPool
        }
    }

    /// The output shape for `input`, with the configuration's typed errors.
    func outputShape(for input: Shape4D) throws -> Shape4D {
        switch self {
        case .maxPool(let configuration): try configuration.outputShape(for: input)
        case .avgPool(let configuration): try configuration.outputShape(for: input)
        case .blurPool(let configuration): try configuration.outputShape(for: input)
        case .maxBlurPool(let configuration): try configuration.outputShape(for: input)
        }
    }

    // MARK: Device

    /// The OpenCL layer for these options.
    var layer: any PoolingLayer {
        switch self {
        case .maxPool(let configuration): MaxPool2D(configuration)
        case .avgPool(let configuration): AvgPool2D(configuration)
        case .blurPool(let configuration): BlurPool2D(configuration)
        case .maxBlurPool(let configuration): MaxBlurPool2D(configuration)
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
        }
    }

    /// Training forward on the CPU reference: the output and what backward needs.
    func referenceTraining(_ x: HostTensor) throws -> (output: HostTensor, saved: Reference.Saved<Float>) {
        switch self {
        case .maxPool(let configuration): try Reference.maxPool2DTraining(x, configuration)
        case .avgPool(let configuration): try Reference.avgPool2DTraining(x, configuration)
        case .blurPool(let configuration): try Reference.blurPool2DTraining(x, configuration)
        case .maxBlurPool(let configuration): try Reference.maxBlurPool2DTraining(x, configuration)
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

    /// Builds the operator `name` for inputs with `channels` channels; throws one-line failures
    /// for options that do not apply to `name` and for values the configuration refuses.
    func makeOperator(_ name: OperatorName, channels: Int) throws -> PoolOperator {
        let windowOptions: [(String, Bool)] = [("--kernel", kernel != nil), ("--pad", pad != nil)]
        let blurOptions: [(String, Bool)] = [
            ("--filter-size", filterSize != nil), ("--padding", padding != nil), ("--pad-offset", padOffset != nil),
        ]
        let foreign = name.isWindowBaseline ? blurOptions : windowOptions
        if let (option, _) = foreign.first(where: \.1) {
            let own = name.isWindowBaseline ? "--kernel, --stride, --pad" : "--filter-size, --stride, --padding, --pad-offset"
            throw CLIFailure("option \(option) does not apply to \(name.rawValue) (its options: \(own))")
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
        }
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
