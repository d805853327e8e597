import COpenCL
import Foundation
import Nyquist
import NyquistCL
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

/// Layers on a caller's OpenCL objects: its context, in-order queue and memory objects, with
/// the caller's events ordering the work and a completion event handed back.
@Suite("Caller's OpenCL objects")
struct CallerObjectsTests {
    /// A context and queue made with the OpenCL API, as an application that owns them would.
    final class CallerObjects {
        let context: cl_context
        let queue: cl_command_queue
        let device: cl_device_id

        init(properties: cl_command_queue_properties = 0) throws {
            device = try TestDevice.get().info.handle
            var status: cl_int = CL_SUCCESS
            var id: cl_device_id? = device
            guard let context = clCreateContext(nil, 1, &id, nil, nil, &status), status == CL_SUCCESS else {
                throw OpenCLError(call: "clCreateContext", code: status)
            }
            self.context = context
            guard let queue = clCreateCommandQueue(context, device, properties, &status), status == CL_SUCCESS else {
                clReleaseContext(context)
                throw OpenCLError(call: "clCreateCommandQueue", code: status)
            }
            self.queue = queue
        }

        func buffer(floats: Int) throws -> cl_mem {
            var status: cl_int = CL_SUCCESS
            guard let memory = clCreateBuffer(context, cl_mem_flags(CL_MEM_READ_WRITE), floats * 4, nil, &status),
                status == CL_SUCCESS
            else { throw OpenCLError(call: "clCreateBuffer", code: status) }
            return memory
        }

        func write(_ values: [Float], to memory: cl_mem) throws {
            let status = values.withUnsafeBytes {
                clEnqueueWriteBuffer(queue, memory, cl_bool(CL_TRUE), 0, $0.count, $0.baseAddress, 0, nil, nil)
            }
            guard status == CL_SUCCESS else { throw OpenCLError(call: "clEnqueueWriteBuffer", code: status) }
        }

        func read(_ memory: cl_mem, floats: Int, from offset: Int = 0) throws -> [Float] {
            var values = [Float](repeating: 0, count: floats)
            let status = values.withUnsafeMutableBytes {
                clEnqueueReadBuffer(queue, memory, cl_bool(CL_TRUE), offset * 4, $0.count, $0.baseAddress, 0, nil, nil)
            }
            guard status == CL_SUCCESS else { throw OpenCLError(call: "clEnqueueReadBuffer", code: status) }
            return values
        }

        deinit {
            clReleaseCommandQueue(queue)
            clReleaseContext(context)
        }
    }

    static func queueReferences(_ queue: cl_command_queue) -> cl_uint {
        var count: cl_uint = 0
        clGetCommandQueueInfo(queue, cl_command_queue_info(CL_QUEUE_REFERENCE_COUNT), MemoryLayout<cl_uint>.size, &count, nil)
        return count
    }

    static func memoryReferences(_ memory: cl_mem) -> cl_uint {
        var count: cl_uint = 0
        clGetMemObjectInfo(memory, cl_mem_info(CL_MEM_REFERENCE_COUNT), MemoryLayout<cl_uint>.size, &count, nil)
        return count
    }

    /// Whether `condition` holds within about two seconds (checked every 10 ms).
    static func settles(_ condition: () -> Bool) -> Bool {
        for _ in 0..<200 {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    static func status(of event: cl_event) -> cl_int {
        var status: cl_int = 0
        clGetEventInfo(event, cl_event_info(CL_EVENT_COMMAND_EXECUTION_STATUS), MemoryLayout<cl_int>.size, &status, nil)
        return status
    }

    @Test("a layer runs on the caller's queue and buffers after the caller's event, and hands back its completion")
    func callerQueueAndBuffers() throws {
        let caller = try CallerObjects()
        let shape = [2, 3, 9, 10]
        let x = try randomTensor(shape, seed: 71)
        let pool = try BlurPool2D(channels: 3)
        let expected = try Reference.blurPool2D(x, pool.configuration)
        let input = try caller.buffer(floats: x.count)
        defer { clReleaseMemObject(input) }
        try caller.write(x.values, to: input)
        var status: cl_int = CL_SUCCESS
        guard let gate = clCreateUserEvent(caller.context, &status), status == CL_SUCCESS else {
            throw OpenCLError(call: "clCreateUserEvent", code: status)
        }
        defer { clReleaseEvent(gate) }
        // Reference counts are compared with the caller's own before and after (a driver may
        // hold references of its own while commands are in flight).
        let queueBefore = Self.queueReferences(caller.queue)
        let inputBefore = Self.memoryReferences(input)
        do {
            let device = try Device(wrapping: caller.context, device: caller.device, queue: caller.queue)
            #expect(Self.queueReferences(caller.queue) == queueBefore + 1, "the device holds one reference to the queue")
            // The output lives in a larger caller buffer, at the first aligned offset past 0.
            let offset = device.context.baseAddressAlignment / 4
            let output = try caller.buffer(floats: offset + expected.count)
            defer { clReleaseMemObject(output) }
            let inputTensor = try DeviceTensor(wrapping: input, shape: shape, on: device)
            let outputTensor = try DeviceTensor(wrapping: output, offset: offset, shape: expected.shape, on: device)
            let (_, completion) = try device.submit(after: [gate]) { try pool.forward(inputTensor, into: outputTensor) }
            let done = try #require(completion, "a submission that launched kernels returns their completion event")
            defer { clReleaseEvent(done) }
            // Held back by the caller's event: the kernel cannot have run.
            #expect(Self.status(of: done) != CL_COMPLETE)
            clSetUserEventStatus(gate, CL_COMPLETE)
            var waited: cl_event? = done
            #expect(clWaitForEvents(1, &waited) == CL_SUCCESS)
            let values = try caller.read(output, floats: expected.count, from: offset)
            let error = Discrepancy(actual: values, expected: expected.values, magnitudeFloor: 1)
            #expect(error.within(Tolerance.window), "\(error)")
            // Through the tensor API too (a read waits for the queue).
            #expect(try outputTensor.toHost().values == values)
            _ = inputTensor
            #expect(Self.memoryReferences(input) >= inputBefore + 1, "the tensor holds a reference to the caller's buffer")
        }
        // Everything of Nyquist's is gone; the caller's objects keep only the caller's references.
        // A driver drops its own references to finished commands in its own time (PoCL does
        // so on a worker thread), so the counts are polled for a while, not read once.
        clFinish(caller.queue)
        #expect(Self.settles { Self.queueReferences(caller.queue) == queueBefore }, "queue references")
        #expect(Self.settles { Self.memoryReferences(input) == inputBefore }, "buffer references")
        #expect(try caller.read(input, floats: x.count) == x.values, "the caller's buffer is untouched and usable")
    }

    @Test("an out-of-order queue, a buffer of another context and a misaligned offset are refused")
    func refusals() throws {
        let outOfOrder = try CallerObjects(properties: cl_command_queue_properties(CL_QUEUE_OUT_OF_ORDER_EXEC_MODE_ENABLE))
        #expect(throws: NyquistError.self) {
            try Device(wrapping: outOfOrder.context, device: outOfOrder.device, queue: outOfOrder.queue)
        }
        let caller = try CallerObjects()
        let device = try Device(wrapping: caller.context, device: caller.device, queue: caller.queue)
        let other = try CallerObjects()
        let foreign = try other.buffer(floats: 16)
        defer { clReleaseMemObject(foreign) }
        #expect(throws: NyquistError.self) { try DeviceTensor(wrapping: foreign, shape: [1, 1, 4, 4], on: device) }
        let memory = try caller.buffer(floats: 64)
        defer { clReleaseMemObject(memory) }
        let references = Self.memoryReferences(memory)
        #expect(throws: NyquistError.self) { try DeviceTensor(wrapping: memory, offset: 1, shape: [1, 1, 2, 2], on: device) }
        #expect(throws: NyquistError.self) { try DeviceTensor(wrapping: memory, shape: [1, 1, 9, 9], on: device) }
        // Timing needs a profiling queue; this one has none.
        #expect(throws: NyquistError.self) { try device.measure { try device.enqueueEmptyKernel() } }
        #expect(Self.memoryReferences(memory) == references, "refused wraps keep no reference")
    }

    @Test("training forwards with scalar results or running statistics return before the caller's event allows them to run")
    func trainingForwardsDoNotWait() throws {
        let caller = try CallerObjects()
        let device = try Device(wrapping: caller.context, device: caller.device, queue: caller.queue)
        let shape = [2, 3, 8, 10]
        let x = try randomTensor(shape, seed: 41)
        let tips = try TIPSPool2D(channels: 3, on: device)
        let lift = try LiftDownPool2D(channels: 3, kernelSize: 3, on: device)
        let expectedLosses = try tips.forwardTraining(try DeviceTensor(x, on: device)).output.losses
        let expectedRegularisers = try lift.forwardTraining(try DeviceTensor(x, on: device)).output.regularisers
        // Two identical adaptive layers: one steps off the gate, its twin shows the statistics.
        let adaptive = try AdaptiveBlurPool2D(channels: 3, on: device)
        let twin = try AdaptiveBlurPool2D(channels: 3, on: device)
        _ = try twin.forwardTraining(try DeviceTensor(x, on: device))
        let expectedStatistics = try twin.hostParameters
        var status: cl_int = CL_SUCCESS
        guard let gate = clCreateUserEvent(caller.context, &status), status == CL_SUCCESS else {
            throw OpenCLError(call: "clCreateUserEvent", code: status)
        }
        defer { clReleaseEvent(gate) }
        let input = try DeviceTensor(x, on: device)
        // The calls run on another thread; a forward that read its scalars back would wait for
        // the gate, so the gate opens only after they return, or after a time limit (a failure).
        final class Call: @unchecked Sendable {
            var body: (() throws -> (TIPSPool2DOutput, LiftDownPool2DOutput, cl_event?))?
            var result: Result<(TIPSPool2DOutput, LiftDownPool2DOutput, cl_event?), Error>?
            let finished = DispatchSemaphore(value: 0)
        }
        let call = Call()
        call.body = {
            let (outputs, completion) = try device.submit(after: [gate]) {
                _ = try adaptive.forwardTraining(input)
                return (try tips.forwardTraining(input).output, try lift.forwardTraining(input).output)
            }
            return (outputs.0, outputs.1, completion)
        }
        Thread.detachNewThread {
            call.result = Result { try call.body?() ?? { throw NyquistError(.invalidConfiguration, "no call") }() }
            call.finished.signal()
        }
        let returned = call.finished.wait(timeout: .now() + 20) == .success
        #expect(returned, "a training forward waited for its wait list (it read a result back)")
        if let result = call.result, returned, case .success(let (_, _, completion)) = result, let completion {
            #expect(Self.status(of: completion) != CL_COMPLETE)
        }
        clSetUserEventStatus(gate, CL_COMPLETE)
        if !returned { call.finished.wait() }
        let (tipsOutput, liftOutput, completion) = try #require(try call.result?.get())
        if let completion { clReleaseEvent(completion) }
        #expect(try tipsOutput.losses == expectedLosses)
        #expect(try liftOutput.regularisers == expectedRegularisers)
        #expect(try adaptive.hostParameters == expectedStatistics)
    }
}
