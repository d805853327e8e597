import COpenCL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One OpenCL device on one platform, with the facts Nyquist needs to choose and size kernels.
///
/// A plain value: `cl_device_id`s of root devices are not reference counted, so copying is free.
public struct OpenCLDevice: Sendable, CustomStringConvertible {
    // cl_device_id is an opaque pointer that OpenCL guarantees valid for the life of the process
    // for root devices; it is only ever passed back to OpenCL, never dereferenced.
    nonisolated(unsafe) let id: cl_device_id
    nonisolated(unsafe) let platformID: cl_platform_id
    /// Position in ``all()`` (stable for one process); what `NYQUIST_DEVICE=<index>` selects.
    public let index: Int
    /// `CL_DEVICE_NAME`, trimmed.
    public let name: String
    /// `CL_DEVICE_VENDOR`.
    public let vendor: String
    /// `CL_DRIVER_VERSION`.
    public let driverVersion: String
    /// `CL_PLATFORM_NAME` of the platform it belongs to.
    public let platformName: String
    /// `CL_PLATFORM_VERSION`.
    public let platformVersion: String
    /// True for `CL_DEVICE_TYPE_GPU`.
    public let isGPU: Bool
    /// "GPU", "CPU", "accelerator" or "other".
    public let typeName: String
    /// `CL_DEVICE_MAX_WORK_GROUP_SIZE`.
    public let maxWorkGroupSize: Int
    /// `CL_DEVICE_LOCAL_MEM_SIZE` in bytes.
    public let localMemorySize: Int
    /// `CL_DEVICE_GLOBAL_MEM_SIZE` in bytes.
    public let globalMemorySize: Int
    /// `CL_DEVICE_MAX_MEM_ALLOC_SIZE` in bytes.
    public let maxAllocationSize: Int
    /// `CL_DEVICE_MAX_COMPUTE_UNITS`.
    public let computeUnits: Int
    /// `CL_DEVICE_HOST_UNIFIED_MEMORY`: the device's memory is the host's (a CPU device), so
    /// host arrays can be used in place.
    package let hostUnifiedMemory: Bool

    public var description: String {
        "[\(index)] \(name) (\(typeName), \(platformName), driver \(driverVersion))"
    }

    /// Every device of every OpenCL platform, GPUs first within each platform's listing order.
    ///
    /// With no platform at all (no ICD installed) the error says which packages to install.
    ///
    /// The platforms are enumerated once per process and the answer (or error) is shared: the ICD
    /// loader of Debian 12 (ocl-icd 2.3) initialises without a lock, so concurrent first calls to
    /// `clGetPlatformIDs` from parallel tests saw no devices or crashed inside the loader.
    public static func all() throws -> [OpenCLDevice] {
        try enumeration.get()
    }

    private static let enumeration = Result<[OpenCLDevice], any Error> { try enumerate() }

    private static func enumerate() throws -> [OpenCLDevice] {
        var platformCount: cl_uint = 0
        let status = clGetPlatformIDs(0, nil, &platformCount)
        if status == -1001 || platformCount == 0 {
            throw OpenCLError(
                call: "clGetPlatformIDs", code: status == CL_SUCCESS ? -1001 : status,
                detail:
                    "no OpenCL platform found; install an OpenCL driver, e.g. `apt-get install pocl-opencl-icd` "
                    + "(CPU) or your GPU vendor's ICD, then check with `clinfo -l`")
        }
        try check(status, "clGetPlatformIDs")
        var platforms = [cl_platform_id?](repeating: nil, count: Int(platformCount))
        try check(clGetPlatformIDs(platformCount, &platforms, nil), "clGetPlatformIDs")
        var devices: [OpenCLDevice] = []
        for case let platform? in platforms {
            var deviceCount: cl_uint = 0
            let countStatus = clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), 0, nil, &deviceCount)
            if countStatus == CL_DEVICE_NOT_FOUND || deviceCount == 0 { continue }
            try check(countStatus, "clGetDeviceIDs")
            var ids = [cl_device_id?](repeating: nil, count: Int(deviceCount))
            try check(
                clGetDeviceIDs(platform, cl_device_type(CL_DEVICE_TYPE_ALL), deviceCount, &ids, nil), "clGetDeviceIDs")
            let platformName = try platformString(platform, cl_platform_info(CL_PLATFORM_NAME))
            let platformVersion = try platformString(platform, cl_platform_info(CL_PLATFORM_VERSION))
            for case let id? in ids {
                devices.append(
                    try OpenCLDevice(
                        id: id, platform: platform, index: devices.count, platformName: platformName,
                        platformVersion: platformVersion))
            }
        }
        return devices
    }

    /// Picks a device: `spec` (or `NYQUIST_DEVICE` when `spec` is nil) is an index into ``all()``
    /// or a case-insensitive substring of the device or platform name; with neither, the first
    /// GPU, else the first device.
    public static func select(_ spec: String? = nil) throws -> OpenCLDevice {
        let devices = try all()
        let environment = getenvString("NYQUIST_DEVICE")
        let request = (spec ?? environment)?.trimmingWhitespace()
        guard let request, !request.isEmpty else {
            if let gpu = devices.first(where: \.isGPU) { return gpu }
            guard let first = devices.first else {
                throw OpenCLError(call: "selectDevice", code: CL_DEVICE_NOT_FOUND, detail: "no OpenCL device found")
            }
            return first
        }
        if let index = Int(request) {
            guard devices.indices.contains(index) else {
                throw OpenCLError(
                    call: "selectDevice", code: CL_DEVICE_NOT_FOUND,
                    detail: "device index \(index) out of range; \(devices.count) device(s): "
                        + devices.map(\.description).joined(separator: "; "))
            }
            return devices[index]
        }
        let needle = request.lowercased()
        if let match = devices.first(where: {
            $0.name.lowercased().contains(needle) || $0.platformName.lowercased().contains(needle)
                || $0.typeName.lowercased() == needle
        }) {
            return match
        }
        throw OpenCLError(
            call: "selectDevice", code: CL_DEVICE_NOT_FOUND,
            detail: "no device matches \"\(request)\"; available: " + devices.map(\.description).joined(separator: "; "))
    }

    init(id: cl_device_id, platform: cl_platform_id, index: Int, platformName: String, platformVersion: String) throws {
        self.id = id
        self.platformID = platform
        self.index = index
        self.platformName = platformName
        self.platformVersion = platformVersion
        name = try Self.string(id, cl_device_info(CL_DEVICE_NAME))
        vendor = try Self.string(id, cl_device_info(CL_DEVICE_VENDOR))
        driverVersion = try Self.string(id, cl_device_info(CL_DRIVER_VERSION))
        let type: cl_device_type = try Self.value(id, cl_device_info(CL_DEVICE_TYPE))
        isGPU = type & cl_device_type(CL_DEVICE_TYPE_GPU) != 0
        if isGPU {
            typeName = "GPU"
        } else if type & cl_device_type(CL_DEVICE_TYPE_CPU) != 0 {
            typeName = "CPU"
        } else if type & cl_device_type(CL_DEVICE_TYPE_ACCELERATOR) != 0 {
            typeName = "accelerator"
        } else {
            typeName = "other"
        }
        maxWorkGroupSize = Int(try Self.value(id, cl_device_info(CL_DEVICE_MAX_WORK_GROUP_SIZE)) as Int)
        localMemorySize = Int(try Self.value(id, cl_device_info(CL_DEVICE_LOCAL_MEM_SIZE)) as cl_ulong)
        globalMemorySize = Int(try Self.value(id, cl_device_info(CL_DEVICE_GLOBAL_MEM_SIZE)) as cl_ulong)
        maxAllocationSize = Int(try Self.value(id, cl_device_info(CL_DEVICE_MAX_MEM_ALLOC_SIZE)) as cl_ulong)
        computeUnits = Int(try Self.value(id, cl_device_info(CL_DEVICE_MAX_COMPUTE_UNITS)) as cl_uint)
        // Deprecated in OpenCL 2.0: a driver that no longer answers is treated as not unified.
        hostUnifiedMemory = ((try? Self.value(id, cl_device_info(CL_DEVICE_HOST_UNIFIED_MEMORY)) as cl_bool) ?? 0) != 0
    }

    /// The device of a caller's `cl_device_id` (its index among ``all()``, or -1 when it is not
    /// among them).
    package init(wrapping id: cl_device_id) throws {
        let platform: cl_platform_id = try Self.value(id, cl_device_info(CL_DEVICE_PLATFORM))
        let index = (try? Self.enumerate())?.first { $0.id == id }?.index ?? -1
        try self.init(
            id: id, platform: platform, index: index,
            platformName: try Self.platformString(platform, cl_platform_info(CL_PLATFORM_NAME)),
            platformVersion: try Self.platformString(platform, cl_platform_info(CL_PLATFORM_VERSION)))
    }

    /// The device's `cl_device_id`, for an application that makes its own context and queue on
    /// it and hands them to `Device(wrapping:device:queue:)`.
    public var handle: cl_device_id { id }

    private static func string(_ id: cl_device_id, _ param: cl_device_info) throws -> String {
        var size = 0
        try check(clGetDeviceInfo(id, param, 0, nil, &size), "clGetDeviceInfo")
        var bytes = [CChar](repeating: 0, count: size + 1)
        try check(clGetDeviceInfo(id, param, size, &bytes, nil), "clGetDeviceInfo")
        return String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .trimmingWhitespace()
    }

    private static func value<T>(_ id: cl_device_id, _ param: cl_device_info) throws -> T {
        let pointer = UnsafeMutableRawPointer.allocate(byteCount: MemoryLayout<T>.size, alignment: 16)
        defer { pointer.deallocate() }
        try check(clGetDeviceInfo(id, param, MemoryLayout<T>.size, pointer, nil), "clGetDeviceInfo")
        return pointer.load(as: T.self)
    }

    private static func platformString(_ id: cl_platform_id, _ param: cl_platform_info) throws -> String {
        var size = 0
        try check(clGetPlatformInfo(id, param, 0, nil, &size), "clGetPlatformInfo")
        var bytes = [CChar](repeating: 0, count: size + 1)
        try check(clGetPlatformInfo(id, param, size, &bytes, nil), "clGetPlatformInfo")
        return String(decoding: bytes.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .trimmingWhitespace()
    }
}

extension String {
    func trimmingWhitespace() -> String {
        var slice = Substring(self)
        while let first = slice.first, first.isWhitespace { slice.removeFirst() }
        while let last = slice.last, last.isWhitespace { slice.removeLast() }
        return String(slice)
    }
}

func getenvString(_ name: String) -> String? {
    guard let value = getenv(name) else { return nil }
    return String(cString: value)
}
