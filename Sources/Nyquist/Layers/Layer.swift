import Foundation
import NyquistCore

/// A layer on a ``Device``: one API for every operator.
///
/// * `layer(input)` is inference;
/// * `forwardTraining(input)` returns the same ``Output`` and what backward needs (``Saved``);
/// * `backward(outputGradients, saved)` returns the ``Gradients`` of the input and parameters.
///
/// Everything a call produces is a field of its output type: APS's phase indices, TIPS's psi,
/// tau and losses, LiftPool's bands and regularisers. Gradients with respect to those results
/// (a band's gradient, the weight of a loss in the training objective) are fields of
/// ``OutputGradients``. Parameters are device tensors by PyTorch `state_dict` name
/// (``parameters``), loaded with ``loadParameters(_:)`` or ``load(safetensors:prefix:)`` and
/// written with ``saveParameters(safetensors:)``.
///
/// ```swift
/// let pool = try BlurPool2D(channels: 64)
/// let (y, saved) = try pool.forwardTraining(x)
/// let gradients = try pool.backward(gradY, saved)   // gradients.input, gradients.parameters
/// ```
public protocol Layer {
    /// The configuration type shared with the CPU reference.
    associatedtype Configuration: OperatorConfiguration
    /// What a call takes: one N x C x H x W tensor, or LiftUpPool's bands and target size.
    associatedtype Input = DeviceTensor
    /// What a call produces: the pooled tensor, or a value holding it and the operator's other results.
    associatedtype Output: LayerOutput
    /// What training forward keeps for backward.
    associatedtype Saved
    /// The gradients backward starts from: the output's, and those of the other results that
    /// are differentiable.
    associatedtype OutputGradients
    /// The gradients backward returns: the input's and the parameters'.
    associatedtype Gradients: LayerGradients

    /// The options this layer was built with.
    var configuration: Configuration { get }
    /// The learnable parameters and buffers by PyTorch `state_dict` name (empty for the
    /// parameter-free operators).
    var parameters: [String: DeviceTensor] { get }
    /// Replaces the parameters with the tensors of a PyTorch `state_dict` (names without a
    /// prefix; entries a PyTorch module carries but the layer does not use, such as BatchNorm's
    /// `num_batches_tracked`, are accepted); throws ``NyquistError/Kind/invalidParameters`` for a
    /// missing, misshapen or unexpected tensor and then leaves the parameters as they were.
    func loadParameters(_ stateDict: [String: HostTensor]) throws
    /// Inference forward.
    func callAsFunction(_ input: Input) throws -> Output
    /// Training forward: the output and what ``backward(_:_:)`` needs.
    func forwardTraining(_ input: Input) throws -> (output: Output, saved: Saved)
    /// Backward: the gradients of the input and the parameters.
    func backward(_ outputGradients: OutputGradients, _ saved: Saved) throws -> Gradients
}

extension Layer {
    /// No parameters.
    public var parameters: [String: DeviceTensor] { [:] }

    /// A parameter-free layer has nothing to load: the entries are ignored.
    public func loadParameters(_ stateDict: [String: HostTensor]) throws {}

    /// The parameters copied to the host, by PyTorch `state_dict` name.
    public func parameterValues() throws -> [String: HostTensor] {
        try parameters.mapValues { try $0.toHost() }
    }

    /// Loads the parameters from a safetensors file (a PyTorch `state_dict`); `prefix` selects
    /// one layer of a whole model ("layer2.0.downsample.1."). Throws the file errors of
    /// ``Safetensors`` and `.invalidParameters` for a missing, misshapen or integer tensor.
    public func load(safetensors url: URL, prefix: String = "") throws {
        let names = parameters.keys.map { prefix + $0 }
        let stateDict = try Safetensors.readContents(contentsOf: url).parameters(
            expecting: names, layer: Configuration.operatorName)
        var selected: [String: HostTensor] = [:]
        for (name, tensor) in stateDict where name.hasPrefix(prefix) { selected[String(name.dropFirst(prefix.count))] = tensor }
        try loadParameters(selected)
    }

    /// Writes the parameters to a safetensors file (`prefix` before every name), loadable by
    /// PyTorch's `load_state_dict` after `safetensors.torch.load_file`.
    public func saveParameters(safetensors url: URL, prefix: String = "") throws {
        var named: [String: HostTensor] = [:]
        for (name, tensor) in try parameterValues() { named[prefix + name] = tensor }
        try Safetensors.write(named, to: url)
    }
}

/// A layer's result: the main output tensor and, by name, the operator's other results (the
/// names `nyquist run --extra` writes them under).
public protocol LayerOutput {
    /// The main result: the pooled map (LiftUpPool: the reconstruction).
    var output: DeviceTensor { get }
    /// The other tensor results by name (APS `indices`, TIPS `psi` and `tau`, LiftPool's bands).
    var extras: [String: DeviceTensor] { get }
    /// Scalar results by name (TIPS's losses, LiftPool's regularisers), set by training forward.
    /// Reading them waits for the device (the call that produced them did not).
    var scalars: [String: Double] { get throws }
}

extension LayerOutput {
    /// No other tensor results.
    public var extras: [String: DeviceTensor] { [:] }
    /// No scalar results.
    public var scalars: [String: Double] { [:] }
}

/// A value that a call computes on the device and reads back only when asked (a training
/// forward's losses or regularisers), so that the call itself enqueues without waiting. The
/// first ``value()`` waits for the device and keeps the result. Not thread-safe: a layer's
/// results belong to the task that called it.
public final class Deferred<Value> {
    private enum State {
        case pending(() throws -> Value)
        case ready(Value)
    }

    private var state: State

    /// A value computed by `compute` at the first ``value()``.
    package init(computing compute: @escaping () throws -> Value) {
        state = .pending(compute)
    }

    /// A value known now.
    public init(value: Value) {
        state = .ready(value)
    }

    /// The value (computed and kept at the first call; a failure is thrown again next time).
    public func value() throws -> Value {
        switch state {
        case .ready(let value): return value
        case .pending(let compute):
            let value = try compute()
            state = .ready(value)
            return value
        }
    }
}

extension DeviceTensor: LayerOutput {
    /// The tensor itself, for the operators whose only result is one tensor.
    public var output: DeviceTensor { self }
}

/// A backward's result: the gradient of the main input, of the other inputs by name, and of
/// the parameters by PyTorch `state_dict` name.
public protocol LayerGradients {
    /// Gradient with respect to the (main) input, of the input's shape.
    var input: DeviceTensor { get }
    /// Gradients with respect to the other inputs by name (LiftUpPool's detail bands).
    var extras: [String: DeviceTensor] { get }
    /// Gradients with respect to the parameters by PyTorch name (empty without parameters).
    var parameters: [String: DeviceTensor] { get }
}

extension LayerGradients {
    /// No other inputs.
    public var extras: [String: DeviceTensor] { [:] }
}

/// What the training forward pass keeps for backward.
///
/// For the parameter-free pooling operators this is the input itself (max pooling re-finds
/// each window's maximum from it instead of storing an index tensor).
public struct SavedForBackward {
    /// The input of the forward pass.
    public let input: DeviceTensor
    /// Extra named tensors some operators keep (empty for the pooling baselines and BlurPool).
    public let tensors: [String: DeviceTensor]

    /// Bundles what backward needs.
    public init(input: DeviceTensor, tensors: [String: DeviceTensor] = [:]) {
        self.input = input
        self.tensors = tensors
    }
}

/// Gradients of a backward pass of a layer with one input.
public struct Gradients: LayerGradients {
    /// Gradient with respect to the input (same shape as the input).
    public let input: DeviceTensor
    /// Gradients with respect to learnable parameters, by PyTorch `state_dict` name (empty for
    /// parameter-free operators).
    public let parameters: [String: DeviceTensor]

    /// Bundles the gradients.
    public init(input: DeviceTensor, parameters: [String: DeviceTensor] = [:]) {
        self.input = input
        self.parameters = parameters
    }
}

/// A parameter-free pooling layer with one tensor in and one tensor out (max, average, blur
/// and max-blur pooling), which also offers forms that write into caller tensors.
///
/// Conformers implement the two `into:` methods; allocation, shape checks and the ``Layer``
/// entry points come from the extension, so every operator validates the same way.
public protocol PoolingLayer: Layer, Sendable
where Input == DeviceTensor, Output == DeviceTensor, Saved == SavedForBackward, OutputGradients == DeviceTensor,
    Gradients == Nyquist.Gradients {
    /// Writes the forward result for `input` into `output`, whose shape must be
    /// `configuration.outputShape(for:)` of the input's.
    func forward(_ input: DeviceTensor, into output: DeviceTensor) throws
    /// Writes the gradient with respect to the input into `gradInput` (the input's shape).
    func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws
}

extension PoolingLayer {
    /// Inference forward: a new tensor with the layer's output.
    public func callAsFunction(_ input: DeviceTensor) throws -> DeviceTensor {
        let output = try DeviceTensor(shape: outputShape(for: input).dimensions, on: input.device)
        try forward(input, into: output)
        return output
    }

    /// Training forward: the output and what ``backward(_:_:)`` needs (the input).
    public func forwardTraining(_ input: DeviceTensor) throws -> (output: DeviceTensor, saved: SavedForBackward) {
        (try callAsFunction(input), SavedForBackward(input: input))
    }

    /// Backward: the gradient with respect to the input.
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward) throws -> Gradients {
        let gradInput = try DeviceTensor(shape: saved.input.shape, on: saved.input.device)
        try backward(gradOutput, saved, into: gradInput)
        return Gradients(input: gradInput)
    }

    /// Checks shapes and devices of a backward call; returns the input and output shapes.
    func validateBackward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, _ gradInput: DeviceTensor) throws -> (
        Shape4D, Shape4D
    ) {
        try validateBackward(gradOutput, savedInput: saved.input, gradInput)
    }
}

extension Layer where Input == DeviceTensor {
    /// The output shape for `input`, with the configuration's typed errors.
    public func outputShape(for input: DeviceTensor) throws -> Shape4D {
        try configuration.outputShape(for: input.nchw("\(Configuration.operatorName) input"))
    }

    /// Checks shapes and devices of a forward call; returns the input and output shapes.
    func validateForward(_ input: DeviceTensor, _ output: DeviceTensor) throws -> (Shape4D, Shape4D) {
        let inputShape = try input.nchw("\(Configuration.operatorName) input")
        let outputShape = try configuration.outputShape(for: inputShape)
        try requireShape(output, outputShape.dimensions, role: "output")
        try requireSameDevice(input, output)
        return (inputShape, outputShape)
    }

    /// Checks shapes and devices of a backward call from the saved input; returns the input
    /// and output shapes.
    func validateBackward(_ gradOutput: DeviceTensor, savedInput: DeviceTensor, _ gradInput: DeviceTensor) throws -> (
        Shape4D, Shape4D
    ) {
        let inputShape = try savedInput.nchw("\(Configuration.operatorName) saved input")
        let outputShape = try configuration.outputShape(for: inputShape)
        try requireShape(gradOutput, outputShape.dimensions, role: "gradient of the output")
        try requireShape(gradInput, inputShape.dimensions, role: "gradient of the input")
        try requireSameDevice(savedInput, gradOutput)
        try requireSameDevice(savedInput, gradInput)
        return (inputShape, outputShape)
    }

    func requireShape(_ tensor: DeviceTensor, _ expected: [Int], role: String) throws {
        guard tensor.shape == expected else {
            throw NyquistError(
                .invalidShape, "\(Configuration.operatorName): \(role) has shape \(tensor.shape), expected \(expected)")
        }
    }

    func requireSameDevice(_ first: DeviceTensor, _ second: DeviceTensor) throws {
        guard first.device === second.device else {
            throw NyquistError(
                .invalidConfiguration,
                "\(Configuration.operatorName): tensors live on different devices (\(first.device.name) and \(second.device.name))")
        }
    }
}
