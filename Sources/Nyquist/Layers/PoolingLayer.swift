import NyquistCore

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

/// Gradients of a backward pass.
public struct Gradients {
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

/// A 2-D pooling layer on a ``Device``: inference forward, training forward and backward.
///
/// Conformers implement the two `into:` methods; allocation, shape checks and the
/// convenience entry points come from the extension, so every operator validates the same way.
public protocol PoolingLayer: Sendable {
    /// The configuration type shared with the CPU reference.
    associatedtype Configuration: OperatorConfiguration
    /// The options this layer was built with.
    var configuration: Configuration { get }
    /// Writes the forward result for `input` into `output`, whose shape must be
    /// `configuration.outputShape(for:)` of the input's.
    func forward(_ input: DeviceTensor, into output: DeviceTensor) throws
    /// Writes the gradient with respect to the input into `gradInput` (the input's shape).
    func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, into gradInput: DeviceTensor) throws
    /// Training forward: the output and what backward needs. A requirement (with a default) so
    /// that layers which save more than the input are called correctly through `any PoolingLayer`.
    func forwardTraining(_ input: DeviceTensor) throws -> (output: DeviceTensor, saved: SavedForBackward)
    /// Backward: gradients with respect to the input and parameters. A requirement (with a
    /// default) so that layers with parameters are called correctly through `any PoolingLayer`.
    func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward) throws -> Gradients
}

extension PoolingLayer {
    /// Inference forward: a new tensor with the layer's output.
    public func callAsFunction(_ input: DeviceTensor) throws -> DeviceTensor {
        let output = try DeviceTensor(shape: outputShape(for: input).dimensions, on: input.device)
        try forward(input, into: output)
        return output
    }

    /// Training forward: the output and what ``backward(_:_:)`` needs.
    public func forwardTraining(_ input: DeviceTensor) throws -> (output: DeviceTensor, saved: SavedForBackward) {
        (try callAsFunction(input), SavedForBackward(input: input))
    }

    /// Backward: gradients with respect to the input (and parameters, for layers that have them).
    public func backward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward) throws -> Gradients {
        let gradInput = try DeviceTensor(shape: saved.input.shape, on: saved.input.device)
        try backward(gradOutput, saved, into: gradInput)
        return Gradients(input: gradInput)
    }

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

    /// Checks shapes and devices of a backward call; returns the input and output shapes.
    func validateBackward(_ gradOutput: DeviceTensor, _ saved: SavedForBackward, _ gradInput: DeviceTensor) throws -> (
        Shape4D, Shape4D
    ) {
        let inputShape = try saved.input.nchw("\(Configuration.operatorName) saved input")
        let outputShape = try configuration.outputShape(for: inputShape)
        try requireShape(gradOutput, outputShape.dimensions, role: "gradient of the output")
        try requireShape(gradInput, inputShape.dimensions, role: "gradient of the input")
        try requireSameDevice(saved.input, gradOutput)
        try requireSameDevice(saved.input, gradInput)
        return (inputShape, outputShape)
    }

    private func requireShape(_ tensor: DeviceTensor, _ expected: [Int], role: String) throws {
        guard tensor.shape == expected else {
            throw NyquistError(
                .invalidShape, "\(Configuration.operatorName): \(role) has shape \(tensor.shape), expected \(expected)")
        }
    }

    private func requireSameDevice(_ first: DeviceTensor, _ second: DeviceTensor) throws {
        guard first.device === second.device else {
            throw NyquistError(
                .invalidConfiguration, "\(Configuration.operatorName): tensors live on different devices (\(first.device.name) and \(second.device.name))")
        }
    }
}
