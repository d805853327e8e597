import Nyquist
import NyquistCore

/// One operator of the library: its name, its options, its parameter names, and how to build
/// its device layer and its CPU reference with the same options and parameters.
///
/// ```swift
/// let blur = try OperatorRegistry.named("blur-pool")
/// let options = OperatorOptions(["filter-size": "5"])
/// let layer = try blur.makeLayer(options, inputShape: x.shape, on: device)
/// let reference = try blur.makeReference(options, inputShape: x.shape)
/// let y = try layer(try DeviceTensor(x, on: device)).output
/// let expected = try reference(x).output
/// ```
public struct OperatorDescriptor: Sendable {
    /// The CLI name (`blur-pool`).
    public let name: String
    /// One line saying what it is.
    public let summary: String
    /// The options it takes (none of the others).
    public let options: [OperatorOption]
    /// Its parameters' PyTorch `state_dict` names (empty without parameters).
    public let parameterNames: [String]
    /// Other `state_dict` entries a PyTorch module of this operator carries that are accepted
    /// and ignored (AdaptiveBlurPool's `bn.num_batches_tracked`).
    public var ignoredParameterNames: Set<String> = []
    /// The input ranks it takes (4: N x C x H x W; LiftPool also 3: N x C x L).
    public let inputRanks: [Int]
    /// The names of the results besides `output` (APS `indices`; TIPS `psi`, `tau`; LiftDownPool
    /// its bands, by input rank).
    public let extraOutputs: @Sendable (_ rank: Int) -> [String]
    /// What the scalar results are called as a group (`nyquist run --extra` writes them to
    /// `<name>.json`): TIPS's `losses`, LiftDownPool's `regularisers`; nil without scalars.
    public let scalarsName: String?
    /// The names of the inputs besides `input` (LiftUpPool's detail bands, by input rank; APS's
    /// optional `indices`).
    public let extraInputs: @Sendable (_ rank: Int) -> [String]

    let describe: @Sendable (OperatorOptions, _ inputShape: [Int]) throws -> String
    let shape: @Sendable (OperatorOptions, _ inputShape: [Int]) throws -> [Int]
    var extraShapes: @Sendable (OperatorOptions, _ inputShape: [Int]) throws -> [String: [Int]] = { _, _ in [:] }
    /// The other results a call produces when they depend on the options or the pass (nil:
    /// ``extraOutputs`` always).
    var producedOutputs: (@Sendable (OperatorOptions, _ rank: Int, _ training: Bool) throws -> [String])? = nil
    /// The parameters backward gives gradients of, when not all of them (nil: every one).
    var trainableParameterNames: [String]? = nil
    /// The results besides `output` whose gradients backward takes (LiftDownPool's bands; TIPS's
    /// `psi` and `tau`), by input rank.
    public internal(set) var differentiableOutputs: @Sendable (_ rank: Int) -> [String] = { _ in [] }
    /// The scalar results whose gradients backward takes (their weights in the objective):
    /// LiftDownPool's `loss`, TIPS's `fm` and `undo`.
    public internal(set) var scalarGradientNames: [String] = []
    let defaults: @Sendable (OperatorOptions, _ channels: Int) throws -> [String: HostTensor]
    let device: @Sendable (OperatorOptions, _ inputShape: [Int], _ parameters: [String: HostTensor], Device) throws -> AnyLayer
    let host: @Sendable (OperatorOptions, _ inputShape: [Int], _ parameters: [String: HostTensor]) throws -> AnyReferenceLayer

    /// Throws for an option this operator does not take, naming the ones it does (values are
    /// checked with the input's shape, by every other method).
    public func checkOptionNames(_ options: OperatorOptions) throws {
        try options.check(allowedBy: self)
    }

    /// The operator's configuration as text (`blur-pool C=3 k=4 s=2 reflect offset=0`), with the
    /// options' typed errors.
    public func description(_ options: OperatorOptions, inputShape: [Int]) throws -> String {
        try options.check(allowedBy: self)
        return try describe(options, checkedShape(inputShape))
    }

    /// The shape of the main output for an input of `inputShape`, with the configuration's typed
    /// errors (an input too small for the padding, a channel count the options refuse).
    public func outputShape(_ options: OperatorOptions, inputShape: [Int]) throws -> [Int] {
        try options.check(allowedBy: self)
        return try shape(options, checkedShape(inputShape))
    }

    /// The shape of every result of a training forward by name: `output` and each of
    /// ``extraOutputs`` (what a caller allocates to receive them).
    public func resultShapes(_ options: OperatorOptions, inputShape: [Int]) throws -> [String: [Int]] {
        try options.check(allowedBy: self)
        let checked = try checkedShape(inputShape)
        var shapes = try extraShapes(options, checked)
        shapes["output"] = try shape(options, checked)
        return shapes
    }

    /// The names of the results one call produces: `output`, then the others of ``extraOutputs``
    /// that this pass makes with these options (TIPS's inference writes no psi; AdaptiveBlurPool's
    /// filters follow its `filters` option and its batch statistics its training forward).
    public func resultNames(_ options: OperatorOptions, inputShape: [Int], training: Bool) throws -> [String] {
        try options.check(allowedBy: self)
        let rank = try checkedShape(inputShape).count
        return ["output"] + (try producedOutputs?(options, rank, training) ?? extraOutputs(rank))
    }

    /// The names of the gradients backward gives: `input`, the other inputs' (not APS's
    /// indices) and the trainable parameters' by `state_dict` name.
    public func gradientNames(inputShape: [Int]) throws -> [String] {
        let rank = try checkedShape(inputShape).count
        return ["input"] + extraInputs(rank).filter { $0 != "indices" } + (trainableParameterNames ?? parameterNames)
    }

    /// The shape of every input by name for a main input of `inputShape`: `input`, the further
    /// inputs (LiftUpPool's detail bands, shaped like the main one) and APS's optional `indices`
    /// ([N]).
    public func inputShapes(_ options: OperatorOptions, inputShape: [Int]) throws -> [String: [Int]] {
        try options.check(allowedBy: self)
        let checked = try checkedShape(inputShape)
        var shapes = ["input": checked]
        for name in extraInputs(checked.count) { shapes[name] = name == "indices" ? [checked[0]] : checked }
        return shapes
    }

    /// The parameters a layer gets: `given` (checked by the layer), else the operator's
    /// default initialisation drawn from the `seed` option.
    public func parameters(_ options: OperatorOptions, inputShape: [Int], given: [String: HostTensor]? = nil) throws
        -> [String: HostTensor]
    {
        try options.check(allowedBy: self)
        let shape = try checkedShape(inputShape)
        if let given { return given }
        return parameterNames.isEmpty ? [:] : try defaults(options, shape[1])
    }

    /// The device layer for inputs of `inputShape` (its channel count and rank pick the layer).
    public func makeLayer(
        _ options: OperatorOptions, inputShape: [Int], parameters given: [String: HostTensor]? = nil, on device: Device
    ) throws -> AnyLayer {
        let parameters = try parameters(options, inputShape: inputShape, given: given)
        return accepting(try self.device(options, inputShape, parameters, device), rank: inputShape.count)
    }

    /// The CPU reference with the same options and parameters.
    public func makeReference(
        _ options: OperatorOptions, inputShape: [Int], parameters given: [String: HostTensor]? = nil
    ) throws -> AnyReferenceLayer {
        let parameters = try parameters(options, inputShape: inputShape, given: given)
        return accepting(try host(options, inputShape, parameters), rank: inputShape.count)
    }

    /// `layer`, told which result gradients its backward takes.
    private func accepting<Tensor>(_ layer: ErasedLayer<Tensor>, rank: Int) -> ErasedLayer<Tensor> {
        layer.differentiableOutputs = Set(differentiableOutputs(rank))
        layer.scalarGradientNames = Set(scalarGradientNames)
        return layer
    }

    private func checkedShape(_ shape: [Int]) throws -> [Int] {
        guard inputRanks.contains(shape.count), shape.count >= 2 else {
            let ranks = inputRanks.map(String.init).joined(separator: " or ")
            throw NyquistError(.invalidShape, "\(name): input must have rank \(ranks), has shape \(shape)")
        }
        return shape
    }
}

/// Every operator of the library, by CLI name: the one table the CLI, the benchmarks and the
/// parity tests build layers from.
public enum OperatorRegistry {
    /// The operators in the CLI's order.
    public static let all: [OperatorDescriptor] =
        WindowOperators.all + PolyphaseOperators.all + LiftOperators.all + [AdaptiveOperator.descriptor]

    /// The names, comma-separated (for errors and help).
    public static var names: String { all.map(\.name).joined(separator: ", ") }

    /// The operator called `name`; `.invalidConfiguration` listing the valid names otherwise.
    public static func named(_ name: String) throws -> OperatorDescriptor {
        guard let found = all.first(where: { $0.name == name }) else {
            throw NyquistError(.invalidConfiguration, "unknown operator '\(name)'; valid operators: \(names)")
        }
        return found
    }
}
