import COpenCL
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// An OpenCL context and in-order profiling command queue on one device, with the program
/// cache and the allocation counters that the tests read.
///
/// `@unchecked Sendable`: the context and queue handles are immutable and thread safe in
/// OpenCL; everything mutable (cache, counters, kernel argument state, timing session) is
/// touched only inside `state`'s mutex, and every enqueue happens inside it, so two threads
/// never set arguments on the same `cl_kernel` at once.
package final class OpenCLContext: @unchecked Sendable {
    /// The device this context drives.
    package let device: OpenCLDevice
    let context: cl_context
    let queue: cl_command_queue
    let state = Mutex(State())
    /// False for a caller's queue: never finished implicitly (see ``init(wrapping:device:queue:programCache:)``).
    private let ownsQueue: Bool
    /// Whether the queue records profiling information (``measure(_:)`` needs it).
    package let profiling: Bool
    private let diskCache: ProgramDiskCache?

    /// Where this context keeps compiled programs between processes.
    package let programCacheLocation: ProgramCacheLocation

    /// Counters that tests assert on (no rebuild on a second call, no hidden buffers).
    package struct Statistics: Sendable, Equatable {
        /// Programs compiled from source (binaries loaded from the disk cache are not counted).
        package var builds = 0
        /// Program requests answered from the in-memory cache.
        package var cacheHits = 0
        /// Programs loaded from a verified disk-cache entry instead of being compiled.
        package var diskHits = 0
        /// Entries written to the disk cache.
        package var diskWrites = 0
        /// Disk-cache entries found but not used (truncated, corrupted, written for another key,
        /// or refused by the driver); each was rebuilt from source and overwritten.
        package var diskRejected = 0
        /// Entries that could not be written (directory missing and not creatable, read-only,
        /// disk full); the programs stay cached in memory.
        package var diskWriteFailures = 0
        /// Device buffers ever allocated (sub-buffers not counted).
        package var allocations = 0
        /// Device buffers currently alive (sub-buffers not counted).
        package var liveBuffers = 0
        /// Kernel launches.
        package var launches = 0
        /// Bytes of the device buffers currently alive (sub-buffers not counted).
        package var liveBytes = 0
        /// The most bytes alive at once since the context was made or
        /// ``OpenCLContext/resetPeakLiveBytes()`` was called (the benchmarks' memory column).
        package var peakLiveBytes = 0
    }

    struct ProgramKey: Hashable {
        let source: String
        let options: String
    }

    struct State {
        var programs: [ProgramKey: OpenCLProgram] = [:]
        var statistics = Statistics()
        /// The open timing sessions by calling thread (``OpenCLContext/currentThreadKey``): a
        /// launch joins the session of the thread that enqueues it, so two threads measuring on
        /// one context at once each count their own kernels and lose none.
        var timingSessions: [UInt: [(kernel: String, event: cl_event)]] = [:]
        /// The open submissions by calling thread (``OpenCLContext/submit(after:_:)``).
        var submissions: [UInt: Submission] = [:]
    }

    /// A submission in progress: the wait list its first launch still has to take, and its
    /// last launch's event.
    ///
    /// `@unchecked Sendable`: event handles may be used from any thread, and these are touched
    /// only inside `state`'s mutex.
    struct Submission: @unchecked Sendable {
        var waitList: [cl_event]
        var last: cl_event?
    }

    /// The calling thread's identity while it runs (a session lives within one call, so a key
    /// reused by a later thread never meets the old session).
    static var currentThreadKey: UInt {
        #if canImport(Darwin)
            UInt(bitPattern: pthread_self())
        #else
            UInt(pthread_self())
        #endif
    }

    /// Creates a context and a profiling queue on `device`; compiled programs are also kept in
    /// `programCache` (by default where the environment says, see
    /// ``ProgramCacheLocation/fromEnvironment()``).
    package init(device: OpenCLDevice, programCache: ProgramCacheLocation = .fromEnvironment()) throws {
        self.device = device
        programCacheLocation = programCache
        let sizeLimit = try ProgramCacheLocation.sizeLimitFromEnvironment()
        diskCache = programCache.programsDirectory.map { ProgramDiskCache(directory: $0, sizeLimit: sizeLimit) }
        var status: cl_int = CL_SUCCESS
        var deviceID: cl_device_id? = device.id
        let properties: [cl_context_properties] = [
            cl_context_properties(CL_CONTEXT_PLATFORM), cl_context_properties(Int(bitPattern: device.platformID)), 0,
        ]
        let created = clCreateContext(properties, 1, &deviceID, nil, nil, &status)
        try check(status, "clCreateContext", device.name)
        guard let created else { throw OpenCLError(call: "clCreateContext", code: CL_INVALID_CONTEXT) }
        let createdQueue = clCreateCommandQueue(
            created, device.id, cl_command_queue_properties(CL_QUEUE_PROFILING_ENABLE), &status)
        guard status == CL_SUCCESS, let createdQueue else {
            clReleaseContext(created)
            throw OpenCLError(call: "clCreateCommandQueue", code: status, detail: device.name)
        }
        context = created
        queue = createdQueue
        ownsQueue = true
        profiling = true
    }

    /// Drives a caller's context and in-order queue on `device`. Holds one reference to each
    /// (released with this object), never finishes the queue implicitly, and refuses an
    /// out-of-order queue (the caching allocator reuses memory in queue order) or one of
    /// another context or device. Timing (``measure(_:)``) needs `CL_QUEUE_PROFILING_ENABLE`.
    package init(
        wrapping context: cl_context, device: cl_device_id, queue: cl_command_queue,
        programCache: ProgramCacheLocation = .fromEnvironment()
    ) throws {
        var queueContext: cl_context? = nil
        try check(
            clGetCommandQueueInfo(
                queue, cl_command_queue_info(CL_QUEUE_CONTEXT), MemoryLayout<cl_context>.size, &queueContext, nil),
            "clGetCommandQueueInfo")
        var queueDevice: cl_device_id? = nil
        try check(
            clGetCommandQueueInfo(
                queue, cl_command_queue_info(CL_QUEUE_DEVICE), MemoryLayout<cl_device_id>.size, &queueDevice, nil),
            "clGetCommandQueueInfo")
        guard queueContext == context, queueDevice == device else {
            throw OpenCLError(
                call: "wrap", code: CL_INVALID_COMMAND_QUEUE, detail: "the queue belongs to another context or device")
        }
        var properties: cl_command_queue_properties = 0
        try check(
            clGetCommandQueueInfo(
                queue, cl_command_queue_info(CL_QUEUE_PROPERTIES), MemoryLayout<cl_command_queue_properties>.size,
                &properties, nil),
            "clGetCommandQueueInfo")
        guard properties & cl_command_queue_properties(CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE) == 0 else {
            throw OpenCLError(
                call: "wrap", code: CL_INVALID_COMMAND_QUEUE,
                detail: "out-of-order queues are not supported: the commands of one call rely on queue order")
        }
        self.device = try OpenCLDevice(wrapping: device)
        programCacheLocation = programCache
        let sizeLimit = try ProgramCacheLocation.sizeLimitFromEnvironment()
        diskCache = programCache.programsDirectory.map { ProgramDiskCache(directory: $0, sizeLimit: sizeLimit) }
        try check(clRetainContext(context), "clRetainContext")
        try check(clRetainCommandQueue(queue), "clRetainCommandQueue")
        self.context = context
        self.queue = queue
        ownsQueue = false
        profiling = properties & cl_command_queue_properties(CL_QUEUE_PROFILING_ENABLE) != 0
    }

    deinit {
        if ownsQueue { clFinish(queue) }
        state.withLock { $0.programs.removeAll() }
        clReleaseCommandQueue(queue)
        clReleaseContext(context)
    }

    /// A caller's memory object as a buffer of this context, holding one reference to it
    /// (released with the buffer) and not counted among this context's allocations. Throws
    /// when it belongs to another context.
    package func wrapBuffer(_ memory: cl_mem) throws -> OpenCLBuffer {
        var owner: cl_context? = nil
        try check(
            clGetMemObjectInfo(memory, cl_mem_info(CL_MEM_CONTEXT), MemoryLayout<cl_context>.size, &owner, nil),
            "clGetMemObjectInfo")
        guard owner == context else {
            throw OpenCLError(call: "wrap", code: CL_INVALID_MEM_OBJECT, detail: "the buffer belongs to another context")
        }
        var size = 0
        try check(
            clGetMemObjectInfo(memory, cl_mem_info(CL_MEM_SIZE), MemoryLayout<Int>.size, &size, nil), "clGetMemObjectInfo")
        try check(clRetainMemObject(memory), "clRetainMemObject")
        return OpenCLBuffer(handle: memory, byteCount: size, context: self, counted: false)
    }

    /// Runs `body`, making the first kernel it enqueues on this thread wait for `waitList` and
    /// returning the event of the last one (retained for the caller, who releases it; nil when
    /// `body` enqueued no kernel). On an in-order queue that event completes after every
    /// command `body` enqueued. Submissions do not nest. A blocking read inside `body` (a result
    /// read back to the host) waits for the wait list too.
    package func submit<T>(after waitList: [cl_event], _ body: () throws -> T) throws -> (value: T, completion: cl_event?) {
        let thread = Self.currentThreadKey
        for event in waitList { try check(clRetainEvent(event), "clRetainEvent") }
        let nested = state.withLock { state -> Bool in
            if state.submissions[thread] != nil { return true }
            state.submissions[thread] = Submission(waitList: waitList, last: nil)
            return false
        }
        if nested {
            for event in waitList { clReleaseEvent(event) }
            throw OpenCLError(call: "submit", code: CL_INVALID_OPERATION, detail: "submissions do not nest")
        }
        let value: T
        do {
            value = try body()
        } catch {
            if let submission = state.withLock({ $0.submissions.removeValue(forKey: thread) }) {
                for event in submission.waitList { clReleaseEvent(event) }
                if let last = submission.last { clReleaseEvent(last) }
            }
            throw error
        }
        let submission = state.withLock { $0.submissions.removeValue(forKey: thread) }
        for event in submission?.waitList ?? [] { clReleaseEvent(event) }
        return (value, submission?.last)
    }

    /// A snapshot of the counters.
    package var statistics: Statistics { state.withLock { $0.statistics } }

    /// Forgets every cached program (the next request rebuilds).
    package func clearProgramCache() {
        state.withLock { $0.programs.removeAll() }
    }

    // MARK: Buffers

    /// Allocates `byteCount` bytes of device memory (at least 1 byte is allocated for 0).
    ///
    /// Requests are checked against `CL_DEVICE_MAX_MEM_ALLOC_SIZE` (one buffer) and
    /// `CL_DEVICE_GLOBAL_MEM_SIZE` (with the bytes this context already holds) before the driver
    /// sees them; a refusal, or the driver's own out-of-memory status, throws an ``OpenCLError``
    /// whose code is ``OpenCLError/isOutOfMemory`` and whose detail names every size involved.
    package func makeBuffer(byteCount: Int) throws -> OpenCLBuffer {
        guard byteCount >= 0 else {
            throw OpenCLError(call: "clCreateBuffer", code: CL_INVALID_BUFFER_SIZE, detail: "\(byteCount) bytes requested")
        }
        let live = state.withLock { $0.statistics.liveBytes }
        func sizes() -> String {
            "\(byteCount) bytes (\(describeBytes(byteCount))) requested; the device \(device.name) allows "
                + "\(describeBytes(device.maxAllocationSize)) per buffer and has \(describeBytes(device.globalMemorySize)) "
                + "in all, of which this context holds \(describeBytes(live))"
        }
        guard byteCount <= device.maxAllocationSize else {
            throw OpenCLError(call: "clCreateBuffer", code: CL_INVALID_BUFFER_SIZE, detail: sizes())
        }
        guard byteCount <= device.globalMemorySize - min(live, device.globalMemorySize) else {
            throw OpenCLError(call: "clCreateBuffer", code: CL_MEM_OBJECT_ALLOCATION_FAILURE, detail: sizes())
        }
        var status: cl_int = CL_SUCCESS
        let handle = clCreateBuffer(context, cl_mem_flags(CL_MEM_READ_WRITE), max(byteCount, 4), nil, &status)
        try check(status, "clCreateBuffer", OpenCLError.isOutOfMemory(status) ? sizes() : "\(byteCount) bytes")
        guard let handle else { throw OpenCLError(call: "clCreateBuffer", code: CL_MEM_OBJECT_ALLOCATION_FAILURE) }
        state.withLock {
            $0.statistics.allocations += 1
            $0.statistics.liveBuffers += 1
            $0.statistics.liveBytes += byteCount
            $0.statistics.peakLiveBytes = max($0.statistics.peakLiveBytes, $0.statistics.liveBytes)
        }
        return OpenCLBuffer(handle: handle, byteCount: byteCount, context: self)
    }

    /// A view of `byteCount` bytes of `parent` starting at `offset`, which must be a multiple of
    /// ``baseAddressAlignment``.
    package func makeSubBuffer(of parent: OpenCLBuffer, offset: Int, byteCount: Int) throws -> OpenCLBuffer {
        var region = cl_buffer_region(origin: offset, size: byteCount)
        var status: cl_int = CL_SUCCESS
        let handle = clCreateSubBuffer(
            parent.handle, cl_mem_flags(CL_MEM_READ_WRITE), cl_buffer_create_type(CL_BUFFER_CREATE_TYPE_REGION), &region,
            &status)
        try check(status, "clCreateSubBuffer", "offset \(offset), \(byteCount) bytes")
        guard let handle else { throw OpenCLError(call: "clCreateSubBuffer", code: CL_INVALID_VALUE) }
        return OpenCLBuffer(handle: handle, byteCount: byteCount, context: self, parent: parent, parentOffset: offset)
    }

    /// Whether the device's memory is the host's (`CL_DEVICE_HOST_UNIFIED_MEMORY`: a CPU device),
    /// so that a buffer over host memory (``hostBackedBuffer(_:byteCount:)``) needs no copy.
    package var hostUnifiedMemory: Bool { device.hostUnifiedMemory }  // queried once per device

    /// A buffer over `byteCount` bytes of the caller's host memory (`CL_MEM_USE_HOST_PTR`): the
    /// kernels read and write that memory, which must stay valid while the buffer lives.
    package func hostBackedBuffer(_ memory: UnsafeMutableRawPointer, byteCount: Int) throws -> OpenCLBuffer {
        var status: cl_int = CL_SUCCESS
        let handle = clCreateBuffer(
            context, cl_mem_flags(CL_MEM_READ_WRITE) | cl_mem_flags(CL_MEM_USE_HOST_PTR), byteCount, memory, &status)
        try check(status, "clCreateBuffer", "\(byteCount) bytes of host memory")
        guard let handle else { throw OpenCLError(call: "clCreateBuffer", code: CL_INVALID_VALUE) }
        return OpenCLBuffer(handle: handle, byteCount: byteCount, context: self, counted: false)
    }

    /// Waits for the commands before it and makes a host-backed buffer's contents visible in its
    /// host memory (a blocking map and unmap, which OpenCL requires before the host reads memory
    /// that kernels wrote through `CL_MEM_USE_HOST_PTR`).
    package func publishToHost(_ buffer: OpenCLBuffer) throws {
        try state.withLock { _ in
            var status: cl_int = CL_SUCCESS
            let mapped = clEnqueueMapBuffer(
                queue, buffer.handle, cl_bool(CL_TRUE), cl_map_flags(CL_MAP_READ), 0, buffer.byteCount, 0, nil, nil,
                &status)
            try check(status, "clEnqueueMapBuffer")
            try check(clEnqueueUnmapMemObject(queue, buffer.handle, mapped, 0, nil, nil), "clEnqueueUnmapMemObject")
            try check(clFinish(queue), "clFinish")
        }
    }

    /// Alignment in bytes that sub-buffer offsets need (`CL_DEVICE_MEM_BASE_ADDR_ALIGN`).
    package var baseAddressAlignment: Int {
        var bits: cl_uint = 0
        clGetDeviceInfo(device.id, cl_device_info(CL_DEVICE_MEM_BASE_ADDR_ALIGN), MemoryLayout<cl_uint>.size, &bits, nil)
        return max(Int(bits) / 8, 4)
    }

    func noteRelease(isSubBuffer: Bool, byteCount: Int) {
        guard !isSubBuffer else { return }
        state.withLock {
            $0.statistics.liveBuffers -= 1
            $0.statistics.liveBytes -= byteCount
        }
    }

    /// Starts a new high-water mark: ``Statistics/peakLiveBytes`` becomes the bytes alive now.
    package func resetPeakLiveBytes() {
        state.withLock { $0.statistics.peakLiveBytes = $0.statistics.liveBytes }
    }

    /// Copies `byteCount` bytes at `source` into `buffer` at `byteOffset` (blocking, so the
    /// source may change or go away after).
    package func write(bytes source: UnsafeRawPointer, byteCount: Int, to buffer: OpenCLBuffer, byteOffset: Int = 0)
        throws
    {
        guard byteCount >= 0, byteOffset >= 0, byteOffset + byteCount <= buffer.byteCount else {
            throw OpenCLError(
                call: "clEnqueueWriteBuffer", code: CL_INVALID_VALUE,
                detail: "\(byteCount) bytes at \(byteOffset) do not fit a \(buffer.byteCount)-byte buffer")
        }
        guard byteCount > 0 else { return }
        try state.withLock { _ in
            try check(
                clEnqueueWriteBuffer(queue, buffer.handle, cl_bool(CL_TRUE), byteOffset, byteCount, source, 0, nil, nil),
                "clEnqueueWriteBuffer")
        }
    }

    /// Copies the first `byteCount` bytes of `buffer` to `destination` (blocking: waits for the
    /// commands before it).
    package func read(_ buffer: OpenCLBuffer, into destination: UnsafeMutableRawPointer, byteCount: Int) throws {
        guard byteCount >= 0, byteCount <= buffer.byteCount else {
            throw OpenCLError(
                call: "clEnqueueReadBuffer", code: CL_INVALID_VALUE,
                detail: "\(byteCount) bytes requested from a \(buffer.byteCount)-byte buffer")
        }
        guard byteCount > 0 else { return }
        try state.withLock { _ in
            try check(
                clEnqueueReadBuffer(queue, buffer.handle, cl_bool(CL_TRUE), 0, byteCount, destination, 0, nil, nil),
                "clEnqueueReadBuffer")
        }
    }

    /// Copies `values` into `buffer` at element `offset` (blocking, so `values` may go away after).
    package func write(_ values: [Float], to buffer: OpenCLBuffer, offset: Int = 0) throws {
        try write(bytesOf: values, to: buffer, byteOffset: offset * MemoryLayout<Float>.stride)
    }

    /// Copies raw bytes (e.g. `Int32` tables) into `buffer` at `byteOffset` (blocking).
    package func write<T>(bytesOf values: [T], to buffer: OpenCLBuffer, byteOffset: Int = 0) throws {
        try values.withUnsafeBytes { raw in
            guard let base = raw.baseAddress else { return }
            try write(bytes: base, byteCount: raw.count, to: buffer, byteOffset: byteOffset)
        }
    }

    /// Reads `count` floats from `buffer` (blocking; waits for the commands before it).
    package func read(_ buffer: OpenCLBuffer, count: Int) throws -> [Float] {
        guard count >= 0 else {
            throw OpenCLError(call: "clEnqueueReadBuffer", code: CL_INVALID_VALUE, detail: "\(count) floats requested")
        }
        var values = [Float](repeating: 0, count: count)
        try values.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            try read(buffer, into: base, byteCount: raw.count)
        }
        return values
    }

    /// Fills `buffer` with `value` on the device.
    package func fill(_ buffer: OpenCLBuffer, with value: Float) throws {
        var pattern = value
        let bytes = buffer.byteCount / 4 * 4
        // Zero-size enqueues are not portable (PoCL accepts them, the spec does not promise it);
        // read and write skip empty transfers the same way.
        guard bytes > 0 else { return }
        try state.withLock { _ in
            try check(
                clEnqueueFillBuffer(queue, buffer.handle, &pattern, 4, 0, bytes, 0, nil, nil),
                "clEnqueueFillBuffer")
        }
    }

    // MARK: Programs

    /// Returns the program for `source` built with `options`, compiling it only on the first
    /// request (the cache key is the full source text and the options, per context = per device).
    ///
    /// A miss in memory consults the disk cache: a verified entry is loaded as a binary (counted
    /// in ``Statistics/diskHits``, not ``Statistics/builds``); otherwise the program is compiled
    /// from source and its binary stored for the next process.
    package func program(source: String, options: String) throws -> OpenCLProgram {
        let key = ProgramKey(source: source, options: options)
        if let cached = state.withLock({ state -> OpenCLProgram? in
            guard let program = state.programs[key] else { return nil }
            state.statistics.cacheHits += 1
            return program
        }) {
            return cached
        }
        let diskKey = diskCache.map { _ in ProgramDiskCache.keyText(device: device, source: source, options: options) }
        var rejected = false
        if let diskCache, let diskKey {
            switch diskCache.lookup(key: diskKey) {
            case .found(let binary):
                if let program = loadBinary(binary, options: options) {
                    return state.withLock { state in
                        if let raced = state.programs[key] { return raced }
                        state.programs[key] = program
                        state.statistics.diskHits += 1
                        return program
                    }
                }
                rejected = true
            case .rejected:
                rejected = true
            case .missing:
                break
            }
        }
        let program = try build(source: source, options: options)
        // Written outside the lock: a slow disk must not stall other threads' dispatches.
        var stored: Bool? = nil
        if let diskCache, let diskKey {
            stored = binary(of: program).map { diskCache.store(key: diskKey, payload: $0) } ?? false
        }
        return state.withLock { state in
            if rejected { state.statistics.diskRejected += 1 }
            if stored == true { state.statistics.diskWrites += 1 }
            if stored == false { state.statistics.diskWriteFailures += 1 }
            if let raced = state.programs[key] { return raced }
            state.programs[key] = program
            state.statistics.builds += 1
            return program
        }
    }

    private func build(source: String, options: String) throws -> OpenCLProgram {
        var status: cl_int = CL_SUCCESS
        let handle: cl_program? = source.withCString { text in
            var pointer: UnsafePointer<CChar>? = text
            var length = source.utf8.count
            return clCreateProgramWithSource(context, 1, &pointer, &length, &status)
        }
        try check(status, "clCreateProgramWithSource")
        guard let handle else { throw OpenCLError(call: "clCreateProgramWithSource", code: CL_INVALID_PROGRAM) }
        var deviceID: cl_device_id? = device.id
        let buildStatus = options.withCString { clBuildProgram(handle, 1, &deviceID, $0, nil, nil) }
        if buildStatus != CL_SUCCESS {
            let log = buildLog(handle)
            clReleaseProgram(handle)
            throw OpenCLError(call: "clBuildProgram", code: buildStatus, detail: "options \"\(options)\"\n\(log)")
        }
        return OpenCLProgram(handle: handle, options: options)
    }

    /// A program from a cached device binary, or nil when the driver refuses it (then the caller
    /// compiles from source, as for any other bad entry).
    private func loadBinary(_ binary: [UInt8], options: String) -> OpenCLProgram? {
        var status: cl_int = CL_SUCCESS
        var binaryStatus: cl_int = CL_SUCCESS
        var deviceID: cl_device_id? = device.id
        var length = binary.count
        let handle: cl_program? = binary.withUnsafeBufferPointer { bytes in
            var pointer: UnsafePointer<UInt8>? = bytes.baseAddress
            return clCreateProgramWithBinary(context, 1, &deviceID, &length, &pointer, &binaryStatus, &status)
        }
        guard status == CL_SUCCESS, binaryStatus == CL_SUCCESS, let handle else {
            if let handle { clReleaseProgram(handle) }
            return nil
        }
        guard options.withCString({ clBuildProgram(handle, 1, &deviceID, $0, nil, nil) }) == CL_SUCCESS else {
            clReleaseProgram(handle)
            return nil
        }
        return OpenCLProgram(handle: handle, options: options)
    }

    /// The device binary of a built program (`CL_PROGRAM_BINARIES`), or nil when the driver
    /// offers none.
    private func binary(of program: OpenCLProgram) -> [UInt8]? {
        var size = 0
        guard clGetProgramInfo(program.handle, cl_program_info(CL_PROGRAM_BINARY_SIZES), MemoryLayout<Int>.size, &size, nil)
            == CL_SUCCESS, size > 0
        else { return nil }
        var bytes = [UInt8](repeating: 0, count: size)
        let status = bytes.withUnsafeMutableBufferPointer { buffer in
            var pointer: UnsafeMutablePointer<UInt8>? = buffer.baseAddress
            return clGetProgramInfo(
                program.handle, cl_program_info(CL_PROGRAM_BINARIES), MemoryLayout<UnsafeMutablePointer<UInt8>?>.size,
                &pointer, nil)
        }
        return status == CL_SUCCESS ? bytes : nil
    }

    private func buildLog(_ program: cl_program) -> String {
        var size = 0
        guard clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), 0, nil, &size)
            == CL_SUCCESS, size > 0
        else { return "(no build log)" }
        var bytes = [CChar](repeating: 0, count: size + 1)
        clGetProgramBuildInfo(program, device.id, cl_program_build_info(CL_PROGRAM_BUILD_LOG), size, &bytes, nil)
        return String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: Dispatch

    /// The work-group size a non-GPU launch over `global` gets when its caller names none: a
    /// power of four per axis (each at most the axis's size rounded up to a power of four), 64
    /// at most along axis 0 of a multi-dimensional launch, at most `items` in all. Shapes then
    /// map to a few sizes (one compiled work-group function each) instead of one per shape, and
    /// axis 0, the one a CPU driver vectorises across, stays wide. Powers of four rather than
    /// two: half the sizes per axis, for at most 4x idle items along an axis shorter than 64,
    /// where the launch is small anyway.
    package static func canonicalLocalSize(for global: [Int], items: Int = 256) -> [Int] {
        var budget = max(1, items)
        return global.indices.map { axis in
            let cap = axis == 0 && global.count > 1 ? min(64, budget) : budget
            var size = 1
            while size < global[axis] && size * 4 <= cap { size *= 4 }
            budget /= size
            return size
        }
    }

    /// The least power of two at or above `size` (1 for sizes below 2).
    package static func powerOfTwoCeiling(_ size: Int) -> Int {
        var power = 1
        while power < size { power <<= 1 }
        return power
    }

    /// Enqueues kernel `name` of `program` over `global` work items (1-3 dimensions; each size is
    /// rounded up to a multiple of the local size, so kernels must bounds-check).
    ///
    /// Without `local`, a GPU gets the driver's choice; any other device gets
    /// ``canonicalLocalSize(for:)``, because a CPU driver such as PoCL compiles a kernel anew for
    /// every distinct local size and its own choice follows the global size's divisors, so every
    /// new input shape would cost a compile of up to seconds (a cold test run compiled 9,138
    /// work-group functions, mostly for such shape-derived sizes).
    package func dispatch(
        _ name: String, in program: OpenCLProgram, arguments: [KernelArgument], global: [Int], local: [Int]? = nil
    ) throws {
        let (globalSizes, local) = try launchSizes(name, global: global, local: local)
        try state.withLock { state in
            // A cached kernel keeps the arguments of its previous launch, so a short list would
            // silently reuse them (and possibly a buffer released since) instead of failing.
            let (kernel, expected) = try program.kernel(named: name)
            guard arguments.count == expected else {
                throw OpenCLError(
                    call: "clEnqueueNDRangeKernel", code: CL_INVALID_KERNEL_ARGS,
                    detail: "\(name) takes \(expected) argument(s), \(arguments.count) given")
            }
            for (index, argument) in arguments.enumerated() {
                let status: cl_int
                switch argument {
                case .buffer(let buffer):
                    var handle: cl_mem? = buffer.handle
                    status = clSetKernelArg(kernel, cl_uint(index), MemoryLayout<cl_mem>.size, &handle)
                case .int32(let value):
                    var copy = value
                    status = clSetKernelArg(kernel, cl_uint(index), 4, &copy)
                case .float(let value):
                    var copy = value
                    status = clSetKernelArg(kernel, cl_uint(index), 4, &copy)
                case .local(let bytes):
                    status = clSetKernelArg(kernel, cl_uint(index), bytes, nil)
                }
                try check(status, "clSetKernelArg", "\(name) argument \(index)")
            }
            // An event only for a timing session: creating and releasing one per launch costs
            // the driver an allocation on every call.
            let timing = !state.timingSessions.isEmpty
            var event: cl_event? = nil
            let status = globalSizes.withUnsafeBufferPointer { globalPointer in
                withUnsafeMutablePointer(to: &event) { eventPointer in
                    let eventOut = timing ? eventPointer : nil
                    guard let local else {
                        return clEnqueueNDRangeKernel(
                            queue, kernel, cl_uint(global.count), nil, globalPointer.baseAddress, nil, 0, nil, eventOut)
                    }
                    return local.withUnsafeBufferPointer { localPointer in
                        clEnqueueNDRangeKernel(
                            queue, kernel, cl_uint(global.count), nil, globalPointer.baseAddress,
                            localPointer.baseAddress, 0, nil, eventOut)
                    }
                }
            }
            try check(status, "clEnqueueNDRangeKernel", "\(name) global \(globalSizes) local \(local ?? [])")
            state.statistics.launches += 1
            if let event { record(event, kernel: name, state: &state) }
        }
    }

    /// The global sizes rounded up to the local size, and the local size: `local`, or without
    /// it the driver's choice on a GPU and ``canonicalLocalSize(for:items:)`` elsewhere.
    func launchSizes(_ name: String, global: [Int], local: [Int]?) throws -> (global: [Int], local: [Int]?) {
        guard !global.isEmpty, global.count <= 3, global.allSatisfy({ $0 > 0 }) else {
            throw OpenCLError(call: "clEnqueueNDRangeKernel", code: CL_INVALID_GLOBAL_WORK_SIZE, detail: "\(name) \(global)")
        }
        let local =
            local ?? (device.isGPU ? nil : Self.canonicalLocalSize(for: global, items: min(256, device.maxWorkGroupSize)))
        var globalSizes = global
        if let local {
            // Checked here because the rounding below would trap on a zero or missing axis.
            guard local.count == global.count, local.allSatisfy({ $0 > 0 }) else {
                throw OpenCLError(
                    call: "clEnqueueNDRangeKernel", code: CL_INVALID_WORK_GROUP_SIZE,
                    detail: "\(name) local \(local) does not fit global \(global)")
            }
            for axis in global.indices { globalSizes[axis] = (global[axis] + local[axis] - 1) / local[axis] * local[axis] }
        }
        return (globalSizes, local)
    }

    /// Hands a launch's event to the calling thread's timing session, or releases it; the
    /// caller holds the lock.
    func record(_ event: cl_event, kernel name: String, state: inout State) {
        let thread = Self.currentThreadKey
        if state.timingSessions[thread] != nil {
            state.timingSessions[thread]?.append((name, event))
        } else {
            clReleaseEvent(event)
        }
    }

    /// Waits until every enqueued command has finished.
    package func finish() throws {
        try check(clFinish(queue), "clFinish")
    }

    /// Runs `body`, waits for the kernels it enqueued, and returns their summed device time in
    /// nanoseconds from profiling events (queue time and host overhead excluded).
    ///
    /// A session belongs to the calling thread: it counts the kernels `body` enqueues on this
    /// thread, never those another thread enqueues meanwhile (each thread may measure at the same
    /// time; the queue is shared, and each launch's event times only its own execution). Kernels
    /// that `body` hands to other threads are not counted. Sessions do not nest: a nested call
    /// on the same thread counts nothing and its kernels are counted by the outer one.
    package func measure<T>(_ body: () throws -> T) throws -> (value: T, nanoseconds: UInt64) {
        let (value, launches) = try measureLaunches(body)
        return (value, launches.reduce(0) { $0 + $1.nanoseconds })
    }

    /// Like ``measure(_:)`` but keeps every kernel launch apart, in enqueue order, with its
    /// kernel name: where a layer's time goes (border strips, temporaries, extra passes).
    package func measureLaunches<T>(_ body: () throws -> T) throws
        -> (value: T, launches: [(kernel: String, nanoseconds: UInt64)])
    {
        guard profiling else {
            throw OpenCLError(
                call: "measure", code: CL_PROFILING_INFO_NOT_AVAILABLE,
                detail: "the command queue was created without CL_QUEUE_PROFILING_ENABLE")
        }
        let thread = Self.currentThreadKey
        let nested = state.withLock { state -> Bool in
            if state.timingSessions[thread] != nil { return true }
            state.timingSessions[thread] = []
            return false
        }
        if nested { return (try body(), []) }
        var events: [(kernel: String, event: cl_event)] = []
        defer { for entry in events { clReleaseEvent(entry.event) } }
        let value: T
        do {
            value = try body()
            events = state.withLock { $0.timingSessions.removeValue(forKey: thread) ?? [] }
        } catch {
            events = state.withLock { $0.timingSessions.removeValue(forKey: thread) ?? [] }
            throw error
        }
        try finish()
        var launches: [(kernel: String, nanoseconds: UInt64)] = []
        for entry in events {
            var start: cl_ulong = 0
            var end: cl_ulong = 0
            try check(
                clGetEventProfilingInfo(
                    entry.event, cl_profiling_info(CL_PROFILING_COMMAND_START), MemoryLayout<cl_ulong>.size, &start,
                    nil),
                "clGetEventProfilingInfo")
            try check(
                clGetEventProfilingInfo(
                    entry.event, cl_profiling_info(CL_PROFILING_COMMAND_END), MemoryLayout<cl_ulong>.size, &end, nil),
                "clGetEventProfilingInfo")
            launches.append((entry.kernel, end >= start ? end - start : 0))
        }
        return (value, launches)
    }
}
