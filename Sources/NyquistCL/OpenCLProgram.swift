import COpenCL

/// A program built for one device, with its kernels created on first use.
///
/// `@unchecked Sendable`: the program handle is immutable; the kernel objects, whose argument
/// state is not thread safe, are created, configured and enqueued only while the owning
/// ``OpenCLContext`` holds its dispatch lock.
package final class OpenCLProgram: @unchecked Sendable {
    let handle: cl_program
    /// The build options it was compiled with (its `-D` specialisation).
    package let options: String
    private var kernels: [String: (kernel: cl_kernel, argumentCount: Int)] = [:]

    init(handle: cl_program, options: String) {
        self.handle = handle
        self.options = options
    }

    deinit {
        for entry in kernels.values { clReleaseKernel(entry.kernel) }
        clReleaseProgram(handle)
    }

    /// Returns the kernel called `name` with its argument count (queried once, when the kernel
    /// is created); callers hold the context's dispatch lock.
    func kernel(named name: String) throws -> (kernel: cl_kernel, argumentCount: Int) {
        if let entry = kernels[name] { return entry }
        var status: cl_int = CL_SUCCESS
        let kernel = name.withCString { clCreateKernel(handle, $0, &status) }
        try check(status, "clCreateKernel", "kernel \(name)")
        guard let kernel else { throw OpenCLError(call: "clCreateKernel", code: CL_INVALID_KERNEL, detail: name) }
        var count: cl_uint = 0
        let infoStatus = clGetKernelInfo(kernel, cl_kernel_info(CL_KERNEL_NUM_ARGS), MemoryLayout<cl_uint>.size, &count, nil)
        guard infoStatus == CL_SUCCESS else {
            clReleaseKernel(kernel)
            throw OpenCLError(call: "clGetKernelInfo", code: infoStatus, detail: name)
        }
        kernels[name] = (kernel, Int(count))
        return (kernel, Int(count))
    }
}

/// One argument of a kernel launch.
package enum KernelArgument {
    /// A global-memory buffer (`__global T*`).
    case buffer(OpenCLBuffer)
    /// A 32-bit signed integer (`int`).
    case int32(Int32)
    /// A 32-bit float (`float`).
    case float(Float)
    /// Local memory of this many bytes (`__local T*`).
    case local(Int)

    /// An `Int` passed as the kernel's `int`; throws ``OpenCLError`` (`CL_INVALID_ARG_VALUE`)
    /// when the value does not fit 32 bits, because a truncated size or pad would make the
    /// kernel index outside its buffers instead of failing.
    package static func int(_ value: Int) throws -> KernelArgument {
        guard let narrow = Int32(exactly: value) else {
            throw OpenCLError(
                call: "clSetKernelArg", code: CL_INVALID_ARG_VALUE,
                detail: "the value \(value) does not fit the kernel's 32-bit int (\(Int32.min)...\(Int32.max))")
        }
        return .int32(narrow)
    }
}
