import NyquistCL
import Synchronization

/// Device memory for tensors, reused the way PyTorch's caching allocator reuses it: a buffer
/// whose tensor is gone goes back to a free list by size class, and the next request of that
/// class takes it instead of asking the driver, so a steady-state call allocates nothing.
///
/// Reuse is safe without waiting for the device because every command goes through the
/// device's one in-order queue: a kernel that reads the recycled buffer was enqueued before any
/// later kernel that writes it. A tensor's buffer comes back when the tensor goes away, but is
/// handed out again only once the cache holds the last reference to it: a caller that kept
/// `tensor.buffer` (or an argument list of a launch still being enqueued, which an optimised
/// build may outlive the tensor with) keeps a buffer nobody else gets. Checking at reuse
/// rather than at release is what lets an optimised build, which ends a temporary's lifetime
/// at its last use, still recycle it.
///
/// `@unchecked Sendable`: the free lists and counters live behind `state`'s mutex; the context
/// is itself thread safe.
final class CachingAllocator: @unchecked Sendable {
    private let context: OpenCLContext
    /// The most bytes kept in the free lists; beyond it they are handed back to the driver.
    let limit: Int
    private let state = Mutex(State())

    private struct State {
        var free: [Int: [OpenCLBuffer]] = [:]
        var cachedBytes = 0
        var statistics = MemoryStatistics()
    }

    init(context: OpenCLContext) {
        self.context = context
        // An eighth of the device's memory, at most 1 GiB: enough for the temporaries and
        // outputs of a training step at the ResNet shapes, little enough that a process which
        // sweeps many sizes (a test suite) does not hoard the host's memory on a CPU device.
        limit = min(context.device.globalMemorySize / 8, 1 << 30)
    }

    /// The size a request of `byteCount` bytes is served with: a multiple of 512 bytes up to
    /// 1 MiB, above that a multiple of an eighth of the power of two below it (at most 12.5%
    /// more than asked), so that nearby sizes share free lists.
    static func sizeClass(_ byteCount: Int) -> Int {
        let bytes = max(byteCount, 4)
        guard bytes > 1 << 20 else { return (bytes + 511) / 512 * 512 }
        let step = (1 << (Int.bitWidth - 1 - bytes.leadingZeroBitCount)) / 8
        return (bytes + step - 1) / step * step
    }

    /// A buffer of at least `byteCount` bytes: a cached one of its size class, else a new one
    /// from the driver; when the device is out of memory, the cache is released and the
    /// request tried once more.
    func buffer(byteCount: Int) throws -> OpenCLBuffer {
        let size = Self.sizeClass(byteCount)
        let reused = state.withLock { state -> OpenCLBuffer? in
            state.statistics.requests += 1
            guard var list = state.free.removeValue(forKey: size) else { return nil }
            defer { if !list.isEmpty { state.free[size] = list } }
            for index in list.indices.reversed() where isKnownUniquelyReferenced(&list[index]) {
                state.cachedBytes -= size
                state.statistics.reuses += 1
                return list.remove(at: index)
            }
            return nil
        }
        if let reused { return reused }
        do {
            return try context.makeBuffer(byteCount: size)
        } catch let error as OpenCLError where error.isOutOfMemory {
            guard releaseAll() > 0 else { throw error }
            return try context.makeBuffer(byteCount: size)
        }
    }

    /// Takes back a buffer whose tensor is gone (it must have come from ``buffer(byteCount:)``);
    /// it is reused once nothing else refers to it.
    func recycle(_ buffer: OpenCLBuffer) {
        let size = buffer.byteCount
        guard size <= limit else { return }
        // Released outside the lock: the driver's free may take a while.
        var evicted: [Int: [OpenCLBuffer]] = [:]
        state.withLock { state in
            if state.cachedBytes + size > limit {
                evicted = state.free
                state.free = [:]
                state.cachedBytes = 0
            }
            state.free[size, default: []].append(buffer)
            state.cachedBytes += size
        }
        evicted.removeAll()
    }

    /// Hands every cached buffer back to the driver; returns the bytes released.
    @discardableResult
    func releaseAll() -> Int {
        var released: [Int: [OpenCLBuffer]] = [:]
        let bytes = state.withLock { state -> Int in
            released = state.free
            state.free = [:]
            defer { state.cachedBytes = 0 }
            return state.cachedBytes
        }
        released.removeAll()
        return bytes
    }

    /// A snapshot of the counters, with the bytes cached now.
    var statistics: MemoryStatistics {
        state.withLock { state in
            var statistics = state.statistics
            statistics.cachedBytes = state.cachedBytes
            return statistics
        }
    }
}

/// How a device's tensors got their memory (see ``Device/memoryStatistics``).
public struct MemoryStatistics: Sendable, Equatable {
    /// Tensors allocated on the device (``DeviceTensor/init(shape:on:)`` and the operators'
    /// outputs and temporaries), whether served from the cache or by the driver.
    public var requests = 0
    /// Requests served by a cached buffer, without asking the driver.
    public var reuses = 0
    /// Bytes held in the cache now, ready for reuse.
    public var cachedBytes = 0
}

extension Device {
    /// How the device's tensors got their memory: requests, how many the cache served, and the
    /// bytes it holds now. Driver allocations are counted in `context.statistics`.
    public var memoryStatistics: MemoryStatistics { allocator.statistics }

    /// Hands the memory that dropped tensors left cached back to the driver and returns how
    /// many bytes that was. The device does this by itself when an allocation runs out of
    /// memory; call it to give the memory to something outside Nyquist.
    @discardableResult
    public func releaseCachedMemory() -> Int {
        allocator.releaseAll()
    }
}
