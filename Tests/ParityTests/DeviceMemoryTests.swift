import Nyquist
import COpenCL
import NyquistCL
import NyquistCore
import Testing
import _NyquistTestSupport

/// Requests beyond what the device can hold are refused before the driver sees them, with the
/// sizes named; nothing here allocates more than the device allows (the refusal is the point).
@Suite("Device memory limits")
struct DeviceMemoryTests {
    @Test("a buffer over CL_DEVICE_MAX_MEM_ALLOC_SIZE is an out-of-memory error naming the sizes")
    func bufferOverTheAllocationLimit() throws {
        let device = try TestDevice.get()
        let limit = device.context.device.maxAllocationSize
        do {
            _ = try device.context.makeBuffer(byteCount: limit + 1)
            Issue.record("a buffer of \(limit + 1) bytes was allowed")
        } catch let error as OpenCLError {
            #expect(error.isOutOfMemory, "\(error)")
            #expect(error.detail.contains("\(limit + 1) bytes"), "\(error)")
            #expect(error.detail.contains("per buffer"), "\(error)")
        }
    }

    @Test("a tensor over the allocation limit is NyquistError.outOfMemory, one line")
    func tensorOverTheAllocationLimit() throws {
        let device = try TestDevice.get()
        let limit = device.context.device.maxAllocationSize
        // The largest tensor 32-bit indexing allows is 8 GiB; a device that can allocate that
        // in one buffer has nothing to refuse here.
        let elements = limit / 4 + 1
        guard elements <= maximumDeviceElementCount else { return }
        do {
            _ = try DeviceTensor(shape: [1, 1, 1, elements], on: device)
            Issue.record("a tensor of \(elements) floats was allowed")
        } catch let error as NyquistError {
            #expect(error.kind == .outOfMemory, "\(error)")
            #expect(error.message.contains("\(elements * 4) bytes"), "\(error)")
            #expect(!error.message.contains("\n"))
        }
    }

    @Test("the memory-status codes are recognised")
    func outOfMemoryCodes() {
        for code in [CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_RESOURCES, CL_OUT_OF_HOST_MEMORY] {
            #expect(OpenCLError.isOutOfMemory(code))
            #expect(OpenCLError(call: "clEnqueueNDRangeKernel", code: code).isOutOfMemory)
        }
        #expect(!OpenCLError.isOutOfMemory(CL_INVALID_VALUE))
    }
}
