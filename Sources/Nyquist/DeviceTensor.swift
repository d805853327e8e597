import NyquistCL
import NyquistCore

/// A float tensor in device memory, NCHW.
///
/// Not `Sendable` on purpose (as MLX arrays): a tensor is produced and consumed by the
/// operators of one task; share the ``Device`` across tasks instead.
public final class DeviceTensor {
    /// Sizes, outermost first (N, C, H, W for the 2-D operators).
    public let shape: [Int]
    /// The memory holding the values (possibly a sub-buffer of a larger allocation).
    public let buffer: OpenCLBuffer
    /// The device it lives on.
    public let device: Device

    /// Number of elements.
    public let count: Int

    /// Uploads `host` to `device`.
    public convenience init(_ host: HostTensor, on device: Device) throws {
        try self.init(shape: host.shape, on: device)
        try device.context.write(host.values, to: buffer)
    }

    /// Allocates an uninitialised tensor of `shape` on `device`.
    public convenience init(shape: [Int], on device: Device) throws {
        let count = try HostTensor.elementCount(of: shape)
        guard count <= maximumDeviceElementCount else {
            throw NyquistError(.sizeLimit, "tensor \(shape) has \(count) elements; the device limit is 2^31 - 1")
        }
        let buffer: OpenCLBuffer
        do {
            buffer = try device.context.makeBuffer(byteCount: count * 4)
        } catch let error as OpenCLError where error.isOutOfMemory {
            throw NyquistError(.outOfMemory, "tensor \(shape): \(error.detail)")
        }
        try self.init(shape: shape, buffer: buffer, device: device)
    }

    /// Wraps an existing buffer (e.g. a sub-buffer with guard regions around it, or memory the
    /// caller manages); the buffer must hold at least `shape`'s element count of floats.
    public init(shape: [Int], buffer: OpenCLBuffer, device: Device) throws {
        let count = try HostTensor.elementCount(of: shape)
        guard buffer.floatCount >= count else {
            throw NyquistError(.invalidShape, "a buffer of \(buffer.floatCount) floats cannot hold shape \(shape)")
        }
        self.shape = shape
        self.buffer = buffer
        self.device = device
        self.count = count
    }

    /// Copies the values back to the host (waits for the kernels that produce them).
    public func toHost() throws -> HostTensor {
        try HostTensor(shape: shape, values: device.context.read(buffer, count: count))
    }

    /// The shape as NCHW, or a typed error naming `role` when the rank is not 4.
    func nchw(_ role: String) throws -> Shape4D {
        try Shape4D(shape, role: role)
    }
}
