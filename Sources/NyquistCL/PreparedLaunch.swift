import COpenCL

/// One argument of a ``PreparedLaunch``: either fixed when the launch is prepared, or bound to
/// one of the buffers (or scalars) passed to each ``OpenCLContext/enqueue(_:buffers:scalars:)``.
package enum LaunchArgument {
    /// The call's buffer number `index` (the input, the output, a temporary, ...).
    case bound(Int)
    /// A buffer fixed for the launch's lifetime (a constant table); the launch keeps it alive.
    case buffer(OpenCLBuffer)
    /// A 32-bit signed integer (`int`).
    case int32(Int32)
    /// A 32-bit float (`float`).
    case float(Float)
    /// A `float` set on each call: `factor` times the call's scalar number `index`, multiplied
    /// in `Double` and rounded once (a loss weight scaled by a count fixed with the shape), so
    /// values that change from call to call share one launch.
    case scaled(Int, factor: Double)
    /// Local memory of this many bytes (`__local T*`).
    case local(Int)

    /// An `Int` passed as the kernel's `int`; throws ``OpenCLError`` (`CL_INVALID_ARG_VALUE`)
    /// when it does not fit 32 bits (see ``KernelArgument/int(_:)``).
    package static func int(_ value: Int) throws -> LaunchArgument {
        guard case .int32(let narrow) = try KernelArgument.int(value) else {
            throw OpenCLError(call: "clSetKernelArg", code: CL_INVALID_ARG_VALUE, detail: "\(value)")
        }
        return .int32(narrow)
    }
}

/// A kernel launch decided once: its own `cl_kernel` with every fixed argument already set (the
/// argument count checked against the kernel when prepared), its global size rounded to its
/// local size. Enqueueing it sets only the bound buffers; nothing is looked up, formatted or
/// queried on that path.
///
/// `@unchecked Sendable`: the kernel object is private to this launch and its arguments are set
/// only while the owning ``OpenCLContext`` holds its lock (at preparation and in `enqueue`).
package final class PreparedLaunch: @unchecked Sendable, CustomStringConvertible {
    /// The kernel's name (what timing sessions report).
    package let name: String
    let kernel: cl_kernel
    let dimensions: cl_uint
    let global: [Int]
    let local: [Int]?
    /// (argument index, buffer number) of each bound argument.
    let bindings: [(argument: cl_uint, buffer: Int)]
    /// The most buffer numbers the launch reads (its highest bound number + 1).
    package let bufferCount: Int
    /// (argument index, scalar number, factor) of each per-call `float`.
    let scalarBindings: [(argument: cl_uint, scalar: Int, factor: Double)]
    /// The most scalar numbers the launch reads (its highest scalar number + 1).
    let scalarCount: Int
    // Kept alive: the kernel's fixed arguments point at these, and the kernel at the program.
    private let program: OpenCLProgram
    private let constants: [OpenCLBuffer]

    init(
        name: String, kernel: cl_kernel, global: [Int], local: [Int]?, bindings: [(cl_uint, Int)],
        scalarBindings: [(cl_uint, Int, Double)], program: OpenCLProgram, constants: [OpenCLBuffer]
    ) {
        self.name = name
        self.kernel = kernel
        self.dimensions = cl_uint(global.count)
        self.global = global
        self.local = local
        self.bindings = bindings
        self.bufferCount = (bindings.map(\.1).max() ?? -1) + 1
        self.scalarBindings = scalarBindings
        self.scalarCount = (scalarBindings.map(\.1).max() ?? -1) + 1
        self.program = program
        self.constants = constants
    }

    deinit { clReleaseKernel(kernel) }

    package var description: String { "\(name) global \(global) local \(local.map { "\($0)" } ?? "driver")" }
}

extension OpenCLContext {
    /// Prepares kernel `name` of `program` over `global` work items (1-3 dimensions; rounded up
    /// to a multiple of the local size, so kernels must bounds-check), with the local size rule
    /// of ``dispatch(_:in:arguments:global:local:)``. Throws when the kernel does not exist, when
    /// `arguments` does not match its argument count, or when a fixed argument is refused.
    package func prepare(
        _ name: String, in program: OpenCLProgram, arguments: [LaunchArgument], global: [Int], local: [Int]? = nil
    ) throws -> PreparedLaunch {
        let (globalSizes, localSizes) = try launchSizes(name, global: global, local: local)
        var status: cl_int = CL_SUCCESS
        let created = name.withCString { clCreateKernel(program.handle, $0, &status) }
        try check(status, "clCreateKernel", "kernel \(name)")
        guard let kernel = created else { throw OpenCLError(call: "clCreateKernel", code: CL_INVALID_KERNEL, detail: name) }
        var expected: cl_uint = 0
        let infoStatus = clGetKernelInfo(
            kernel, cl_kernel_info(CL_KERNEL_NUM_ARGS), MemoryLayout<cl_uint>.size, &expected, nil)
        guard infoStatus == CL_SUCCESS, arguments.count == Int(expected) else {
            clReleaseKernel(kernel)
            try check(infoStatus, "clGetKernelInfo", name)
            throw OpenCLError(
                call: "clSetKernelArg", code: CL_INVALID_KERNEL_ARGS,
                detail: "\(name) takes \(expected) argument(s), \(arguments.count) given")
        }
        var bindings: [(cl_uint, Int)] = []
        var scalarBindings: [(cl_uint, Int, Double)] = []
        var constants: [OpenCLBuffer] = []
        do {
            try state.withLock { _ in
                for (index, argument) in arguments.enumerated() {
                    let position = cl_uint(index)
                    let status: cl_int
                    switch argument {
                    case .bound(let number):
                        guard number >= 0 else {
                            throw OpenCLError(
                                call: "clSetKernelArg", code: CL_INVALID_ARG_INDEX, detail: "\(name) buffer number \(number)")
                        }
                        bindings.append((position, number))
                        continue
                    case .scaled(let number, let factor):
                        guard number >= 0 else {
                            throw OpenCLError(
                                call: "clSetKernelArg", code: CL_INVALID_ARG_INDEX, detail: "\(name) scalar number \(number)")
                        }
                        scalarBindings.append((position, number, factor))
                        continue
                    case .buffer(let buffer):
                        constants.append(buffer)
                        var handle: cl_mem? = buffer.handle
                        status = clSetKernelArg(kernel, position, MemoryLayout<cl_mem>.size, &handle)
                    case .int32(let value):
                        var copy = value
                        status = clSetKernelArg(kernel, position, 4, &copy)
                    case .float(let value):
                        var copy = value
                        status = clSetKernelArg(kernel, position, 4, &copy)
                    case .local(let bytes):
                        status = clSetKernelArg(kernel, position, bytes, nil)
                    }
                    try check(status, "clSetKernelArg", "\(name) argument \(index)")
                }
            }
        } catch {
            clReleaseKernel(kernel)
            throw error
        }
        return PreparedLaunch(
            name: name, kernel: kernel, global: globalSizes, local: localSizes, bindings: bindings,
            scalarBindings: scalarBindings, program: program, constants: constants)
    }

    /// Enqueues `launches` in order, binding each launch's `.bound(i)` arguments to
    /// `buffers[i]` and its `.scaled(i, factor)` ones to `factor * scalars[i]`; returns without
    /// waiting. Launches of one call go out under one lock, so another thread's launches never
    /// interleave with them.
    package func enqueue(_ launches: [PreparedLaunch], buffers: [OpenCLBuffer], scalars: [Double] = []) throws {
        try state.withLock { state in
            let timing = !state.timingSessions.isEmpty
            for launch in launches {
                guard launch.bufferCount <= buffers.count else {
                    throw OpenCLError(
                        call: "clSetKernelArg", code: CL_INVALID_KERNEL_ARGS,
                        detail: "\(launch.name) binds \(launch.bufferCount) buffer(s), \(buffers.count) given")
                }
                for binding in launch.bindings {
                    var handle: cl_mem? = buffers[binding.buffer].handle
                    try check(
                        clSetKernelArg(launch.kernel, binding.argument, MemoryLayout<cl_mem>.size, &handle),
                        "clSetKernelArg", "\(launch.name) argument \(binding.argument)")
                }
                guard launch.scalarCount <= scalars.count else {
                    throw OpenCLError(
                        call: "clSetKernelArg", code: CL_INVALID_KERNEL_ARGS,
                        detail: "\(launch.name) reads \(launch.scalarCount) scalar(s), \(scalars.count) given")
                }
                for binding in launch.scalarBindings {
                    var value = Float(binding.factor * scalars[binding.scalar])
                    try check(
                        clSetKernelArg(launch.kernel, binding.argument, 4, &value), "clSetKernelArg",
                        "\(launch.name) argument \(binding.argument)")
                }
                try enqueueLocked(launch, state: &state, timing: timing)
            }
        }
    }

    /// Enqueues one prepared launch; the caller holds the lock.
    private func enqueueLocked(_ launch: PreparedLaunch, state: inout State, timing: Bool) throws {
        let thread = Self.currentThreadKey
        let submitting = state.submissions[thread] != nil
        let waitList = state.submissions[thread]?.waitList ?? []
        let waits: [cl_event?] = waitList.map { $0 }
        var event: cl_event? = nil
        let status = launch.global.withUnsafeBufferPointer { global in
            waits.withUnsafeBufferPointer { waits in
                withUnsafeMutablePointer(to: &event) { eventPointer in
                    let eventOut = timing || submitting ? eventPointer : nil
                    let waitCount = cl_uint(waits.count)
                    let waitPointer = waits.isEmpty ? nil : waits.baseAddress
                    guard let local = launch.local else {
                        return clEnqueueNDRangeKernel(
                            queue, launch.kernel, launch.dimensions, nil, global.baseAddress, nil, waitCount, waitPointer,
                            eventOut)
                    }
                    return local.withUnsafeBufferPointer { local in
                        clEnqueueNDRangeKernel(
                            queue, launch.kernel, launch.dimensions, nil, global.baseAddress, local.baseAddress, waitCount,
                            waitPointer, eventOut)
                    }
                }
            }
        }
        try check(status, "clEnqueueNDRangeKernel", launch.description)
        state.statistics.launches += 1
        guard let event else { return }
        if submitting {
            // The first launch took the wait list; later ones follow it in queue order.
            for waited in waitList { clReleaseEvent(waited) }
            state.submissions[thread]?.waitList = []
            if let previous = state.submissions[thread]?.last { clReleaseEvent(previous) }
            if timing { clRetainEvent(event) }
            state.submissions[thread]?.last = event
            if !timing { return }
        }
        record(event, kernel: launch.name, state: &state)
    }
}
