import COpenCL
import NyquistCL
import NyquistCore

/// A float tensor in device memory, NCHW.
///
/// Not `Sendable` on purpose (as MLX arrays): a tensor is produced and consumed by the
/// operators of one task; share the ``Device`` across tasks instead.
public final class DeviceTensor {
    /// Sizes, outermost first (N, C, H, W for the 2-D operators).
    public let shape: [Int]
    /// The memory holding the values (possibly a sub-buffer of a larger allocation, possibly
    /// larger than the values: the device's allocator serves sizes by class).
    package let buffer: OpenCLBuffer
    /// The device it lives on.
    public let device: Device

    /// Number of elements.
    public let count: Int
    /// Whether the buffer came from the device's caching allocator (and goes back to it).
    private let cached: Bool

    /// Uploads `host` to `device`.
    public convenience init(_ host: HostTensor, on device: Device) throws {
        try self.init(shape: host.shape, on: device)
        try wrappingDriverErrors { try device.context.write(host.values, to: buffer) }
    }

    /// Allocates an uninitialised tensor of `shape` on `device`.
    public convenience init(shape: [Int], on device: Device) throws {
        let count = try HostTensor.elementCount(of: shape)
        guard count <= maximumDeviceElementCount else {
            throw NyquistError(.sizeLimit, "tensor \(shape) has \(count) elements; the device limit is 2^31 - 1")
        }
        let buffer: OpenCLBuffer
        do {
            buffer = try device.allocator.buffer(byteCount: count * 4)
        } catch let error as OpenCLError {
            throw NyquistError(
                error.isOutOfMemory ? .outOfMemory : .device, "tensor \(shape): \(error.isOutOfMemory ? error.detail : error.description)")
        }
        self.init(shape: shape, count: count, buffer: buffer, device: device, cached: true)
    }

    private init(shape: [Int], count: Int, buffer: OpenCLBuffer, device: Device, cached: Bool) {
        self.shape = shape
        self.buffer = buffer
        self.device = device
        self.count = count
        self.cached = cached
    }

    deinit {
        // The allocator hands the buffer out again only when it holds the last reference, so a
        // caller that kept `buffer` (or a sub-buffer of it) keeps memory no other tensor gets.
        if cached { device.allocator.recycle(buffer) }
    }

    /// A tensor on a caller's memory object (one of `device`'s context), starting `offset`
    /// floats in. The tensor holds one reference to `buffer` (released with it) and never frees
    /// or reuses its memory. A non-zero offset must be a multiple of the device's base-address
    /// alignment (`CL_DEVICE_MEM_BASE_ADDR_ALIGN`); throws ``NyquistError`` when it is not, when
    /// the values do not fit the buffer, or when the buffer belongs to another context.
    public convenience init(wrapping buffer: cl_mem, offset: Int = 0, shape: [Int], on device: Device) throws {
        let count = try HostTensor.elementCount(of: shape)
        guard count <= maximumDeviceElementCount else {
            throw NyquistError(.sizeLimit, "tensor \(shape) has \(count) elements; the device limit is 2^31 - 1")
        }
        let whole = try wrappingDriverErrors { try device.context.wrapBuffer(buffer) }
        let alignment = device.context.baseAddressAlignment
        guard offset >= 0, offset * 4 % alignment == 0 else {
            throw NyquistError(
                .invalidConfiguration,
                "offset \(offset) floats is not a multiple of the device's base-address alignment (\(alignment / 4) floats)")
        }
        guard (offset + count) * 4 <= whole.byteCount else {
            throw NyquistError(
                .invalidShape,
                "tensor \(shape) at offset \(offset) needs \((offset + count) * 4) bytes; the buffer has \(whole.byteCount)")
        }
        let view =
            offset == 0
            ? whole : try wrappingDriverErrors { try device.context.makeSubBuffer(of: whole, offset: offset * 4, byteCount: count * 4) }
        try self.init(shape: shape, buffer: view, device: device)
    }

    /// Wraps an existing buffer (e.g. a sub-buffer with guard regions around it, or memory the
    /// caller manages); the buffer must hold at least `shape`'s element count of floats.
    package convenience init(shape: [Int], buffer: OpenCLBuffer, device: Device) throws {
        let count = try HostTensor.elementCount(of: shape)
        guard buffer.floatCount >= count else {
            throw NyquistError(.invalidShape, "a buffer of \(buffer.floatCount) floats cannot hold shape \(shape)")
        }
        self.init(shape: shape, count: count, buffer: buffer, device: device, cached: false)
    }

    /// Overwrites the values with `values` (as many as the tensor holds; blocking, so the
    /// caller may reuse the array at once).
    func replaceValues(with values: [Float]) throws {
        guard values.count == count else {
            throw NyquistError(.invalidShape, "\(values.count) values cannot replace a tensor of shape \(shape)")
        }
        try wrappingDriverErrors { try device.context.write(values, to: buffer) }
    }

    /// Uploads the `shape`'s element count of floats at `values` (a caller's array, read once,
    /// blocking: it may change or go away after).
    public convenience init(copying values: UnsafePointer<Float>, shape: [Int], on device: Device) throws {
        try self.init(shape: shape, on: device)
        try wrappingDriverErrors { try device.context.write(bytes: values, byteCount: count * 4, to: buffer) }
    }

    /// A tensor over the caller's host array at `values` without a copy, where the device's
    /// memory is the host's (a CPU device; nil elsewhere: copy instead). The kernels read the
    /// array in place, so it must stay valid and unchanged while the tensor lives (a training
    /// forward's saved state may keep it).
    public static func inPlace(_ values: UnsafeMutablePointer<Float>, shape: [Int], on device: Device) throws -> DeviceTensor? {
        guard device.context.hostUnifiedMemory else { return nil }
        let count = try HostTensor.elementCount(of: shape)
        guard count <= maximumDeviceElementCount else {
            throw NyquistError(.sizeLimit, "tensor \(shape) has \(count) elements; the device limit is 2^31 - 1")
        }
        guard count > 0 else { return nil }
        let buffer = try wrappingDriverErrors { try device.context.hostBackedBuffer(values, byteCount: count * 4) }
        return try DeviceTensor(shape: shape, buffer: buffer, device: device)
    }

    /// Copies the values into the caller's array of ``count`` floats at `destination` (waits for
    /// the kernels that produce them).
    public func copy(into destination: UnsafeMutablePointer<Float>) throws {
        // Where the device's memory is the host's, the device's own copy kernel (all cores)
        // writes the array through a host-backed buffer; a read would copy on one thread.
        if let target = try DeviceTensor.inPlace(destination, shape: shape, on: device) {
            try device.copy(self, into: target)
            try wrappingDriverErrors { try device.context.publishToHost(target.buffer) }
            return
        }
        try wrappingDriverErrors { try device.context.read(buffer, into: destination, byteCount: count * 4) }
    }

    /// Copies the values back to the host (waits for the kernels that produce them).
    public func toHost() throws -> HostTensor {
        try HostTensor(shape: shape, values: wrappingDriverErrors { try device.context.read(buffer, count: count) })
    }

    /// The shape as NCHW, or a typed error naming `role` when the rank is not 4.
    func nchw(_ role: @autoclosure () -> String) throws -> Shape4D {
        // The role is formatted only for the error: this runs on every layer call.
        guard shape.count == 4 else { return try Shape4D(shape, role: role()) }
        return try Shape4D(n: shape[0], c: shape[1], h: shape[2], w: shape[3])
    }
}
