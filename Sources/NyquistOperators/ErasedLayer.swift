import Nyquist
import NyquistCore

/// What one call of an operator produces, by name, for code that handles every operator alike
/// (the CLI, the benchmarks, the registry's parity tests): `Tensor` is ``DeviceTensor`` for the
/// device layers and ``HostTensor`` for the CPU reference.
public struct OperatorValues<Tensor> {
    /// The main result (the pooled map; LiftUpPool: the reconstruction).
    public var output: Tensor
    /// The other results by the names `nyquist run --extra` writes them under (`indices`, `psi`,
    /// `tau`, `ll`, ...).
    public var extras: [String: Tensor] = [:]
    /// Scalar results by name (TIPS's `fm`, `undo`; LiftPool's `c_u`, `c_p`, `loss`). A device
    /// layer's are read back when first asked for, which waits for the device (the call did not).
    public var scalars: [String: Double] {
        get throws { try deferredScalars.value() }
    }
    private let deferredScalars: Deferred<[String: Double]>

    /// Bundles the results.
    public init(output: Tensor, extras: [String: Tensor] = [:], scalars: [String: Double] = [:]) {
        self.output = output
        self.extras = extras
        deferredScalars = Deferred(value: scalars)
    }

    /// The results with scalars read when first asked for.
    init(output: Tensor, extras: [String: Tensor], deferredScalars: Deferred<[String: Double]>) {
        self.output = output
        self.extras = extras
        self.deferredScalars = deferredScalars
    }
}

/// What one backward of an operator produces, by name.
public struct OperatorGradientValues<Tensor> {
    /// Gradient with respect to the main input.
    public var input: Tensor
    /// Gradients with respect to the other inputs by name (LiftUpPool's `lh`, `hl`, `hh` or `d`).
    public var extras: [String: Tensor] = [:]
    /// Gradients with respect to the parameters by PyTorch `state_dict` name.
    public var parameters: [String: Tensor] = [:]

    /// Bundles the gradients.
    public init(input: Tensor, extras: [String: Tensor] = [:], parameters: [String: Tensor] = [:]) {
        self.input = input
        self.extras = extras
        self.parameters = parameters
    }
}

/// What a backward starts from: the gradient of the main output, the gradients of other results
/// by name (those of ``OperatorDescriptor/differentiableOutputs``: LiftDownPool's bands, TIPS's
/// `psi` and `tau`; a missing one is zero) and the gradients of scalar results by name (the
/// weight each has in the objective: LiftDownPool's `loss`, TIPS's `fm` and `undo`; a missing
/// one takes the operator's default from its options).
public struct OperatorOutputGradients<Tensor> {
    /// Gradient of the main output.
    public var output: Tensor
    /// Gradients of other results by name.
    public var extras: [String: Tensor]
    /// Gradients of scalar results by name.
    public var scalars: [String: Double]

    /// Bundles the gradients.
    public init(output: Tensor, extras: [String: Tensor] = [:], scalars: [String: Double] = [:]) {
        self.output = output
        self.extras = extras
        self.scalars = scalars
    }
}

/// What a training forward kept for the backward of the same ``ErasedLayer``, opaque to the
/// caller.
public struct SavedState {
    let value: Any
    let layer: ObjectIdentifier
}

/// One operator with its options and parameters fixed, behind one interface whatever its
/// types: the registry's product (``OperatorDescriptor/makeLayer(_:inputShape:parameters:on:)``
/// and ``OperatorDescriptor/makeReference(_:inputShape:parameters:)``).
///
/// Inputs are named: `input` is the main one (LiftUpPool: the coarse band LL or s); LiftUpPool
/// also takes its detail bands (`lh`, `hl`, `hh` or `d`), APS optionally `indices` (phases to
/// sample instead of choosing).
public final class ErasedLayer<Tensor> {
    /// The operator's CLI name.
    public let name: String
    private let parametersBody: () throws -> [String: Tensor]
    private let loadBody: (([String: HostTensor]) throws -> Void)?
    private let forwardBody: ([String: Tensor]) throws -> OperatorValues<Tensor>
    private let trainingBody: ([String: Tensor]) throws -> (OperatorValues<Tensor>, Any)
    private let backwardBody: (OperatorOutputGradients<Tensor>, Any) throws -> OperatorGradientValues<Tensor>
    /// The results besides `output` whose gradients ``backward(_:_:)-(OperatorOutputGradients<Tensor>,_)``
    /// takes (set by the registry from its descriptor).
    public internal(set) var differentiableOutputs: Set<String> = []
    /// The scalar results whose gradients (weights) backward takes.
    public internal(set) var scalarGradientNames: Set<String> = []

    init(
        name: String, parameters: @escaping () throws -> [String: Tensor],
        load: (([String: HostTensor]) throws -> Void)? = nil,
        forward: @escaping ([String: Tensor]) throws -> OperatorValues<Tensor>,
        training: @escaping ([String: Tensor]) throws -> (OperatorValues<Tensor>, Any),
        backward: @escaping (OperatorOutputGradients<Tensor>, Any) throws -> OperatorGradientValues<Tensor>
    ) {
        self.name = name
        parametersBody = parameters
        loadBody = load
        forwardBody = forward
        trainingBody = training
        backwardBody = backward
    }

    /// The parameters by PyTorch `state_dict` name (the device layer's tensors, or the
    /// reference's host values).
    public func parameters() throws -> [String: Tensor] {
        try parametersBody()
    }

    /// Replaces the parameters with new values by `state_dict` name (all of them, as the layer's
    /// `loadParameters`: a missing, misshapen or unexpected tensor is `.invalidParameters` and
    /// leaves them as they were). A layer without parameters takes an empty dictionary; the
    /// CPU reference's parameters are fixed when it is made (make a new one instead).
    public func loadParameters(_ stateDict: [String: HostTensor]) throws {
        if let loadBody { return try loadBody(stateDict) }
        if stateDict.isEmpty { return }
        throw NyquistError(
            .invalidParameters, "\(name): this layer's parameters cannot be replaced (got \(stateDict.keys.sorted()))")
    }

    /// Inference forward of the named inputs.
    public func callAsFunction(_ inputs: [String: Tensor]) throws -> OperatorValues<Tensor> {
        try forwardBody(inputs)
    }

    /// Inference forward of one input.
    public func callAsFunction(_ input: Tensor) throws -> OperatorValues<Tensor> {
        try forwardBody([ErasedInputs.main: input])
    }

    /// Training forward: the results and what ``backward(_:_:)`` needs.
    public func forwardTraining(_ inputs: [String: Tensor]) throws -> (output: OperatorValues<Tensor>, saved: SavedState) {
        let (values, saved) = try trainingBody(inputs)
        return (values, SavedState(value: saved, layer: ObjectIdentifier(self)))
    }

    /// Training forward of one input.
    public func forwardTraining(_ input: Tensor) throws -> (output: OperatorValues<Tensor>, saved: SavedState) {
        try forwardTraining([ErasedInputs.main: input])
    }

    /// Backward from the gradient of the main output (the other results' gradients are zero;
    /// loss terms count with the weights the options gave) and this layer's saved state.
    public func backward(_ gradOutput: Tensor, _ saved: SavedState) throws -> OperatorGradientValues<Tensor> {
        try backward(OperatorOutputGradients(output: gradOutput), saved)
    }

    /// Backward from the gradients of any of the results (see ``OperatorOutputGradients``) and
    /// this layer's saved state; a gradient of a result the operator does not differentiate
    /// (APS's indices, AdaptiveBlurPool's filters) is a typed error.
    public func backward(_ gradients: OperatorOutputGradients<Tensor>, _ saved: SavedState) throws
        -> OperatorGradientValues<Tensor>
    {
        guard saved.layer == ObjectIdentifier(self) else {
            throw NyquistError(.invalidConfiguration, "\(name): backward was given the saved state of another layer")
        }
        for extra in gradients.extras.keys.sorted() where !differentiableOutputs.contains(extra) {
            let accepted = (["output"] + differentiableOutputs.sorted()).joined(separator: ", ")
            throw NyquistError(
                .invalidConfiguration, "\(name): backward takes no gradient of '\(extra)'; it takes gradients of \(accepted)")
        }
        for scalar in gradients.scalars.keys.sorted() where !scalarGradientNames.contains(scalar) {
            let accepted = scalarGradientNames.isEmpty ? "none" : scalarGradientNames.sorted().joined(separator: ", ")
            throw NyquistError(
                .invalidConfiguration, "\(name): backward takes no gradient of the scalar '\(scalar)'; scalars it takes: \(accepted)")
        }
        for (scalar, value) in gradients.scalars where !value.isFinite {
            throw NyquistError(.invalidConfiguration, "\(name): the gradient of '\(scalar)' must be finite, is \(value)")
        }
        return try backwardBody(gradients, saved.value)
    }
}

/// The device form of an operator.
public typealias AnyLayer = ErasedLayer<DeviceTensor>
/// The CPU reference form of an operator.
public typealias AnyReferenceLayer = ErasedLayer<HostTensor>

/// Names and lookups of erased inputs.
enum ErasedInputs {
    /// The main input's name.
    static let main = "input"

    /// The input called `name`; a typed error naming the operator when it is missing.
    static func require<Tensor>(_ inputs: [String: Tensor], _ name: String, operator operatorName: String) throws -> Tensor {
        guard let tensor = inputs[name] else {
            throw NyquistError(.invalidConfiguration, "\(operatorName): missing input '\(name)'")
        }
        return tensor
    }

    /// A saved value of the expected type (the layer built both closures, so this holds).
    static func cast<Saved>(_ value: Any, _ operatorName: String) throws -> Saved {
        guard let saved = value as? Saved else {
            throw NyquistError(.invalidConfiguration, "\(operatorName): saved state of another kind")
        }
        return saved
    }
}

extension ErasedLayer where Tensor == DeviceTensor {
    /// Erases a device layer called `name` (default: its configuration's operator name):
    /// `input` builds its input from the named inputs, `gradients` its output gradients from the
    /// gradients of its results.
    convenience init<L: Layer>(
        _ layer: L, name: String = L.Configuration.operatorName, input: @escaping ([String: DeviceTensor]) throws -> L.Input,
        gradients: @escaping (OperatorOutputGradients<DeviceTensor>) throws -> L.OutputGradients
    ) {
        self.init(
            name: name, parameters: { layer.parameters }, load: { try layer.loadParameters($0) },
            forward: { inputs in OperatorValues(try layer(try input(inputs))) },
            training: { inputs in
                let (output, saved) = try layer.forwardTraining(try input(inputs))
                return (OperatorValues(output), saved)
            },
            backward: { outputGradients, saved in
                OperatorGradientValues(try layer.backward(try gradients(outputGradients), try ErasedInputs.cast(saved, name)))
            })
    }

    /// Erases a device layer whose input is one tensor (the input `input`).
    convenience init<L: Layer>(
        _ layer: L, gradients: @escaping (OperatorOutputGradients<DeviceTensor>) throws -> L.OutputGradients
    ) where L.Input == DeviceTensor {
        let name = L.Configuration.operatorName
        self.init(layer, input: { try ErasedInputs.require($0, ErasedInputs.main, operator: name) }, gradients: gradients)
    }
}

extension OperatorValues where Tensor == DeviceTensor {
    /// The named view of a layer's output.
    init(_ output: some LayerOutput) {
        self.init(output: output.output, extras: output.extras, deferredScalars: Deferred(computing: { try output.scalars }))
    }
}

extension OperatorGradientValues where Tensor == DeviceTensor {
    /// The named view of a layer's gradients.
    init(_ gradients: some LayerGradients) {
        self.init(input: gradients.input, extras: gradients.extras, parameters: gradients.parameters)
    }
}
