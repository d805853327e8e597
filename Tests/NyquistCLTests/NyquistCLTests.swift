import NyquistCL
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Tests of the thin OpenCL runtime. Every test makes its own context so that the statistics it
// asserts on are not disturbed by tests running in parallel, and selects device "0" explicitly
// so that results do not depend on NYQUIST_DEVICE. Contexts keep programs in memory only, so
// that `builds` counts compilations whatever an earlier run left in the user's disk cache; the
// disk cache has its own suite (ProgramDiskCacheTests) with temporary directories.

private func makeContext() throws -> OpenCLContext {
    try OpenCLContext(device: OpenCLDevice.select("0"), programCache: .memoryOnly)
}

/// y = 2x + b over the first n elements; launched with a rounded-up global size, hence the check.
private let axpbSource = """
    __kernel void axpb(__global const float *x, __global float *y, int n, float b) {
        int i = get_global_id(0);
        if (i < n) y[i] = 2.0f * x[i] + b;
    }
    """

/// Scales by a compile-time SCALE so that `-D` options change the program.
private let scaleSource = """
    __kernel void scale(__global float *y, int n) {
        int i = get_global_id(0);
        if (i < n) y[i] = y[i] * SCALE;
    }
    """

/// Enough arithmetic per work item for the profiling events to report a non-zero duration.
private let busySource = """
    __kernel void busy(__global float *y, int n, int iterations) {
        int i = get_global_id(0);
        if (i >= n) return;
        float v = (float)i;
        for (int k = 0; k < iterations; ++k) v = sin(v) * 0.5f + 1.0f;
        y[i] = v;
    }
    """

/// Reverses each work group's slice through local memory (exercises `.local` arguments).
private let reverseSource = """
    __kernel void reverse_groups(__global const float *x, __global float *y, __local float *scratch) {
        int lid = get_local_id(0);
        int size = get_local_size(0);
        scratch[lid] = x[get_global_id(0)];
        barrier(CLK_LOCAL_MEM_FENCE);
        y[get_global_id(0)] = scratch[size - 1 - lid];
    }
    """

/// Gathers x through an int index table (exercises `write(bytesOf:)`).
private let gatherSource = """
    __kernel void gather(__global const float *x, __global const int *index, __global float *y, int n) {
        int i = get_global_id(0);
        if (i < n) y[i] = x[index[i]];
    }
    """

private func axpbExpected(_ x: [Float], _ b: Float) -> [Float] { x.map { 2 * $0 + b } }

private func environment(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}

// MARK: - Errors

@Suite struct OpenCLErrorTests {
    @Test func namesOfStatusCodes() {
        #expect(OpenCLError.name(of: 0) == "CL_SUCCESS")
        #expect(OpenCLError.name(of: -1) == "CL_DEVICE_NOT_FOUND")
        #expect(OpenCLError.name(of: -5) == "CL_OUT_OF_RESOURCES")
        #expect(OpenCLError.name(of: -11) == "CL_BUILD_PROGRAM_FAILURE")
        #expect(OpenCLError.name(of: -46) == "CL_INVALID_KERNEL_NAME")
        #expect(OpenCLError.name(of: -52) == "CL_INVALID_KERNEL_ARGS")
        #expect(OpenCLError.name(of: -54) == "CL_INVALID_WORK_GROUP_SIZE")
        #expect(OpenCLError.name(of: -68) == "CL_INVALID_DEVICE_PARTITION_COUNT")
        #expect(OpenCLError.name(of: -1001).hasPrefix("CL_PLATFORM_NOT_FOUND_KHR"))
        #expect(OpenCLError.name(of: 12345) == "unknown OpenCL status")
        #expect(OpenCLError.name(of: -20) == "unknown OpenCL status")
    }

    @Test func descriptionFormat() {
        let plain = OpenCLError(call: "clFinish", code: -5)
        #expect(plain.codeName == "CL_OUT_OF_RESOURCES")
        #expect(plain.detail.isEmpty)
        #expect(plain.description == "clFinish failed with CL_OUT_OF_RESOURCES (-5)")
        let detailed = OpenCLError(call: "clCreateKernel", code: -46, detail: "kernel foo")
        #expect(detailed.description == "clCreateKernel failed with CL_INVALID_KERNEL_NAME (-46): kernel foo")
        #expect("\(detailed)" == detailed.description)
    }
}

// MARK: - Devices

@Suite struct DeviceTests {
    @Test func listingIsNonEmptyWithNames() throws {
        let devices = try OpenCLDevice.all()
        #expect(!devices.isEmpty)
        for (position, device) in devices.enumerated() {
            #expect(device.index == position)
            #expect(!device.name.isEmpty)
            #expect(!device.platformName.isEmpty)
            #expect(["GPU", "CPU", "accelerator", "other"].contains(device.typeName))
            #expect(device.isGPU == (device.typeName == "GPU"))
            #expect(device.maxWorkGroupSize > 0)
            #expect(device.computeUnits > 0)
            #expect(device.maxAllocationSize > 0)
            #expect(device.globalMemorySize >= device.maxAllocationSize)
            #expect(device.description.hasPrefix("[\(position)] \(device.name)"))
        }
    }

    @Test func selectDefaultReturnsADevice() throws {
        let devices = try OpenCLDevice.all()
        let requested = environment("NYQUIST_DEVICE") ?? ""
        if requested.isEmpty {
            // Without NYQUIST_DEVICE the rule is: first GPU, else first device.
            let expected = devices.first(where: \.isGPU) ?? devices[0]
            #expect(try OpenCLDevice.select(nil).index == expected.index)
            #expect(try OpenCLDevice.select("").index == expected.index)
        } else if let byEnvironment = try? OpenCLDevice.select(requested) {
            // With it, nil means "what NYQUIST_DEVICE says".
            #expect(try OpenCLDevice.select(nil).index == byEnvironment.index)
        } else {
            #expect(throws: OpenCLError.self) { try OpenCLDevice.select(nil) }
        }
    }

    @Test func selectByIndex() throws {
        let devices = try OpenCLDevice.all()
        #expect(try OpenCLDevice.select("0").index == 0)
        #expect(try OpenCLDevice.select("0").name == devices[0].name)
        #expect(try OpenCLDevice.select("  0 \n").index == 0)
        let last = devices.count - 1
        #expect(try OpenCLDevice.select("\(last)").index == last)
    }

    @Test func selectByNameSubstringIgnoresCase() throws {
        let devices = try OpenCLDevice.all()
        let name = devices[0].name
        // A piece from the middle of the name, upper-cased: matching is by case-insensitive substring.
        let start = name.index(name.startIndex, offsetBy: name.count / 4)
        let end = name.index(start, offsetBy: max(1, name.count / 2))
        let needle = String(name[start..<end]).uppercased()
        let expected = try #require(devices.first { $0.name.lowercased().contains(needle.lowercased()) })
        #expect(try OpenCLDevice.select(needle).index == expected.index)
        #expect(try OpenCLDevice.select(name).name == name)
        // The platform name is searched too.
        let platform = devices[0].platformName
        #expect(try OpenCLDevice.select(platform.lowercased()).platformName == platform)
        // And the device type, exactly.
        #expect(try OpenCLDevice.select(devices[0].typeName.lowercased()).typeName == devices[0].typeName)
    }

    @Test(arguments: ["no-such-device", "99", "-1"])
    func selectUnknownListsAvailableDevices(spec: String) throws {
        let devices = try OpenCLDevice.all()
        let error = try #require(throws: OpenCLError.self) { try OpenCLDevice.select(spec) }
        #expect(error.call == "selectDevice")
        #expect(error.codeName == "CL_DEVICE_NOT_FOUND")
        for device in devices {
            #expect(error.description.contains(device.description))
        }
    }
}

// MARK: - Programs

@Suite struct ProgramCacheTests {
    @Test func sameSourceAndOptionsBuildOnce() throws {
        let context = try makeContext()
        let first = try context.program(source: axpbSource, options: "")
        let second = try context.program(source: axpbSource, options: "")
        #expect(first === second)
        #expect(context.statistics.builds == 1)
        #expect(context.statistics.cacheHits == 1)
    }

    @Test func differentDefinesBuildAnotherProgram() throws {
        let context = try makeContext()
        let two = try context.program(source: scaleSource, options: "-DSCALE=2.0f")
        let three = try context.program(source: scaleSource, options: "-DSCALE=3.0f")
        #expect(two !== three)
        #expect(two.options == "-DSCALE=2.0f")
        #expect(three.options == "-DSCALE=3.0f")
        #expect(context.statistics.builds == 2)
        #expect(context.statistics.cacheHits == 0)
        #expect(try context.program(source: scaleSource, options: "-DSCALE=3.0f") === three)
        #expect(context.statistics.cacheHits == 1)

        // The specialisation is really compiled in.
        let buffer = try context.makeBuffer(byteCount: 4 * 4)
        try context.write([1, 2, 3, 4], to: buffer)
        try context.dispatch("scale", in: two, arguments: [.buffer(buffer), .int(4)], global: [4])
        try context.dispatch("scale", in: three, arguments: [.buffer(buffer), .int(4)], global: [4])
        #expect(try context.read(buffer, count: 4) == [6, 12, 18, 24])
    }

    @Test func clearingTheCacheForcesARebuild() throws {
        let context = try makeContext()
        let first = try context.program(source: axpbSource, options: "")
        context.clearProgramCache()
        let second = try context.program(source: axpbSource, options: "")
        #expect(first !== second)
        #expect(context.statistics.builds == 2)
        #expect(context.statistics.cacheHits == 0)
        // A program obtained before the clear stays usable.
        let x = try context.makeBuffer(byteCount: 4)
        let y = try context.makeBuffer(byteCount: 4)
        try context.write([5], to: x)
        try context.dispatch("axpb", in: first, arguments: [.buffer(x), .buffer(y), .int(1), .float(1)], global: [1])
        #expect(try context.read(y, count: 1) == [11])
    }

    @Test func buildErrorCarriesTheCompilerMessage() throws {
        let context = try makeContext()
        let source = """
            __kernel void broken(__global float *y) {
                y[0] = nyquist_undeclared_identifier;
            }
            """
        let error = try #require(throws: OpenCLError.self) {
            try context.program(source: source, options: "-DMARKER=1")
        }
        #expect(error.call == "clBuildProgram")
        #expect(error.codeName == "CL_BUILD_PROGRAM_FAILURE")
        #expect(error.detail.contains("nyquist_undeclared_identifier"))
        #expect(error.detail.contains("-DMARKER=1"))
        #expect(error.description.contains("nyquist_undeclared_identifier"))
        // A failed build is neither cached nor counted.
        #expect(context.statistics.builds == 0)
        #expect(throws: OpenCLError.self) { try context.program(source: source, options: "-DMARKER=1") }
        #expect(context.statistics.cacheHits == 0)
    }
}

// MARK: - Dispatch

@Suite struct DispatchTests {
    @Test func axpbWithRoundedUpGlobalSize() throws {
        let context = try makeContext()
        let program = try context.program(source: axpbSource, options: "")
        let n = 13
        let x = (0..<n).map { Float($0) - 4.5 }
        let xBuffer = try context.makeBuffer(byteCount: n * 4)
        // y is one work group (16 floats) long so that a missing bounds check would be visible.
        let yBuffer = try context.makeBuffer(byteCount: 16 * 4)
        try context.write(x, to: xBuffer)
        try context.fill(yBuffer, with: -7)
        #expect(context.statistics.launches == 0)
        try context.dispatch(
            "axpb", in: program, arguments: [.buffer(xBuffer), .buffer(yBuffer), .int(n), .float(0.25)],
            global: [n], local: [8])
        #expect(context.statistics.launches == 1)
        let y = try context.read(yBuffer, count: 16)
        #expect(Array(y[..<n]) == axpbExpected(x, 0.25))
        #expect(Array(y[n...]) == [-7, -7, -7])

        // Without a local size, and again with other arguments: the kernel object is reused.
        try context.dispatch(
            "axpb", in: program, arguments: [.buffer(xBuffer), .buffer(yBuffer), .int32(Int32(n)), .float(-1)],
            global: [n])
        #expect(context.statistics.launches == 2)
        #expect(try context.read(yBuffer, count: n) == axpbExpected(x, -1))
    }

    /// Shapes that differ only within a power-of-four bucket share one local size (one compiled
    /// work-group function on a CPU driver), axis 0 stays the widest, and no size exceeds the
    /// item budget or its axis rounded up.
    @Test func canonicalLocalSizesFollowPowerOfFourBuckets() {
        #expect(OpenCLContext.canonicalLocalSize(for: [7, 36, 15]) == [16, 16, 1])
        #expect(OpenCLContext.canonicalLocalSize(for: [5, 33, 9]) == [16, 16, 1])
        #expect(OpenCLContext.canonicalLocalSize(for: [112, 112, 512]) == [64, 4, 1])
        #expect(OpenCLContext.canonicalLocalSize(for: [2, 56, 512]) == [4, 64, 1])
        #expect(OpenCLContext.canonicalLocalSize(for: [1, 1, 3]) == [1, 1, 4])
        #expect(OpenCLContext.canonicalLocalSize(for: [1_000_000]) == [256])
        #expect(OpenCLContext.canonicalLocalSize(for: [3]) == [4])
        let powersOfFour: Set = [1, 4, 16, 64, 256]
        for global in [[1], [300], [5, 7], [70, 3], [9, 9, 9], [1, 500, 2], [4096, 4096, 4096]] {
            let local = OpenCLContext.canonicalLocalSize(for: global)
            #expect(local.count == global.count)
            #expect(local.reduce(1, *) <= 256, "\(global) -> \(local)")
            for (size, extent) in zip(local, global) {
                #expect(powersOfFour.contains(size) && size < 4 * max(extent, 1), "\(global) -> \(local)")
            }
        }
        #expect([0, 1, 2, 3, 64, 65].map(OpenCLContext.powerOfTwoCeiling) == [1, 1, 2, 4, 64, 128])
        // A device whose work-groups hold fewer items gets groups within its limit.
        #expect(OpenCLContext.canonicalLocalSize(for: [112, 112, 512], items: 128) == [64, 1, 1])
        #expect(OpenCLContext.canonicalLocalSize(for: [9, 9, 9], items: 32) == [16, 1, 1])
        #expect(OpenCLContext.canonicalLocalSize(for: [1000], items: 100) == [64])
    }

    /// A launch without a local size on a CPU device is rounded up to the canonical size; a
    /// bounds-checked kernel then writes exactly its n elements for awkward n.
    @Test(arguments: [1, 13, 257, 1001])
    func defaultLocalSizeRoundsUpSafely(n: Int) throws {
        let context = try makeContext()
        let program = try context.program(source: axpbSource, options: "")
        let x = (0..<n).map { Float($0) * 0.5 }
        let padded = OpenCLContext.powerOfTwoCeiling(n) + 256
        let xBuffer = try context.makeBuffer(byteCount: n * 4)
        let yBuffer = try context.makeBuffer(byteCount: padded * 4)
        try context.write(x, to: xBuffer)
        try context.fill(yBuffer, with: -7)
        try context.dispatch(
            "axpb", in: program, arguments: [.buffer(xBuffer), .buffer(yBuffer), .int(n), .float(1)], global: [n])
        let y = try context.read(yBuffer, count: padded)
        #expect(Array(y[..<n]) == axpbExpected(x, 1))
        #expect(y[n...].allSatisfy { $0 == -7 })
    }

    @Test func localMemoryArgument() throws {
        let context = try makeContext()
        let program = try context.program(source: reverseSource, options: "")
        let x = (0..<16).map(Float.init)
        let xBuffer = try context.makeBuffer(byteCount: 16 * 4)
        let yBuffer = try context.makeBuffer(byteCount: 16 * 4)
        try context.write(x, to: xBuffer)
        try context.dispatch(
            "reverse_groups", in: program, arguments: [.buffer(xBuffer), .buffer(yBuffer), .local(8 * 4)],
            global: [16], local: [8])
        #expect(try context.read(yBuffer, count: 16) == [7, 6, 5, 4, 3, 2, 1, 0, 15, 14, 13, 12, 11, 10, 9, 8])
    }

    @Test func intTableWrittenAsBytes() throws {
        let context = try makeContext()
        let program = try context.program(source: gatherSource, options: "")
        let x: [Float] = [10, 11, 12, 13]
        let index: [Int32] = [3, 3, 0, 2, 1]
        let xBuffer = try context.makeBuffer(byteCount: 4 * 4)
        let indexBuffer = try context.makeBuffer(byteCount: 5 * 4)
        let yBuffer = try context.makeBuffer(byteCount: 5 * 4)
        try context.write(x, to: xBuffer)
        try context.write(bytesOf: index, to: indexBuffer)
        try context.dispatch(
            "gather", in: program, arguments: [.buffer(xBuffer), .buffer(indexBuffer), .buffer(yBuffer), .int(5)],
            global: [5])
        #expect(try context.read(yBuffer, count: 5) == [13, 13, 10, 12, 11])
        #expect(throws: OpenCLError.self) {
            try context.write(bytesOf: [Int32](repeating: 0, count: 6), to: indexBuffer)
        }
    }

    @Test func unknownKernelName() throws {
        let context = try makeContext()
        let program = try context.program(source: axpbSource, options: "")
        let buffer = try context.makeBuffer(byteCount: 4)
        let error = try #require(throws: OpenCLError.self) {
            try context.dispatch("no_such_kernel", in: program, arguments: [.buffer(buffer)], global: [1])
        }
        #expect(error.call == "clCreateKernel")
        #expect(error.codeName == "CL_INVALID_KERNEL_NAME")
        #expect(error.detail.contains("no_such_kernel"))
        #expect(context.statistics.launches == 0)
    }

    @Test func missingArgumentsOnAFreshKernel() throws {
        let context = try makeContext()
        let program = try context.program(source: axpbSource, options: "")
        let x = try context.makeBuffer(byteCount: 4)
        let error = try #require(throws: OpenCLError.self) {
            try context.dispatch("axpb", in: program, arguments: [.buffer(x)], global: [1])
        }
        #expect(error.call == "clEnqueueNDRangeKernel")
        #expect(error.codeName == "CL_INVALID_KERNEL_ARGS")
        #expect(context.statistics.launches == 0)
    }

    /// The kernel object is cached and keeps the arguments of its previous launch; a later launch
    /// with too few arguments must not silently reuse them (they may name released buffers).
    @Test func missingArgumentsAfterAFullLaunch() throws {
        let context = try makeContext()
        let program = try context.program(source: axpbSource, options: "")
        let x = try context.makeBuffer(byteCount: 4)
        let y = try context.makeBuffer(byteCount: 4)
        try context.write([1], to: x)
        try context.dispatch("axpb", in: program, arguments: [.buffer(x), .buffer(y), .int(1), .float(0)], global: [1])
        #expect(context.statistics.launches == 1)
        let error = try #require(throws: OpenCLError.self) {
            try context.dispatch("axpb", in: program, arguments: [.buffer(x), .buffer(y)], global: [1])
        }
        #expect(error.call == "clEnqueueNDRangeKernel")
        #expect(error.codeName == "CL_INVALID_KERNEL_ARGS")
        #expect(context.statistics.launches == 1)
    }

    @Test func argumentErrors() throws {
        let context = try makeContext()
        let program = try context.program(source: axpbSource, options: "")
        let x = try context.makeBuffer(byteCount: 4)
        // Too many arguments.
        let extra = try #require(throws: OpenCLError.self) {
            try context.dispatch(
                "axpb", in: program, arguments: [.buffer(x), .buffer(x), .int(1), .float(0), .int(3)], global: [1])
        }
        #expect(["CL_INVALID_ARG_INDEX", "CL_INVALID_KERNEL_ARGS"].contains(extra.codeName))
        // A float where a buffer is expected.
        let wrongKind = try #require(throws: OpenCLError.self) {
            try context.dispatch(
                "axpb", in: program, arguments: [.float(1), .buffer(x), .int(1), .float(0)], global: [1])
        }
        #expect(wrongKind.call == "clSetKernelArg")
        #expect(wrongKind.detail.contains("argument 0"))
        #expect(context.statistics.launches == 0)
    }

    @Test func invalidSizesThrowInsteadOfTrapping() throws {
        let context = try makeContext()
        let program = try context.program(source: axpbSource, options: "")
        let x = try context.makeBuffer(byteCount: 4)
        let arguments: [KernelArgument] = try [.buffer(x), .buffer(x), .int(1), .float(0)]
        for global in [[], [0], [-3], [1, 1, 1, 1]] {
            let error = try #require(throws: OpenCLError.self) {
                try context.dispatch("axpb", in: program, arguments: arguments, global: global)
            }
            #expect(error.codeName == "CL_INVALID_GLOBAL_WORK_SIZE")
        }
        for local in [[0], [-8], [8, 1], []] {
            let error = try #require(throws: OpenCLError.self) {
                try context.dispatch("axpb", in: program, arguments: arguments, global: [1], local: local)
            }
            #expect(error.call == "clEnqueueNDRangeKernel")
            #expect(error.codeName == "CL_INVALID_WORK_GROUP_SIZE")
        }
        // Larger than the device allows: the driver's own status comes through.
        let tooLarge = context.device.maxWorkGroupSize * 2
        let error = try #require(throws: OpenCLError.self) {
            try context.dispatch("axpb", in: program, arguments: arguments, global: [tooLarge], local: [tooLarge])
        }
        #expect(error.call == "clEnqueueNDRangeKernel")
        #expect(["CL_INVALID_WORK_GROUP_SIZE", "CL_INVALID_WORK_ITEM_SIZE"].contains(error.codeName))
        #expect(context.statistics.launches == 0)
    }

    @Test func concurrentDispatchFromManyTasks() async throws {
        let context = try makeContext()
        let program = try context.program(source: axpbSource, options: "")
        let tasks = 8
        let repeats = 5
        let failures = await withTaskGroup(of: String?.self) { group in
            for task in 0..<tasks {
                group.addTask {
                    do {
                        let n = 1000 + 37 * task
                        let b = Float(task)
                        let x = (0..<n).map { Float($0 % 97) * 0.5 }
                        let xBuffer = try context.makeBuffer(byteCount: n * 4)
                        let yBuffer = try context.makeBuffer(byteCount: n * 4)
                        try context.write(x, to: xBuffer)
                        for _ in 0..<repeats {
                            try context.dispatch(
                                "axpb", in: program,
                                arguments: [.buffer(xBuffer), .buffer(yBuffer), .int(n), .float(b)],
                                global: [n], local: [64])
                        }
                        let y = try context.read(yBuffer, count: n)
                        return y == axpbExpected(x, b) ? nil : "task \(task): wrong values"
                    } catch {
                        return "task \(task): \(error)"
                    }
                }
            }
            var failures: [String] = []
            for await failure in group {
                if let failure { failures.append(failure) }
            }
            return failures
        }
        #expect(failures.isEmpty, "\(failures)")
        let statistics = context.statistics
        #expect(statistics.launches == tasks * repeats)
        #expect(statistics.builds == 1)
        #expect(statistics.allocations == tasks * 2)
        #expect(statistics.liveBuffers == 0)
    }
}

// MARK: - Buffers

@Suite struct BufferTests {
    @Test func writeReadRoundTrip() throws {
        let context = try makeContext()
        let values: [Float] = [0, 1.5, -2, .infinity, -.infinity, 1e-30, 3.25e20]
        let buffer = try context.makeBuffer(byteCount: values.count * 4)
        #expect(buffer.byteCount == values.count * 4)
        #expect(buffer.floatCount == values.count)
        #expect(buffer.parent == nil)
        #expect(buffer.context === context)
        try context.write(values, to: buffer)
        #expect(try context.read(buffer, count: values.count) == values)
        #expect(try context.read(buffer, count: 3) == Array(values.prefix(3)))
        #expect(try context.read(buffer, count: 0) == [])

        // Writing at an element offset leaves the rest alone.
        try context.write([42, 43], to: buffer, offset: 5)
        #expect(try context.read(buffer, count: values.count) == Array(values.prefix(5)) + [42, 43])

        try context.write([.nan], to: buffer)
        #expect(try context.read(buffer, count: 1)[0].isNaN)
    }

    @Test func outOfRangeAccessThrows() throws {
        let context = try makeContext()
        let buffer = try context.makeBuffer(byteCount: 4 * 4)
        let read = try #require(throws: OpenCLError.self) { try context.read(buffer, count: 5) }
        #expect(read.call == "clEnqueueReadBuffer")
        #expect(read.codeName == "CL_INVALID_VALUE")
        #expect(throws: OpenCLError.self) { try context.read(buffer, count: -1) }
        let write = try #require(throws: OpenCLError.self) { try context.write([1, 2, 3, 4, 5], to: buffer) }
        #expect(write.call == "clEnqueueWriteBuffer")
        #expect(throws: OpenCLError.self) { try context.write([1, 2], to: buffer, offset: 3) }
        #expect(throws: OpenCLError.self) { try context.write([1], to: buffer, offset: -1) }
        let allocation = try #require(throws: OpenCLError.self) { try context.makeBuffer(byteCount: -1) }
        #expect(allocation.codeName == "CL_INVALID_BUFFER_SIZE")
        #expect(throws: OpenCLError.self) {
            try context.makeBuffer(byteCount: context.device.maxAllocationSize + 1)
        }
        #expect(context.statistics.allocations == 1)
    }

    @Test func subBufferViewsTheRightRegion() throws {
        let context = try makeContext()
        let alignment = context.baseAddressAlignment
        #expect(alignment >= 4)
        #expect(alignment % 4 == 0)
        let floatsPerAlignment = alignment / 4
        let count = floatsPerAlignment * 3
        let parent = try context.makeBuffer(byteCount: count * 4)
        let original = (0..<count).map(Float.init)
        try context.write(original, to: parent)

        let viewCount = floatsPerAlignment + 3
        let region = floatsPerAlignment..<(floatsPerAlignment + viewCount)
        let view = try context.makeSubBuffer(of: parent, offset: alignment, byteCount: viewCount * 4)
        #expect(view.parent === parent)
        #expect(view.parentOffset == alignment)
        #expect(view.floatCount == viewCount)
        #expect(try context.read(view, count: viewCount) == Array(original[region]))
        #expect(throws: OpenCLError.self) { try context.read(view, count: viewCount + 1) }

        // Writes through the view land in the parent's region, nowhere else.
        let written = (0..<viewCount).map { -Float($0) - 1 }
        try context.write(written, to: view)
        var expected = original
        expected.replaceSubrange(region, with: written)
        #expect(try context.read(parent, count: count) == expected)

        // Kernels see the view as a buffer starting at its offset.
        let program = try context.program(source: scaleSource, options: "-DSCALE=10.0f")
        try context.dispatch("scale", in: program, arguments: [.buffer(view), .int(2)], global: [2])
        expected[floatsPerAlignment] *= 10
        expected[floatsPerAlignment + 1] *= 10
        #expect(try context.read(parent, count: count) == expected)

        try context.fill(view, with: 9)
        expected.replaceSubrange(region, with: repeatElement(9, count: viewCount))
        #expect(try context.read(parent, count: count) == expected)
    }

    @Test func invalidSubBuffersThrow() throws {
        let context = try makeContext()
        let alignment = context.baseAddressAlignment
        let parent = try context.makeBuffer(byteCount: alignment * 2)
        let outside = try #require(throws: OpenCLError.self) {
            try context.makeSubBuffer(of: parent, offset: alignment, byteCount: alignment * 2)
        }
        #expect(outside.call == "clCreateSubBuffer")
        if alignment > 4 {
            let misaligned = try #require(throws: OpenCLError.self) {
                try context.makeSubBuffer(of: parent, offset: 4, byteCount: 4)
            }
            #expect(misaligned.codeName == "CL_MISALIGNED_SUB_BUFFER_OFFSET")
        }
        #expect(context.statistics.liveBuffers == 1)
    }

    @Test func allocationCountersFollowLifetimes() throws {
        let context = try makeContext()
        #expect(context.statistics.allocations == 0)
        #expect(context.statistics.liveBuffers == 0)
        do {
            let a = try context.makeBuffer(byteCount: 256)
            let b = try context.makeBuffer(byteCount: 1024)
            #expect(context.statistics.allocations == 2)
            #expect(context.statistics.liveBuffers == 2)
            do {
                let c = try context.makeBuffer(byteCount: 16)
                let view = try context.makeSubBuffer(of: b, offset: 0, byteCount: 64)
                // Sub-buffers are views, not allocations.
                #expect(context.statistics.allocations == 3)
                #expect(context.statistics.liveBuffers == 3)
                #expect(context.statistics.liveBytes == 256 + 1024 + 16)
                #expect(context.statistics.peakLiveBytes == 256 + 1024 + 16)
                try context.fill(c, with: 1)
                try context.fill(view, with: 2)
            }
            #expect(context.statistics.liveBuffers == 2)
            #expect(context.statistics.liveBytes == 256 + 1024)
            context.resetPeakLiveBytes()
            #expect(context.statistics.peakLiveBytes == 256 + 1024, "the high-water mark restarts at what is alive")
            try context.fill(a, with: 0)
            try context.fill(b, with: 0)
        }
        #expect(context.statistics.allocations == 3)
        #expect(context.statistics.liveBuffers == 0)
        #expect(context.statistics.liveBytes == 0)
        #expect(context.statistics.peakLiveBytes == 256 + 1024)

        // A sub-buffer keeps its parent alive after the caller drops it.
        var view: OpenCLBuffer? = nil
        do {
            let parent = try context.makeBuffer(byteCount: 128)
            try context.write((0..<32).map(Float.init), to: parent)
            view = try context.makeSubBuffer(of: parent, offset: 0, byteCount: 16)
        }
        #expect(context.statistics.liveBuffers == 1)
        #expect(try context.read(try #require(view), count: 4) == [0, 1, 2, 3])
        view = nil
        #expect(context.statistics.liveBuffers == 0)
        #expect(context.statistics.allocations == 4)
    }

    @Test func fill() throws {
        let context = try makeContext()
        let buffer = try context.makeBuffer(byteCount: 10 * 4)
        try context.fill(buffer, with: 3.5)
        #expect(try context.read(buffer, count: 10) == [Float](repeating: 3.5, count: 10))
        try context.fill(buffer, with: -0.0)
        #expect(try context.read(buffer, count: 10).allSatisfy { $0 == 0 && $0.sign == .minus })
        // A size that is not a whole number of floats: the whole floats are filled.
        let odd = try context.makeBuffer(byteCount: 10)
        try context.fill(odd, with: 1)
        #expect(try context.read(odd, count: 2) == [1, 1])
    }

    @Test func emptyBuffers() throws {
        let context = try makeContext()
        let empty = try context.makeBuffer(byteCount: 0)
        #expect(empty.byteCount == 0)
        #expect(empty.floatCount == 0)
        #expect(try context.read(empty, count: 0) == [])
        try context.write([], to: empty)
        try context.write(bytesOf: [Int32](), to: empty)
        try context.fill(empty, with: 1)
        #expect(throws: OpenCLError.self) { try context.read(empty, count: 1) }
    }
}

// MARK: - Timing

@Suite struct MeasureTests {
    @Test func measureReturnsValueAndDeviceTime() throws {
        let context = try makeContext()
        let program = try context.program(source: busySource, options: "")
        let n = 4096
        let buffer = try context.makeBuffer(byteCount: n * 4)
        let (value, nanoseconds) = try context.measure { () throws -> String in
            try context.dispatch("busy", in: program, arguments: [.buffer(buffer), .int(n), .int(2000)], global: [n])
            return "body result"
        }
        #expect(value == "body result")
        #expect(nanoseconds > 0)
        #expect(try context.read(buffer, count: 2).allSatisfy(\.isFinite))
        #expect(context.statistics.launches == 1)
    }

    @Test func measureWithoutKernelsIsZero() throws {
        let context = try makeContext()
        let result = try context.measure { 7 }
        #expect(result.value == 7)
        #expect(result.nanoseconds == 0)
    }

    @Test func nestedMeasureCountsInTheOuterSession() throws {
        let context = try makeContext()
        let program = try context.program(source: busySource, options: "")
        let n = 2048
        let buffer = try context.makeBuffer(byteCount: n * 4)
        let arguments: [KernelArgument] = try [.buffer(buffer), .int(n), .int(1000)]
        let outer = try context.measure { () throws -> UInt64 in
            try context.dispatch("busy", in: program, arguments: arguments, global: [n])
            let inner = try context.measure { () throws -> Int in
                try context.dispatch("busy", in: program, arguments: arguments, global: [n])
                return 1
            }
            #expect(inner.value == 1)
            return inner.nanoseconds
        }
        #expect(outer.value == 0)
        #expect(outer.nanoseconds > 0)
        #expect(context.statistics.launches == 2)
        // The session ended: a new one measures on its own.
        let again = try context.measure {
            try context.dispatch("busy", in: program, arguments: arguments, global: [n])
        }
        #expect(again.nanoseconds > 0)
    }

    @Test func throwingBodyEndsTheSession() throws {
        struct Stop: Error {}
        let context = try makeContext()
        let program = try context.program(source: busySource, options: "")
        let n = 256
        let buffer = try context.makeBuffer(byteCount: n * 4)
        let arguments: [KernelArgument] = try [.buffer(buffer), .int(n), .int(1000)]
        #expect(throws: Stop.self) {
            try context.measure { () throws -> Int in
                try context.dispatch("busy", in: program, arguments: arguments, global: [n])
                throw Stop()
            }
        }
        // Not mistaken for a nested session afterwards.
        let after = try context.measure {
            try context.dispatch("busy", in: program, arguments: arguments, global: [n])
        }
        #expect(after.nanoseconds > 0)
    }
}

@Suite("Prepared launches")
struct PreparedLaunchTests {
    static let source = """
        __kernel void scale(__global const float *x, __global float *y, float factor, int count) {
            int i = get_global_id(0);
            if (i < count) y[i] = x[i] * factor;
        }
        """

    @Test("fixed arguments are set once; bound buffers change per call")
    func bindsPerCall() throws {
        let context = try OpenCLContext(device: OpenCLDevice.select(nil), programCache: .memoryOnly)
        let program = try context.program(source: Self.source, options: "-cl-std=CL1.2")
        let launch = try context.prepare(
            "scale", in: program, arguments: [.bound(0), .bound(1), .float(3), .int(5)], global: [5])
        let x = try context.makeBuffer(byteCount: 20)
        let y = try context.makeBuffer(byteCount: 20)
        let z = try context.makeBuffer(byteCount: 20)
        try context.write([1, 2, 3, 4, 5], to: x)
        try context.enqueue([launch], buffers: [x, y])
        try context.enqueue([launch], buffers: [y, z])
        #expect(try context.read(y, count: 5) == [3, 6, 9, 12, 15])
        #expect(try context.read(z, count: 5) == [9, 18, 27, 36, 45])
    }

    @Test("a wrong argument count fails when prepared; too few buffers fail when enqueued")
    func checksArguments() throws {
        let context = try OpenCLContext(device: OpenCLDevice.select(nil), programCache: .memoryOnly)
        let program = try context.program(source: Self.source, options: "-cl-std=CL1.2")
        #expect(throws: OpenCLError.self) {
            _ = try context.prepare("scale", in: program, arguments: [.bound(0), .bound(1), .float(3)], global: [5])
        }
        #expect(throws: OpenCLError.self) {
            _ = try context.prepare("missing", in: program, arguments: [], global: [1])
        }
        let launch = try context.prepare(
            "scale", in: program, arguments: [.bound(0), .bound(1), .float(3), .int(5)], global: [5])
        let x = try context.makeBuffer(byteCount: 20)
        #expect(throws: OpenCLError.self) { try context.enqueue([launch], buffers: [x]) }
    }
}
