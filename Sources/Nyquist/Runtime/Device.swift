import COpenCL
import NyquistCL
import NyquistCore
import NyquistKernels
import Synchronization

/// A compute device that runs Nyquist's operators: one OpenCL device with its own context,
/// profiling queue, program cache and cache of padding tables.
///
/// Create one per device and share it: building the kernels for an operator costs about half a
/// second the first time and nothing afterwards.
///
/// `@unchecked Sendable`: the OpenCL state lives in ``OpenCLContext`` (itself synchronised) and
/// the table cache and the tuning state are behind mutexes; nothing else is mutable.
public final class Device: @unchecked Sendable, CustomStringConvertible {
    /// The OpenCL context, queue and counters (builds, cache hits, allocations).
    package let context: OpenCLContext
    private let tables = Mutex<[AxisGeometry: AxisTableBuffers]>([:])
    private let programs = Mutex<[ProgramRequest: OpenCLProgram]>([:])
    /// Compiled passes by ``PlanKey`` (see ``compiledPass(_:build:)``).
    let plans = Mutex<[AnyPlanKey: CompiledPass]>([:])
    /// Device memory for tensors: buffers freed by dropped tensors are kept and reused.
    let allocator: CachingAllocator
    /// The tuning database (read lazily from the cache directory) and its generation.
    let tuning = Mutex(TuningState())

    /// Opens `device`; compiled kernels are also kept in `programCache` so that the next
    /// process skips the compiler (default: where the environment says, see
    /// ``ProgramCacheLocation/fromEnvironment()``).
    public convenience init(_ device: OpenCLDevice, programCache: ProgramCacheLocation = .fromEnvironment()) throws {
        self.init(context: try wrappingDriverErrors { try OpenCLContext(device: device, programCache: programCache) })
    }

    /// Runs on a caller's OpenCL objects: `context`, `device` and an in-order `queue` of them
    /// (an inference engine's, an image pipeline's). The device holds one reference to the
    /// context and the queue, released when it goes away, and never waits for the queue on its
    /// own: layer calls enqueue on it and return; only reading a result back
    /// (``DeviceTensor/toHost()``), ``synchronize()`` and the calls that read values back to
    /// compute results (training forwards that return losses, regularisers or running
    /// statistics) wait. Use ``submit(after:_:)`` to order calls after the caller's events.
    /// ``measure(_:)`` needs a queue made with `CL_QUEUE_PROFILING_ENABLE`.
    ///
    /// Throws ``NyquistError/Kind/device`` for an out-of-order queue (buffers are reused in queue
    /// order) or a queue of another context or device.
    public convenience init(
        wrapping context: cl_context, device: cl_device_id, queue: cl_command_queue,
        programCache: ProgramCacheLocation = .fromEnvironment()
    ) throws {
        self.init(
            context: try wrappingDriverErrors {
                try OpenCLContext(wrapping: context, device: device, queue: queue, programCache: programCache)
            })
    }

    private init(context: OpenCLContext) {
        self.context = context
        allocator = CachingAllocator(context: context)
    }

    /// Runs `body` (layer calls on this device) after the caller's `waitList` events: the first
    /// kernel it enqueues waits for them. Returns `body`'s value and the completion event of the
    /// last kernel it enqueued, which completes after every command of `body` (the queue is in
    /// order); the caller owns that event and releases it with `clReleaseEvent` (nil when
    /// `body` enqueued nothing). Nothing here waits, unless `body` reads a result back, which
    /// then waits for `waitList` too. Submissions on one thread do not nest.
    public func submit<T>(after waitList: [cl_event] = [], _ body: () throws -> T) throws -> (value: T, completion: cl_event?) {
        try wrappingDriverErrors { try context.submit(after: waitList, body) }
    }

    /// Opens the device that `spec` names: an index into ``all()`` or a substring of the
    /// device or platform name ("pthread", "NVIDIA", "GPU").
    public convenience init(named spec: String) throws {
        try self.init(OpenCLDevice.select(spec))
    }

    /// The default device: the one `NYQUIST_DEVICE` names if set, else the first GPU, else the
    /// first OpenCL device of any kind.
    public static func `default`() throws -> Device {
        try Device(OpenCLDevice.select(nil))
    }

    /// Every OpenCL device on this machine (not opened).
    public static func all() throws -> [OpenCLDevice] {
        try OpenCLDevice.all()
    }

    /// Facts about the device (name, type, driver, memory sizes).
    public var info: OpenCLDevice { context.device }

    /// The device name, e.g. "NVIDIA H100" or "pthread-haswell-AMD EPYC".
    public var name: String { context.device.name }

    public var description: String { context.device.description }

    /// Runs `body` and returns its value with the summed kernel time, in seconds, of the
    /// kernels it enqueued (from OpenCL profiling events; transfers and host time excluded).
    public func measure<T>(_ body: () throws -> T) throws -> (value: T, kernelSeconds: Double) {
        let (value, nanoseconds) = try wrappingDriverErrors { try context.measure(body) }
        return (value, Double(nanoseconds) * 1e-9)
    }

    /// Waits for every queued command.
    public func synchronize() throws {
        try wrappingDriverErrors { try context.finish() }
    }

    // MARK: Internals shared by the operators

    /// The program built from kernel file `file` with `defines`, from the cache when possible.
    ///
    /// Requests are remembered by (file, defines), so a repeated request costs one dictionary
    /// lookup: the sources are spliced, the options formatted and the program cache keyed by the
    /// full text only on the first request for each.
    func program(_ file: String, defines: [String: Int] = [:]) throws -> OpenCLProgram {
        let request = ProgramRequest(file: file, defines: defines)
        if let known = programs.withLock({ $0[request] }) { return known }
        let source = try KernelLibrary.source(of: file)
        // `-w`: the kernels are linted warning-free with clang at development time, but PoCL's
        // compiler writes "N warnings generated." to the process's stderr for target-ABI notes
        // (vectors wider than its native width crossing calls); a user's first run must not
        // print compiler noise into the CLI's one-line error contract.
        let options = (["-cl-std=CL1.2", "-w"] + defines.sorted { $0.key < $1.key }.map { "-D\($0.key)=\($0.value)" })
            .joined(separator: " ")
        let program = try context.program(source: source, options: options)
        programs.withLock { $0[request] = program }
        return program
    }

    /// Device copies of the padding tables for one axis, built once per geometry.
    func axisTables(_ geometry: AxisGeometry) throws -> AxisTableBuffers {
        if let cached = tables.withLock({ $0[geometry] }) { return cached }
        let built = try AxisTableBuffers(AxisTables(geometry), context: context)
        return tables.withLock { cache in
            if let raced = cache[geometry] { return raced }
            cache[geometry] = built
            return built
        }
    }
}

/// One program request: a kernel file and its -D defines.
struct ProgramRequest: Hashable {
    let file: String
    let defines: [String: Int]
}

/// The OpenCL C sources, from the binary or from `NYQUIST_KERNEL_DIR`, with `#include "x"` lines
/// replaced by the included file so each program is one self-contained string.
enum KernelLibrary {
    static func source(of file: String) throws -> String {
        let text = try raw(file)
        var lines: [Substring] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let trimmed = line.drop { $0 == " " }
            if trimmed.hasPrefix("#include \""), let name = trimmed.split(separator: "\"").dropFirst().first {
                lines.append(Substring(try raw(String(name))))
            } else {
                lines.append(line)
            }
        }
        return lines.joined(separator: "\n")
    }

    private static func raw(_ file: String) throws -> String {
        if let directory = environment("NYQUIST_KERNEL_DIR"), !directory.isEmpty {
            let path = directory.hasSuffix("/") ? directory + file : directory + "/" + file
            guard let text = readTextFile(path) else {
                throw NyquistError(.io, "cannot read the kernel file \(path) (NYQUIST_KERNEL_DIR)")
            }
            return text
        }
        guard let text = KernelSources.files[file] else {
            throw NyquistError(.unsupported, "this build embeds no kernel file \(file)")
        }
        return text
    }
}

extension Device {
    /// Enqueues a kernel that does nothing (one work item, Kernels/copy.cl) through the same
    /// prepared-launch path as the operators, without waiting: followed by ``synchronize()``,
    /// the least any operator call can cost on this device (the benchmarks' launch floor).
    public func enqueueEmptyKernel() throws {
        let key = PlanKey(configuration: BaselineKernel.empty, pass: .forward, input: try Shape4D(n: 1, c: 1, h: 1, w: 1))
        try compiledPass(key) {
            [try context.prepare("empty_kernel", in: try program("copy.cl"), arguments: [], global: [1])]
        }.run(on: self)
    }

    /// A new tensor holding a copy of `source`, made on the device (enqueued, not waited for).
    public func copy(_ source: DeviceTensor) throws -> DeviceTensor {
        let destination = try DeviceTensor(shape: source.shape, on: self)
        try copy(source, into: destination)
        return destination
    }

    /// Copies `source` into `destination` with the bandwidth-baseline kernel (Kernels/copy.cl);
    /// the benchmarks time it to get the device's practical memory roofline.
    public func copy(_ source: DeviceTensor, into destination: DeviceTensor) throws {
        guard source.count == destination.count, source.device === self, destination.device === self else {
            throw NyquistError(
                .invalidShape, "copy: \(source.shape) and \(destination.shape) must have equal sizes on this device")
        }
        // Buffers: 0 source, 1 destination.
        let count = source.count
        let key = PlanKey(configuration: BaselineKernel.copy, pass: .forward, input: try Shape4D(n: 1, c: 1, h: 1, w: count))
        try compiledPass(key) {
            [
                try context.prepare(
                    "copy_float4", in: try program("copy.cl"), arguments: [.bound(0), .bound(1), .int(count)],
                    global: [(count + 3) / 4])
            ]
        }.run(on: self, source.buffer, destination.buffer)
    }
}

/// The plan key's configuration of the benchmarks' baseline kernels (Kernels/copy.cl), which
/// have no options.
enum BaselineKernel: Hashable, Sendable {
    /// ``Device/copy(_:into:)``.
    case copy
    /// ``Device/enqueueEmptyKernel()``.
    case empty
}

/// What a device has done so far: what it compiled, what it launched, what it allocated from
/// the driver (see ``Device/statistics``; tensor requests are in ``Device/memoryStatistics``).
public struct DeviceStatistics: Sendable, Equatable {
    /// Programs compiled from source.
    public let builds: Int
    /// Programs loaded from the on-disk cache instead of compiled.
    public let diskCacheHits: Int
    /// Kernel launches.
    public let launches: Int
    /// Device buffers allocated from the driver (the caching allocator makes this stop growing
    /// once every size a program uses has been seen).
    public let driverAllocations: Int
    /// Bytes of device memory held now, the cache's included.
    public let liveBytes: Int
}

extension Device {
    /// A snapshot of the device's counters: builds, launches, driver allocations.
    public var statistics: DeviceStatistics {
        let counters = context.statistics
        return DeviceStatistics(
            builds: counters.builds, diskCacheHits: counters.diskHits, launches: counters.launches,
            driverAllocations: counters.allocations, liveBytes: counters.liveBytes)
    }
}
