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
    let parameters: [String: HostTensor]
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
    let scalars: [String: Double]
    init(layer: LayerHandle, saved: SavedState, scalars: [String: Double] = [:]) {
        self.layer = ObjectIdentifier(layer)
        self.saved = saved
        self.scalars = scalars
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

/// Runs one call of `layer` on the caller's buffers inside a submission: `body` gets the input
/// tensor and returns the result to copy into `output`.
func run(
    _ layer: LayerHandle, input: cl_mem?, inputOffset: Int, inputShape: [Int], output: cl_mem?, outputOffset: Int,
    outputShape: [Int], waitCount: cl_uint, waitList: UnsafePointer<cl_event?>?, event: UnsafeMutablePointer<cl_event?>?,
    _ body: (DeviceTensor) throws -> DeviceTensor
) throws {
    guard let input, let output else { throw ArgumentError(message: "an input or output buffer is NULL") }
    let device = layer.device
    let source = try DeviceTensor(wrapping: input, offset: inputOffset, shape: inputShape, on: device)
    let destination = try DeviceTensor(wrapping: output, offset: outputOffset, shape: outputShape, on: device)
    let (_, completion) = try device.submit(after: try events(waitCount, waitList)) {
        try device.copy(try body(source), into: destination)
    }
    if let event { event.pointee = completion } else if let completion { clReleaseEvent(completion) }
}

/// `nyquist_forward`: inference forward on the caller's buffers after its wait list. See include/nyquist.h.
@_cdecl("nyquist_forward")
public func nyquist_forward(
    _ layer: OpaquePointer?, _ input: cl_mem?, _ inputOffset: Int, _ output: cl_mem?, _ outputOffset: Int,
    _ waitCount: cl_uint, _ waitList: UnsafePointer<cl_event?>?, _ event: UnsafeMutablePointer<cl_event?>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        try run(
            layer, input: input, inputOffset: inputOffset, inputShape: layer.inputShape, output: output,
            outputOffset: outputOffset, outputShape: layer.outputShape, waitCount: waitCount, waitList: waitList, event: event
        ) { try layer.layer($0).output }
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
        var state: SavedState?
        try run(
            layer, input: input, inputOffset: inputOffset, inputShape: layer.inputShape, output: output,
            outputOffset: outputOffset, outputShape: layer.outputShape, waitCount: waitCount, waitList: waitList, event: event
        ) { x in
            let (values, kept) = try layer.layer.forwardTraining(x)
            state = kept
            return values.output
        }
        guard let state else { throw ArgumentError(message: "the training forward kept no state") }
        saved.pointee = handle(SavedHandle(layer: layer, saved: state))
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
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let state = try unwrap(saved, as: SavedHandle.self, "saved")
        guard state.layer == ObjectIdentifier(layer) else {
            throw ArgumentError(message: "saved comes from another layer's training forward")
        }
        try run(
            layer, input: gradOutput, inputOffset: gradOutputOffset, inputShape: layer.outputShape, output: gradInput,
            outputOffset: gradInputOffset, outputShape: layer.inputShape, waitCount: waitCount, waitList: waitList,
            event: event
        ) { try layer.layer.backward($0, state.saved).input }
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

/// Named buffers of a call: (name, buffer, offset in floats).
func namedBuffers(
    _ count: Int, _ names: UnsafePointer<UnsafePointer<CChar>?>?, _ buffers: UnsafePointer<cl_mem?>?,
    _ offsets: UnsafePointer<Int>?, _ what: String
) throws -> [(name: String, buffer: cl_mem, offset: Int)] {
    guard count >= 0 else { throw ArgumentError(message: "\(what) count \(count)") }
    guard count == 0 || (names != nil && buffers != nil) else { throw ArgumentError(message: "\(what) names or buffers are NULL") }
    return try (0..<count).map { index in
        guard let buffer = buffers?[index] else { throw ArgumentError(message: "\(what)[\(index)] is NULL") }
        return (try string(names?[index], "\(what) name \(index)"), buffer, offsets?[index] ?? 0)
    }
}

/// Copies each named result into the caller's buffer of that name (of the result's shape).
func deliver(
    _ results: [String: DeviceTensor], to outputs: [(name: String, buffer: cl_mem, offset: Int)], on device: Device,
    what: String
) throws {
    for output in outputs {
        guard let result = results[output.name] else {
            throw NyquistError(
                .invalidConfiguration,
                "no \(what) named '\(output.name)' here; available: \(results.keys.sorted().joined(separator: ", "))")
        }
        let destination = try DeviceTensor(wrapping: output.buffer, offset: output.offset, shape: result.shape, on: device)
        try device.copy(result, into: destination)
    }
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
        default:
            throw ArgumentError(
                message:
                    "which is \(which); use 0 (inference results), 1 (training results), 2 (inputs), 3 (gradients), "
                    + "4 (parameters) or 5 (the scalar results' group)")
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
        let device = layer.device
        let inputShapes = try layer.descriptor.inputShapes(layer.options, inputShape: layer.inputShape)
        var tensors: [String: DeviceTensor] = [:]
        for input in try namedBuffers(inputCount, inputNames, inputs, inputOffsets, "input") {
            guard let shape = inputShapes[input.name] else {
                throw NyquistError(
                    .invalidConfiguration,
                    "\(layer.descriptor.name) takes no input '\(input.name)'; its inputs: \(inputShapes.keys.sorted().joined(separator: ", "))")
            }
            tensors[input.name] = try DeviceTensor(wrapping: input.buffer, offset: input.offset, shape: shape, on: device)
        }
        let requested = try namedBuffers(outputCount, outputNames, outputs, outputOffsets, "output")
        var kept: SavedHandle?
        let (_, completion) = try device.submit(after: try events(waitCount, waitList)) {
            let values: OperatorValues<DeviceTensor>
            if training != 0 {
                let (result, state) = try layer.layer.forwardTraining(tensors)
                values = result
                kept = SavedHandle(layer: layer, saved: state, scalars: result.scalars)
            } else {
                values = try layer.layer(tensors)
            }
            var results = values.extras
            results["output"] = values.output
            try deliver(results, to: requested, on: device, what: "result")
        }
        if let event { event.pointee = completion } else if let completion { clReleaseEvent(completion) }
        if let kept, let saved { saved.pointee = handle(kept) }
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
        guard let found = state.scalars[name] else {
            throw NyquistError(
                .invalidConfiguration,
                "no scalar '\(name)'; this training forward gave: \(state.scalars.keys.sorted().joined(separator: ", "))")
        }
        value.pointee = found
    }
}

/// `nyquist_backward_run`: a backward writing named gradients: `input`, the other inputs'
/// (`lh`, `hl`, `hh`, `d`) and the parameters' (by state_dict name). See include/nyquist.h.
@_cdecl("nyquist_backward_run")
public func nyquist_backward_run(
    _ layer: OpaquePointer?, _ saved: OpaquePointer?, _ gradOutput: cl_mem?, _ gradOutputOffset: Int, _ outputCount: Int,
    _ outputNames: UnsafePointer<UnsafePointer<CChar>?>?, _ outputs: UnsafePointer<cl_mem?>?,
    _ outputOffsets: UnsafePointer<Int>?, _ waitCount: cl_uint, _ waitList: UnsafePointer<cl_event?>?,
    _ event: UnsafeMutablePointer<cl_event?>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let state = try unwrap(saved, as: SavedHandle.self, "saved")
        guard state.layer == ObjectIdentifier(layer) else {
            throw ArgumentError(message: "saved comes from another layer's training forward")
        }
        guard let gradOutput else { throw ArgumentError(message: "grad_output is NULL") }
        let device = layer.device
        let outputShape = try layer.descriptor.outputShape(layer.options, inputShape: layer.inputShape)
        let gradient = try DeviceTensor(wrapping: gradOutput, offset: gradOutputOffset, shape: outputShape, on: device)
        let requested = try namedBuffers(outputCount, outputNames, outputs, outputOffsets, "gradient")
        let (_, completion) = try device.submit(after: try events(waitCount, waitList)) {
            let gradients = try layer.layer.backward(gradient, state.saved)
            var results = gradients.extras.merging(gradients.parameters) { first, _ in first }
            results["input"] = gradients.input
            try deliver(results, to: requested, on: device, what: "gradient")
        }
        if let event { event.pointee = completion } else if let completion { clReleaseEvent(completion) }
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

/// Host arrays of a call by name, `count` of each: (name, pointer).
func namedHostArrays<Pointer>(
    _ count: Int, _ names: UnsafePointer<UnsafePointer<CChar>?>?, _ arrays: UnsafePointer<Pointer?>?, _ what: String
) throws -> [(name: String, pointer: Pointer)] {
    guard count >= 0 else { throw ArgumentError(message: "\(what) count \(count)") }
    guard count == 0 || (names != nil && arrays != nil) else { throw ArgumentError(message: "\(what) names or arrays are NULL") }
    return try (0..<count).map { index in
        guard let pointer = arrays?[index] else { throw ArgumentError(message: "\(what)[\(index)] is NULL") }
        return (try string(names?[index], "\(what) name \(index)"), pointer)
    }
}

/// Copies each requested result (by name) to the caller's host array.
func download(_ results: [String: DeviceTensor], to outputs: [(name: String, pointer: UnsafeMutablePointer<Float>)], what: String)
    throws
{
    for output in outputs {
        guard let result = results[output.name] else {
            throw NyquistError(
                .invalidConfiguration,
                "no \(what) named '\(output.name)' here; available: \(results.keys.sorted().joined(separator: ", "))")
        }
        try copy(try result.toHost(), to: output.pointer, output.name)
    }
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
        if training != 0, saved == nil { throw ArgumentError(message: "saved is NULL for a training forward") }
        let inputShapes = try layer.descriptor.inputShapes(layer.options, inputShape: layer.inputShape)
        var tensors: [String: DeviceTensor] = [:]
        for input in try namedHostArrays(inputCount, inputNames, inputs, "input") {
            guard let shape = inputShapes[input.name] else {
                throw NyquistError(
                    .invalidConfiguration,
                    "\(layer.descriptor.name) takes no input '\(input.name)'; its inputs: \(inputShapes.keys.sorted().joined(separator: ", "))")
            }
            tensors[input.name] = try DeviceTensor(try hostTensor(input.pointer, shape, input.name), on: layer.device)
        }
        let requested = try namedHostArrays(outputCount, outputNames, outputs, "output")
        let values: OperatorValues<DeviceTensor>
        if training != 0 {
            let (result, state) = try layer.layer.forwardTraining(tensors)
            values = result
            saved?.pointee = handle(SavedHandle(layer: layer, saved: state, scalars: result.scalars))
        } else {
            values = try layer.layer(tensors)
        }
        var results = values.extras
        results["output"] = values.output
        try download(results, to: requested, what: "result")
    }
}

/// `nyquist_backward_run_host`: ``nyquist_backward_run`` on host arrays (blocking). See
/// include/nyquist.h.
@_cdecl("nyquist_backward_run_host")
public func nyquist_backward_run_host(
    _ layer: OpaquePointer?, _ saved: OpaquePointer?, _ gradOutput: UnsafePointer<Float>?, _ outputCount: Int,
    _ outputNames: UnsafePointer<UnsafePointer<CChar>?>?, _ outputs: UnsafePointer<UnsafeMutablePointer<Float>?>?
) -> Int32 {
    guarded {
        let layer = try unwrap(layer, as: LayerHandle.self, "layer")
        let state = try unwrap(saved, as: SavedHandle.self, "saved")
        guard state.layer == ObjectIdentifier(layer) else {
            throw ArgumentError(message: "saved comes from another layer's training forward")
        }
        let outputShape = try layer.descriptor.outputShape(layer.options, inputShape: layer.inputShape)
        let gradient = try DeviceTensor(try hostTensor(gradOutput, outputShape, "grad_output"), on: layer.device)
        let gradients = try layer.layer.backward(gradient, state.saved)
        var results = gradients.extras.merging(gradients.parameters) { first, _ in first }
        results["input"] = gradients.input
        try download(results, to: try namedHostArrays(outputCount, outputNames, outputs, "gradient"), what: "gradient")
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
        try writeNames(state.scalars.keys.sorted(), buffer, capacity, needed)
    }
}
