import COpenCL
import Foundation
import Nyquist
import NyquistCore
import NyquistOperators
import Synchronization

// The C entry points of include/nyquist.h. Every function catches every Swift error and turns
// it into a status and a message for the calling thread; nothing traps on the caller's input.
// Handles are retained Swift objects passed as opaque pointers.

/// A device handle: the caller's context and queue, wrapped.
final class DeviceHandle {
    let device: Device
    init(_ device: Device) { self.device = device }
}

/// A layer handle: the registry's device layer and what its reference needs.
final class LayerHandle {
    let device: Device
    let descriptor: OperatorDescriptor
    let options: OperatorOptions
    /// The parameters the layer was made with or last given (what the CPU reference uses).
    var parameters: [String: HostTensor]
    let inputShape: [Int]
    let outputShape: [Int]
    let layer: AnyLayer

    init(
        device: Device, descriptor: OperatorDescriptor, options: OperatorOptions, parameters: [String: HostTensor],
        inputShape: [Int], outputShape: [Int], layer: AnyLayer
    ) {
        self.device = device
        self.descriptor = descriptor
        self.options = options
        self.parameters = parameters
        self.inputShape = inputShape
        self.outputShape = outputShape
        self.layer = layer
    }
}

/// A saved-state handle: a training forward's state and scalar results, for the layer that
/// made it.
final class SavedHandle {
    let layer: ObjectIdentifier
    let saved: SavedState
    /// The training forward's results, whose scalars are read from the device only when the
    /// caller asks for one (the forward itself does not wait).
    private let values: OperatorValues<DeviceTensor>?
    init(layer: LayerHandle, saved: SavedState, values: OperatorValues<DeviceTensor>? = nil) {
        self.layer = ObjectIdentifier(layer)
        self.saved = saved
        self.values = values
    }

    /// The scalar results by name (waits for the device the first time).
    func scalars() throws -> [String: Double] {
        try values?.scalars ?? [:]
    }
}

/// The last failure's message per calling thread, as C strings the library owns (kept as
/// address bit patterns, which are `Sendable`; each string is freed when the thread's next
/// call replaces it).
enum LastError {
    private static let messages = Mutex<[UInt: UInt]>([:])

    static var threadKey: UInt { UInt(pthread_self()) }

    static func set(_ message: String?) {
        let copy = message.flatMap { strdup($0) }.map { UInt(bitPattern: $0) }
        let key = threadKey
        let previous = messages.withLock { messages in
            let previous = messages[key]
            messages[key] = copy
            return previous
        }
        if let previous { free(UnsafeMutableRawPointer(bitPattern: previous)) }
    }

    static func current() -> UnsafePointer<CChar>? {
        let key = threadKey
        return messages.withLock { $0[key] }.flatMap { UnsafePointer(bitPattern: $0) }
    }
}

/// The statuses of include/nyquist.h.
enum Status: Int32 {
    case success = 0
    case invalidArgument = 1
    case invalidShape = 2
    case invalidParameters = 3
    case invalidFile = 4
    case io = 5
    case sizeLimit = 6
    case unsupported = 7
    case outOfMemory = 8
    case device = 9

    init(_ kind: NyquistError.Kind) {
        switch kind {
        case .invalidConfiguration: self = .invalidArgument
        case .invalidShape: self = .invalidShape
        case .invalidFile: self = .invalidFile
        case .io: self = .io
        case .sizeLimit: self = .sizeLimit
        case .unsupported: self = .unsupported
        case .deviceUnavailable, .device: self = .device
        case .invalidParameters: self = .invalidParameters
        case .outOfMemory: self = .outOfMemory
        }
    }
}

/// A failure of the C API's own checks (a null pointer).
struct ArgumentError: Error {
    let message: String
}

/// Runs `body`, returning its status and recording the message of a failure.
func guarded(_ body: () throws -> Void) -> Int32 {
    do {
        try body()
        LastError.set(nil)
        return Status.success.rawValue
    } catch let error as NyquistError {
        LastError.set(error.message)
        return Status(error.kind).rawValue
    } catch let error as ArgumentError {
        LastError.set(error.message)
        return Status.invalidArgument.rawValue
    } catch {
        LastError.set("\(error)")
        return Status.device.rawValue
    }
}

/// The object behind a handle, or an argument error naming `what`.
func unwrap<T: AnyObject>(_ pointer: OpaquePointer?, as type: T.Type, _ what: String) throws -> T {
    guard let pointer else { throw ArgumentError(message: "\(what) is NULL") }
    return Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
}

/// `object` as a new handle, retained until its release function.
func handle(_ object: AnyObject) -> OpaquePointer {
    OpaquePointer(Unmanaged.passRetained(object).toOpaque())
}

func release<T: AnyObject>(_ pointer: OpaquePointer?, as type: T.Type) {
    guard let pointer else { return }
    Unmanaged<T>.fromOpaque(UnsafeRawPointer(pointer)).release()
}

/// The caller's wait list as events.
func events(_ count: cl_uint, _ list: UnsafePointer<cl_event?>?) throws -> [cl_event] {
    guard count > 0 else { return [] }
    guard let list else { throw ArgumentError(message: "wait_list is NULL with wait_count \(count)") }
    return try (0..<Int(count)).map { index in
        guard let event = list[index] else { throw ArgumentError(message: "wait_list[\(index)] is NULL") }
        return event
    }
}

func string(_ pointer: UnsafePointer<CChar>?, _ what: String) throws -> String {
    guard let pointer else { throw ArgumentError(message: "\(what) is NULL") }
    return String(cString: pointer)
}

/// `const char *nyquist_last_error(void)`: the calling thread's last failure message ("" if none). See include/nyquist.h.
@_cdecl("nyquist_last_error")
public func nyquist_last_error() -> UnsafePointer<CChar> {
    LastError.current() ?? UnsafeRawPointer(("" as StaticString).utf8Start).assumingMemoryBound(to: CChar.self)
}

/// `nyquist_device_create`: wraps the caller's context, device and in-order queue. See include/nyquist.h.
@_cdecl("nyquist_device_create")
public func nyquist_device_create(
    _ context: cl_context?, _ device: cl_device_id?, _ queue: cl_command_queue?, _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        guard let context, let device, let queue else { throw ArgumentError(message: "context, device or queue is NULL") }
        guard let out else { throw ArgumentError(message: "out is NULL") }
        out.pointee = handle(DeviceHandle(try Device(wrapping: context, device: device, queue: queue)))
    }
}

/// `nyquist_device_release`: releases a device handle (NULL is ignored). See include/nyquist.h.
@_cdecl("nyquist_device_release")
public func nyquist_device_release(_ device: OpaquePointer?) {
    release(device, as: DeviceHandle.self)
}

/// `nyquist_layer_create`: the registry's layer for an operator name, options and input shape. See include/nyquist.h.
@_cdecl("nyquist_layer_create")
public func nyquist_layer_create(
    _ device: OpaquePointer?, _ op: UnsafePointer<CChar>?, _ optionCount: Int,
    _ optionNames: UnsafePointer<UnsafePointer<CChar>?>?, _ optionValues: UnsafePointer<UnsafePointer<CChar>?>?,
    _ parametersPath: UnsafePointer<CChar>?, _ rank: Int, _ inputShape: UnsafePointer<Int>?,
    _ out: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        let device = try unwrap(device, as: DeviceHandle.self, "device").device
        let descriptor = try OperatorRegistry.named(try string(op, "op"))
        guard let out else { throw ArgumentError(message: "out is NULL") }
        guard optionCount >= 0, optionCount == 0 || (optionNames != nil && optionValues != nil) else {
            throw ArgumentError(message: "option_names or option_values is NULL")
        }
        var values: [String: String] = [:]
        for index in 0..<optionCount {
            values[try string(optionNames?[index], "option_names[\(index)]")] = try string(
                optionValues?[index], "option_values[\(index)]")
        }
        guard (1...4).contains(rank), let inputShape else { throw ArgumentError(message: "rank \(rank) or input_shape") }
        let shape = (0..<rank).map { inputShape[$0] }
        let options = OperatorOptions(values)
        var given: [String: HostTensor]? = nil
        if let parametersPath {
            let stateDict = try Safetensors.read(contentsOf: URL(fileURLWithPath: String(cString: parametersPath)))
            given = try StateDictSelection.select(
                stateDict, prefix: "", expected: descriptor.parameterNames, ignored: descriptor.ignoredParameterNames,
                layer: descriptor.name)
        }
        let parameters = try descriptor.parameters(options, inputShape: shape, given: given)
        let layer = try descriptor.makeLayer(options, inputShape: shape, parameters: parameters, on: device)
        let outputShape = try descriptor.outputShape(options, inputShape: shape)
        out.pointee = handle(
            LayerHandle(
                device: device, descriptor: descriptor, options: options, parameters: parameters, inputShape: shape,
                outputShape: outputShape, layer: layer))
    }
}

/// `nyquist_layer_release`: releases a layer handle (NULL is ignored). See include/nyquist.h.
@_cdecl("nyquist_layer_release")
public func nyquist_layer_release(_ layer: OpaquePointer?) {
    release(layer, as: LayerHandle.self)
}

/// `nyquist_layer_output_shape`: the output's rank and shape. See include/nyquist.h.
@_cdecl("nyquist_layer_output_shape")
public func nyquist_layer_output_shape(
    _ layer: OpaquePointer?, _ rank: UnsafeMutablePointer<Int>?, _ shape: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        guard let rank, let shape else { throw ArgumentError(message: "rank or shape is NULL") }
        rank.pointee = layer.outputShape.count
        for (index, size) in layer.outputShape.enumerated() { shape[index] = size }
    }
}

/// A caller's buffer of a call: its name, memory object and offset in floats.
typealias NamedBuffer = (name: String, buffer: cl_mem, offset: Int)

extension LayerHandle {
    /// The named inputs of a call as device tensors: `make` turns a caller's source into a tensor
    /// of that input's shape.
    func inputs<Source>(_ sources: [(name: String, item: Source)], _ make: (Source, [Int]) throws -> DeviceTensor) throws
        -> [String: DeviceTensor]
    {
        let shapes = try descriptor.inputShapes(options, inputShape: inputShape)
        var tensors: [String: DeviceTensor] = [:]
        for source in sources {
            guard let shape = shapes[source.name] else {
                throw NyquistError(
                    .invalidConfiguration,
                    "\(descriptor.name) takes no input '\(source.name)'; its inputs: \(shapes.keys.sorted().joined(separator: ", "))")
            }
            tensors[source.name] = try make(source.item, shape)
        }
        return tensors
    }

    /// A forward: every result by name (`output` and the others) and, for a training forward,
    /// its saved state with the scalar results.
    func forward(_ inputs: [String: DeviceTensor], training: Bool) throws -> (results: [String: DeviceTensor], saved: SavedHandle?) {
        let values: OperatorValues<DeviceTensor>
        var saved: SavedHandle?
        if training {
            let (result, state) = try layer.forwardTraining(inputs)
            values = result
            saved = SavedHandle(layer: self, saved: state, values: result)
        } else {
            values = try layer(inputs)
        }
        var results = values.extras
        results["output"] = values.output
        return (results, saved)
    }

    /// Backward of a training forward of this layer from the gradients of its results: every
    /// gradient by name (`input`, the other inputs', the parameters').
    func backward(_ outputGradients: [String: DeviceTensor], scalars: [String: Double], _ state: SavedHandle) throws
        -> [String: DeviceTensor]
    {
        guard state.layer == ObjectIdentifier(self) else {
            throw ArgumentError(message: "saved comes from another layer's training forward")
        }
        guard let output = outputGradients["output"] else {
            throw ArgumentError(message: "the gradient of 'output' is missing (give zeros when the output is unused)")
        }
        let gradients = try layer.backward(
            OperatorOutputGradients(output: output, extras: outputGradients.filter { $0.key != "output" }, scalars: scalars),
            state.saved)
        var results = gradients.extras.merging(gradients.parameters) { first, _ in first }
        results["input"] = gradients.input
        return results
    }

    /// The shapes of the results whose gradients backward takes, by name.
    func outputGradientShapes() throws -> [String: [Int]] {
        try descriptor.resultShapes(options, inputShape: inputShape).filter {
            $0.key == "output" || layer.differentiableOutputs.contains($0.key)
        }
    }

    /// Gradients of results from the caller's sources by name: `make` turns a source into a
    /// tensor of that result's shape.
    func outputGradients<Source>(_ sources: [(name: String, item: Source)], _ make: (Source, [Int]) throws -> DeviceTensor)
        throws -> [String: DeviceTensor]
    {
        let shapes = try outputGradientShapes()
        var tensors: [String: DeviceTensor] = [:]
        for source in sources {
            guard let shape = shapes[source.name] else {
                throw NyquistError(
                    .invalidConfiguration,
                    "\(descriptor.name): backward takes no gradient of '\(source.name)'; it takes gradients of "
                        + shapes.keys.sorted().joined(separator: ", "))
            }
            tensors[source.name] = try make(source.item, shape)
        }
        return tensors
    }

    /// Replaces some or all parameters by `state_dict` name (the others keep their values).
    func setParameters(_ given: [String: HostTensor]) throws {
        for name in given.keys.sorted() where !descriptor.parameterNames.contains(name) {
            throw NyquistError(
                .invalidParameters,
                "\(descriptor.name) has no parameter '\(name)'; its parameters: \(descriptor.parameterNames.joined(separator: ", "))")
        }
        var merged = given
        if Set(given.keys) != Set(descriptor.parameterNames) {
            // The layer's own values: a training forward may have moved its running statistics.
            for (name, tensor) in try layer.parameters() where merged[name] == nil { merged[name] = try tensor.toHost() }
        }
        try layer.loadParameters(merged)
        parameters = merged
    }

    /// A forward on the caller's buffers after its wait list: the named results are copied into
    /// the caller's buffers of those names; the completion event goes to `event`.
    func run(
        training: Bool, inputs: [NamedBuffer], outputs: [NamedBuffer], waitList: [cl_event],
        event: UnsafeMutablePointer<cl_event?>?
    ) throws -> SavedHandle? {
        let tensors = try self.inputs(inputs.map { ($0.name, $0) }) { buffer, shape in
            try DeviceTensor(wrapping: buffer.buffer, offset: buffer.offset, shape: shape, on: device)
        }
        var saved: SavedHandle?
        let (_, completion) = try device.submit(after: waitList) {
            let (results, state) = try forward(tensors, training: training)
            saved = state
            try deliver(results, to: outputs, what: "result")
        }
        hand(completion, to: event)
        return saved
    }

    /// A backward on the caller's buffers after its wait list (see ``run(training:inputs:outputs:waitList:event:)``).
    func runBackward(
        _ state: SavedHandle, gradients: [NamedBuffer], scalars: [String: Double], outputs: [NamedBuffer],
        waitList: [cl_event], event: UnsafeMutablePointer<cl_event?>?
    ) throws {
        let tensors = try outputGradients(gradients.map { ($0.name, $0) }) { buffer, shape in
            try DeviceTensor(wrapping: buffer.buffer, offset: buffer.offset, shape: shape, on: device)
        }
        let (_, completion) = try device.submit(after: waitList) {
            try deliver(try backward(tensors, scalars: scalars, state), to: outputs, what: "gradient")
        }
        hand(completion, to: event)
    }

    /// Copies each named result into the caller's buffer of that name (of the result's shape).
    func deliver(_ results: [String: DeviceTensor], to outputs: [NamedBuffer], what: String) throws {
        for output in outputs {
            let result = try pick(results, output.name, what: what)
            let destination = try DeviceTensor(wrapping: output.buffer, offset: output.offset, shape: result.shape, on: device)
            try device.copy(result, into: destination)
        }
    }
}

/// The result called `name`, or an error listing the available ones.
func pick(_ results: [String: DeviceTensor], _ name: String, what: String) throws -> DeviceTensor {
    guard let result = results[name] else {
        throw NyquistError(
            .invalidConfiguration, "no \(what) named '\(name)' here; available: \(results.keys.sorted().joined(separator: ", "))")
    }
    return result
}

/// Gives the completion event to the caller (who releases it), or releases it when not asked for.
func hand(_ completion: cl_event?, to event: UnsafeMutablePointer<cl_event?>?) {
    if let event { event.pointee = completion } else if let completion { clReleaseEvent(completion) }
}

/// One caller buffer of a simple call, or an argument error naming it.
func single(_ name: String, _ buffer: cl_mem?, _ offset: Int, _ what: String) throws -> [NamedBuffer] {
    guard let buffer else { throw ArgumentError(message: "\(what) is NULL") }
    return [(name, buffer, offset)]
}

/// `nyquist_forward`: inference forward on the caller's buffers after its wait list. See include/nyquist.h.
@_cdecl("nyquist_forward")
public func nyquist_forward(
    _ layer: OpaquePointer?, _ input: cl_mem?, _ inputOffset: Int, _ output: cl_mem?, _ outputOffset: Int,
    _ waitCount: cl_uint, _ waitList: UnsafePointer<cl_event?>?, _ event: UnsafeMutablePointer<cl_event?>?
) -> Int32 {
    guarded {
        _ = try unwrap(layer, as: LayerHandle.self, "layer").run(
            training: false, inputs: try single("input", input, inputOffset, "input"),
            outputs: try single("output", output, outputOffset, "output"), waitList: try events(waitCount, waitList),
            event: event)
    }
}

/// `nyquist_forward_training`: training forward on the caller's buffers; returns the saved state. See include/nyquist.h.
@_cdecl("nyquist_forward_training")
public func nyquist_forward_training(
    _ layer: OpaquePointer?, _ input: cl_mem?, _ inputOffset: Int, _ output: cl_mem?, _ outputOffset: Int,
    _ saved: UnsafeMutablePointer<OpaquePointer?>?, _ waitCount: cl_uint, _ waitList: UnsafePointer<cl_event?>?,
    _ event: UnsafeMutablePointer<cl_event?>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        guard let saved else { throw ArgumentError(message: "saved is NULL") }
        let state = try layer.run(
            training: true, inputs: try single("input", input, inputOffset, "input"),
            outputs: try single("output", output, outputOffset, "output"), waitList: try events(waitCount, waitList),
            event: event)
        saved.pointee = state.map(handle)
    }
}

/// `nyquist_backward`: the input gradient from the output gradient and a saved state. See include/nyquist.h.
@_cdecl("nyquist_backward")
public func nyquist_backward(
    _ layer: OpaquePointer?, _ saved: OpaquePointer?, _ gradOutput: cl_mem?, _ gradOutputOffset: Int, _ gradInput: cl_mem?,
    _ gradInputOffset: Int, _ waitCount: cl_uint, _ waitList: UnsafePointer<cl_event?>?,
    _ event: UnsafeMutablePointer<cl_event?>?
) -> Int32 {
    guarded {
        try unwrap(layer, as: LayerHandle.self, "layer").runBackward(
            try unwrap(saved, as: SavedHandle.self, "saved"),
            gradients: try single("output", gradOutput, gradOutputOffset, "grad_output"), scalars: [:],
            outputs: try single("input", gradInput, gradInputOffset, "grad_input"), waitList: try events(waitCount, waitList),
            event: event)
    }
}

/// `nyquist_saved_release`: releases a saved-state handle (NULL is ignored). See include/nyquist.h.
@_cdecl("nyquist_saved_release")
public func nyquist_saved_release(_ saved: OpaquePointer?) {
    release(saved, as: SavedHandle.self)
}

/// `count` floats at `pointer` as a host tensor of `shape`.
func hostTensor(_ pointer: UnsafePointer<Float>?, _ shape: [Int], _ what: String) throws -> HostTensor {
    guard let pointer else { throw ArgumentError(message: "\(what) is NULL") }
    let count = try HostTensor.elementCount(of: shape)
    return try HostTensor(shape: shape, values: Array(UnsafeBufferPointer(start: pointer, count: count)))
}

func copy(_ tensor: HostTensor, to pointer: UnsafeMutablePointer<Float>?, _ what: String) throws {
    guard let pointer else { throw ArgumentError(message: "\(what) is NULL") }
    tensor.values.withUnsafeBufferPointer { values in
        for index in values.indices { pointer[index] = values[index] }
    }
}

/// `nyquist_reference_forward`: the CPU reference's forward on host arrays. See include/nyquist.h.
@_cdecl("nyquist_reference_forward")
public func nyquist_reference_forward(
    _ layer: OpaquePointer?, _ input: UnsafePointer<Float>?, _ output: UnsafeMutablePointer<Float>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let reference = try layer.descriptor.makeReference(
            layer.options, inputShape: layer.inputShape, parameters: layer.parameters)
        try copy(try reference(try hostTensor(input, layer.inputShape, "input")).output, to: output, "output")
    }
}

/// `nyquist_reference_backward`: the CPU reference's input gradient on host arrays. See include/nyquist.h.
@_cdecl("nyquist_reference_backward")
public func nyquist_reference_backward(
    _ layer: OpaquePointer?, _ input: UnsafePointer<Float>?, _ gradOutput: UnsafePointer<Float>?,
    _ gradInput: UnsafeMutablePointer<Float>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let reference = try layer.descriptor.makeReference(
            layer.options, inputShape: layer.inputShape, parameters: layer.parameters)
        let (_, saved) = try reference.forwardTraining(try hostTensor(input, layer.inputShape, "input"))
        let gradients = try reference.backward(try hostTensor(gradOutput, layer.outputShape, "grad_output"), saved)
        try copy(gradients.input, to: gradInput, "grad_input")
    }
}

/// The `count` named items of a call (buffers or host arrays) with their index, or an argument
/// error naming the one that is missing.
func named<Item>(_ count: Int, _ names: UnsafePointer<UnsafePointer<CChar>?>?, _ items: UnsafePointer<Item?>?, _ what: String)
    throws -> [(name: String, item: Item, index: Int)]
{
    guard count >= 0 else { throw ArgumentError(message: "\(what) count \(count)") }
    guard count == 0 || (names != nil && items != nil) else { throw ArgumentError(message: "\(what) names or items are NULL") }
    return try (0..<count).map { index in
        guard let item = items?[index] else { throw ArgumentError(message: "\(what)[\(index)] is NULL") }
        return (try string(names?[index], "\(what) name \(index)"), item, index)
    }
}

/// The `count` named caller buffers of a call, with their offsets (none given: 0).
func namedBuffers(
    _ count: Int, _ names: UnsafePointer<UnsafePointer<CChar>?>?, _ buffers: UnsafePointer<cl_mem?>?,
    _ offsets: UnsafePointer<Int>?, _ what: String
) throws -> [NamedBuffer] {
    try named(count, names, buffers, what).map { ($0.name, $0.item, offsets?[$0.index] ?? 0) }
}

/// `nyquist_layer_result_shape`: the shape of a named tensor of the layer: a result, an input,
/// or a parameter (whose gradient has its shape). See include/nyquist.h.
@_cdecl("nyquist_layer_result_shape")
public func nyquist_layer_result_shape(
    _ layer: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ rank: UnsafeMutablePointer<Int>?,
    _ shape: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let name = try string(name, "name")
        guard let rank, let shape else { throw ArgumentError(message: "rank or shape is NULL") }
        var shapes = try layer.descriptor.inputShapes(layer.options, inputShape: layer.inputShape)
        shapes.merge(try layer.descriptor.resultShapes(layer.options, inputShape: layer.inputShape)) { input, _ in input }
        for (parameter, tensor) in layer.parameters where shapes[parameter] == nil { shapes[parameter] = tensor.shape }
        // The main result is "output"; the main input is "input".
        shapes["output"] = layer.outputShape
        guard let found = shapes[name] else {
            throw NyquistError(
                .invalidConfiguration,
                "\(layer.descriptor.name) has no tensor '\(name)'; its tensors: \(shapes.keys.sorted().joined(separator: ", "))")
        }
        rank.pointee = found.count
        for (index, size) in found.enumerated() { shape[index] = size }
    }
}

/// `nyquist_layer_names`: comma-separated names of the layer's results, inputs, gradients or
/// parameters. See include/nyquist.h.
@_cdecl("nyquist_layer_names")
public func nyquist_layer_names(
    _ layer: OpaquePointer?, _ which: Int32, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int,
    _ needed: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let descriptor = layer.descriptor
        let names: [String]
        switch which {
        case 0, 1: names = try descriptor.resultNames(layer.options, inputShape: layer.inputShape, training: which == 1)
        case 2: names = try descriptor.inputShapes(layer.options, inputShape: layer.inputShape).keys.sorted { first, second in
            first == "input" || (second != "input" && first < second)
        }
        case 3: names = try descriptor.gradientNames(inputShape: layer.inputShape)
        case 4: names = descriptor.parameterNames
        case 5: names = descriptor.scalarsName.map { [$0] } ?? []
        case 6: names = ["output"] + descriptor.differentiableOutputs(layer.inputShape.count)
        case 7: names = descriptor.scalarGradientNames
        default:
            throw ArgumentError(
                message:
                    "which is \(which); use 0 (inference results), 1 (training results), 2 (inputs), 3 (gradients), "
                    + "4 (parameters), 5 (the scalar results' group), 6 (results backward takes gradients of) or "
                    + "7 (scalar results backward takes gradients of)")
        }
        try writeNames(names, buffer, capacity, needed)
    }
}

/// `nyquist_run`: a forward (training when `training` is non-zero) with named inputs and
/// named results. See include/nyquist.h.
@_cdecl("nyquist_run")
public func nyquist_run(
    _ layer: OpaquePointer?, _ training: Int32, _ inputCount: Int, _ inputNames: UnsafePointer<UnsafePointer<CChar>?>?,
    _ inputs: UnsafePointer<cl_mem?>?, _ inputOffsets: UnsafePointer<Int>?, _ outputCount: Int,
    _ outputNames: UnsafePointer<UnsafePointer<CChar>?>?, _ outputs: UnsafePointer<cl_mem?>?,
    _ outputOffsets: UnsafePointer<Int>?, _ saved: UnsafeMutablePointer<OpaquePointer?>?, _ waitCount: cl_uint,
    _ waitList: UnsafePointer<cl_event?>?, _ event: UnsafeMutablePointer<cl_event?>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        if training != 0, saved == nil { throw ArgumentError(message: "saved is NULL for a training forward") }
        let state = try layer.run(
            training: training != 0, inputs: try namedBuffers(inputCount, inputNames, inputs, inputOffsets, "input"),
            outputs: try namedBuffers(outputCount, outputNames, outputs, outputOffsets, "output"),
            waitList: try events(waitCount, waitList), event: event)
        if let state, let saved { saved.pointee = handle(state) }
    }
}

/// `nyquist_saved_scalar`: a scalar result of the training forward (TIPS's `fm`, `undo`;
/// LiftPool's `c_u`, `c_p`, `loss`). See include/nyquist.h.
@_cdecl("nyquist_saved_scalar")
public func nyquist_saved_scalar(_ saved: OpaquePointer?, _ name: UnsafePointer<CChar>?, _ value: UnsafeMutablePointer<Double>?)
    -> Int32
{
    guarded {
        let state = try unwrap(saved, as: SavedHandle.self, "saved")
        let name = try string(name, "name")
        guard let value else { throw ArgumentError(message: "value is NULL") }
        let scalars = try state.scalars()
        guard let found = scalars[name] else {
            throw NyquistError(
                .invalidConfiguration,
                "no scalar '\(name)'; this training forward gave: \(scalars.keys.sorted().joined(separator: ", "))")
        }
        value.pointee = found
    }
}

/// The `count` named scalar gradients of a backward.
func namedScalars(_ count: Int, _ names: UnsafePointer<UnsafePointer<CChar>?>?, _ values: UnsafePointer<Double>?) throws
    -> [String: Double]
{
    guard count >= 0 else { throw ArgumentError(message: "scalar count \(count)") }
    guard count == 0 || (names != nil && values != nil) else { throw ArgumentError(message: "scalar names or values are NULL") }
    var scalars: [String: Double] = [:]
    for index in 0..<count { scalars[try string(names?[index], "scalar name \(index)")] = values?[index] }
    return scalars
}

/// `nyquist_backward_run`: a backward from named result gradients (`output` and, where the
/// operator takes them, its other results' and scalar results') writing named gradients:
/// `input`, the other inputs' (`lh`, `hl`, `hh`, `d`) and the parameters' (by state_dict name).
/// See include/nyquist.h.
@_cdecl("nyquist_backward_run")
public func nyquist_backward_run(
    _ layer: OpaquePointer?, _ saved: OpaquePointer?, _ gradientCount: Int,
    _ gradientNames: UnsafePointer<UnsafePointer<CChar>?>?, _ gradients: UnsafePointer<cl_mem?>?,
    _ gradientOffsets: UnsafePointer<Int>?, _ scalarCount: Int, _ scalarNames: UnsafePointer<UnsafePointer<CChar>?>?,
    _ scalarGradients: UnsafePointer<Double>?, _ outputCount: Int, _ outputNames: UnsafePointer<UnsafePointer<CChar>?>?,
    _ outputs: UnsafePointer<cl_mem?>?, _ outputOffsets: UnsafePointer<Int>?, _ waitCount: cl_uint,
    _ waitList: UnsafePointer<cl_event?>?, _ event: UnsafeMutablePointer<cl_event?>?
) -> Int32 {
    guarded {
        try unwrap(layer, as: LayerHandle.self, "layer").runBackward(
            try unwrap(saved, as: SavedHandle.self, "saved"),
            gradients: try namedBuffers(gradientCount, gradientNames, gradients, gradientOffsets, "result gradient"),
            scalars: try namedScalars(scalarCount, scalarNames, scalarGradients),
            outputs: try namedBuffers(outputCount, outputNames, outputs, outputOffsets, "gradient"),
            waitList: try events(waitCount, waitList), event: event)
    }
}

/// `nyquist_layer_set_parameters`: replaces parameters by state_dict name with the caller's
/// buffers' contents (read after the wait list; blocking). See include/nyquist.h.
@_cdecl("nyquist_layer_set_parameters")
public func nyquist_layer_set_parameters(
    _ layer: OpaquePointer?, _ count: Int, _ names: UnsafePointer<UnsafePointer<CChar>?>?, _ buffers: UnsafePointer<cl_mem?>?,
    _ offsets: UnsafePointer<Int>?, _ waitCount: cl_uint, _ waitList: UnsafePointer<cl_event?>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let waitList = try events(waitCount, waitList)
        let shapes = try layer.parameterShapes()
        let buffers = try namedBuffers(count, names, buffers, offsets, "parameter")
        if !waitList.isEmpty {
            let status = waitList.map { Optional($0) }.withUnsafeBufferPointer { clWaitForEvents(cl_uint($0.count), $0.baseAddress) }
            guard status == CL_SUCCESS else { throw NyquistError(.device, "waiting for wait_list failed (OpenCL status \(status))") }
        }
        var given: [String: HostTensor] = [:]
        for buffer in buffers {
            let shape = try layer.parameterShape(buffer.name, shapes)
            given[buffer.name] = try DeviceTensor(
                wrapping: buffer.buffer, offset: buffer.offset, shape: shape, on: layer.device
            ).toHost()
        }
        try layer.setParameters(given)
    }
}

/// `nyquist_layer_set_parameters_host`: replaces parameters by state_dict name with host float
/// arrays. See include/nyquist.h.
@_cdecl("nyquist_layer_set_parameters_host")
public func nyquist_layer_set_parameters_host(
    _ layer: OpaquePointer?, _ count: Int, _ names: UnsafePointer<UnsafePointer<CChar>?>?,
    _ values: UnsafePointer<UnsafePointer<Float>?>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let shapes = try layer.parameterShapes()
        var given: [String: HostTensor] = [:]
        for item in try named(count, names, values, "parameter") {
            given[item.name] = try hostTensor(item.item, try layer.parameterShape(item.name, shapes), item.name)
        }
        try layer.setParameters(given)
    }
}

extension LayerHandle {
    /// The parameters' shapes by state_dict name.
    func parameterShapes() throws -> [String: [Int]] {
        parameters.mapValues(\.shape)
    }

    /// The shape of parameter `name`, or an error listing the parameters.
    func parameterShape(_ name: String, _ shapes: [String: [Int]]) throws -> [Int] {
        guard let shape = shapes[name] else {
            let names = descriptor.parameterNames.isEmpty ? "none" : descriptor.parameterNames.joined(separator: ", ")
            throw NyquistError(.invalidParameters, "\(descriptor.name) has no parameter '\(name)'; its parameters: \(names)")
        }
        return shape
    }
}

/// `nyquist_device_create_default`: a device of Nyquist's own (its own context and queue) on the
/// device `spec` names (an index or a name substring, as `nyquist devices` lists them; NULL: the
/// default device). See include/nyquist.h.
@_cdecl("nyquist_device_create_default")
public func nyquist_device_create_default(_ spec: UnsafePointer<CChar>?, _ out: UnsafeMutablePointer<OpaquePointer?>?)
    -> Int32
{
    guarded {
        guard let out else { throw ArgumentError(message: "out is NULL") }
        let device = try spec.map { try Device(named: String(cString: $0)) } ?? Device.default()
        out.pointee = handle(DeviceHandle(device))
    }
}

/// Copies each requested result (by name) to the caller's host array.
func download(
    _ results: [String: DeviceTensor], to outputs: [(name: String, item: UnsafeMutablePointer<Float>, index: Int)],
    what: String
) throws {
    for output in outputs { try pick(results, output.name, what: what).copy(into: output.item) }
}

/// The flags of `nyquist_run_host`.
struct RunFlags: OptionSet {
    let rawValue: Int32
    static let training = RunFlags(rawValue: 1)
    static let inputsInPlace = RunFlags(rawValue: 2)
}

/// A caller's host input as a device tensor: the array itself where the device's memory is the
/// host's and `inPlace` allows, else a copy.
func hostInput(_ pointer: UnsafePointer<Float>, _ shape: [Int], inPlace: Bool, _ device: Device) throws -> DeviceTensor {
    if inPlace, let tensor = try DeviceTensor.inPlace(UnsafeMutablePointer(mutating: pointer), shape: shape, on: device) {
        return tensor
    }
    return try DeviceTensor(copying: pointer, shape: shape, on: device)
}

/// `nyquist_run_host`: ``nyquist_run`` on host arrays (uploaded, run, the requested results
/// read back; blocking). See include/nyquist.h.
@_cdecl("nyquist_run_host")
public func nyquist_run_host(
    _ layer: OpaquePointer?, _ training: Int32, _ inputCount: Int, _ inputNames: UnsafePointer<UnsafePointer<CChar>?>?,
    _ inputs: UnsafePointer<UnsafePointer<Float>?>?, _ outputCount: Int, _ outputNames: UnsafePointer<UnsafePointer<CChar>?>?,
    _ outputs: UnsafePointer<UnsafeMutablePointer<Float>?>?, _ saved: UnsafeMutablePointer<OpaquePointer?>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let flags = RunFlags(rawValue: training)
        guard flags.isSubset(of: [.training, .inputsInPlace]) else {
            throw ArgumentError(message: "flags \(training): use NYQUIST_RUN_TRAINING and NYQUIST_RUN_INPUTS_IN_PLACE")
        }
        let isTraining = flags.contains(.training)
        if isTraining, saved == nil { throw ArgumentError(message: "saved is NULL for a training forward") }
        // Inference only reads the inputs during this blocking call; a training forward's saved
        // state may read them later, so only when the caller says they stay put.
        let inPlace = !isTraining || flags.contains(.inputsInPlace)
        let tensors = try layer.inputs(try named(inputCount, inputNames, inputs, "input").map { ($0.name, $0.item) }) {
            pointer, shape in try hostInput(pointer, shape, inPlace: inPlace, layer.device)
        }
        let requested = try named(outputCount, outputNames, outputs, "output")
        let (results, state) = try layer.forward(tensors, training: isTraining)
        if let state { saved?.pointee = handle(state) }
        try download(results, to: requested, what: "result")
    }
}

/// `nyquist_backward_run_host`: ``nyquist_backward_run`` on host arrays (blocking). See
/// include/nyquist.h.
@_cdecl("nyquist_backward_run_host")
public func nyquist_backward_run_host(
    _ layer: OpaquePointer?, _ saved: OpaquePointer?, _ gradientCount: Int,
    _ gradientNames: UnsafePointer<UnsafePointer<CChar>?>?, _ gradients: UnsafePointer<UnsafePointer<Float>?>?,
    _ scalarCount: Int, _ scalarNames: UnsafePointer<UnsafePointer<CChar>?>?, _ scalarGradients: UnsafePointer<Double>?,
    _ outputCount: Int, _ outputNames: UnsafePointer<UnsafePointer<CChar>?>?,
    _ outputs: UnsafePointer<UnsafeMutablePointer<Float>?>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let state = try unwrap(saved, as: SavedHandle.self, "saved")
        let tensors = try layer.outputGradients(
            try named(gradientCount, gradientNames, gradients, "result gradient").map { ($0.name, $0.item) }
        ) { pointer, shape in try hostInput(pointer, shape, inPlace: true, layer.device) }
        let scalars = try namedScalars(scalarCount, scalarNames, scalarGradients)
        let requested = try named(outputCount, outputNames, outputs, "gradient")
        try download(try layer.backward(tensors, scalars: scalars, state), to: requested, what: "gradient")
    }
}

/// Writes `names` comma-separated into the caller's buffer (see ``nyquist_layer_names``).
func writeNames(_ names: [String], _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ needed: UnsafeMutablePointer<Int>?)
    throws
{
    let text = Array(names.joined(separator: ",").utf8CString)
    needed?.pointee = text.count
    guard let buffer else { return }
    guard capacity >= text.count else {
        throw NyquistError(.sizeLimit, "the names need \(text.count) bytes; the buffer has \(capacity)")
    }
    for (index, byte) in text.enumerated() { buffer[index] = byte }
}

/// `nyquist_operator_options`: the option names operator `op` takes, comma-separated. See
/// include/nyquist.h.
@_cdecl("nyquist_operator_options")
public func nyquist_operator_options(
    _ op: UnsafePointer<CChar>?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ needed: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let descriptor = try OperatorRegistry.named(try string(op, "op"))
        try writeNames(descriptor.options.map(\.name), buffer, capacity, needed)
    }
}

/// `nyquist_saved_scalar_names`: the names of a training forward's scalar results,
/// comma-separated. See include/nyquist.h.
@_cdecl("nyquist_saved_scalar_names")
public func nyquist_saved_scalar_names(
    _ saved: OpaquePointer?, _ buffer: UnsafeMutablePointer<CChar>?, _ capacity: Int, _ needed: UnsafeMutablePointer<Int>?
) -> Int32 {
    guarded {
        let state = try unwrap(saved, as: SavedHandle.self, "saved")
        try writeNames(try state.scalars().keys.sorted(), buffer, capacity, needed)
    }
}
