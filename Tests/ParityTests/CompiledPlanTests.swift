import Nyquist
import NyquistCL
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

/// The steady state of a layer call: plans built once, memory from the device's cache, and a
/// cache that never hands one tensor's memory to another while it is in use.
@Suite("Compiled plans and the caching allocator")
struct CompiledPlanTests {
    @Test("a steady-state call allocates nothing from the driver and builds nothing")
    func steadyState() throws {
        let device = try TestDevice.fresh()
        let pool = try BlurPool2D(channels: 4)
        let x = try DeviceTensor(randomTensor([2, 4, 20, 18], seed: 1), on: device)
        // One step builds the programs and tables and fills the cache with one buffer per size.
        do {
            let (y, saved) = try pool.forwardTraining(x)
            _ = try pool.backward(y, saved)
        }
        let before = device.context.statistics
        let memoryBefore = device.memoryStatistics
        for _ in 0..<5 {
            let (y, saved) = try pool.forwardTraining(x)
            _ = try pool.backward(y, saved)
        }
        let after = device.context.statistics
        #expect(after.allocations == before.allocations, "outputs and gradients come from the cache")
        #expect(after.builds == before.builds)
        #expect(device.memoryStatistics.requests - memoryBefore.requests == 10)
        #expect(device.memoryStatistics.reuses - memoryBefore.reuses == 10)
    }

    @Test("every window layer's training step allocates nothing from the driver once warm")
    func windowLayersSteadyState() throws {
        let device = try TestDevice.fresh()
        let x = try DeviceTensor(randomTensor([1, 4, 24, 24], seed: 5), on: device)
        let layers: [any PoolingLayer] = [
            try MaxPool2D(kernelSize: 3, stride: 2, padding: 1), try AvgPool2D(kernelSize: 2),
            try BlurPool2D(channels: 4), try MaxBlurPool2D(channels: 4),
        ]
        for layer in layers {
            func step() throws {
                let (y, saved) = try layer.forwardTraining(x)
                _ = try layer.backward(y, saved)
            }
            try step()
            let before = device.context.statistics.allocations
            try step()
            #expect(device.context.statistics.allocations == before, "\(type(of: layer))")
        }
    }

    @Test("a recycled buffer is never shared by two live tensors, and values survive reuse")
    func noAliasing() throws {
        let device = try TestDevice.fresh()
        let pool = try AvgPool2D(kernelSize: 2)
        let host = try randomTensor([1, 3, 8, 8], seed: 2)
        let x = try DeviceTensor(host, on: device)
        let expected = try pool(x).toHost()
        var outputs: [DeviceTensor] = []
        for _ in 0..<4 { outputs.append(try pool(x)) }
        let handles = Set(outputs.map { ObjectIdentifier($0.buffer) })
        #expect(handles.count == outputs.count, "live outputs must have buffers of their own")
        for output in outputs { #expect(try output.toHost().values == expected.values) }
    }

    @Test("a buffer the caller still holds is not reused after its tensor is gone")
    func heldBufferIsNotRecycled() throws {
        let device = try TestDevice.fresh()
        let x = try DeviceTensor(randomTensor([1, 2, 4, 4], seed: 3), on: device)
        var kept: OpenCLBuffer? = nil
        do {
            let y = try MaxPool2D(kernelSize: 2)(x)
            kept = y.buffer
        }
        let reusesBefore = device.memoryStatistics.reuses
        let next = try DeviceTensor(shape: [1, 2, 2, 2], on: device)
        #expect(device.memoryStatistics.reuses == reusesBefore, "the held buffer must not be handed out")
        #expect(next.buffer !== kept)
    }

    @Test("releaseCachedMemory hands the cached bytes back to the driver")
    func releaseCachedMemory() throws {
        let device = try TestDevice.fresh()
        do {
            _ = try DeviceTensor(shape: [1, 4, 32, 32], on: device)
            _ = try DeviceTensor(shape: [3, 5, 7, 11], on: device)
        }
        let cached = device.memoryStatistics.cachedBytes
        #expect(cached >= (4 * 32 * 32 + 3 * 5 * 7 * 11) * 4)
        let liveBefore = device.context.statistics.liveBytes
        #expect(device.releaseCachedMemory() == cached)
        #expect(device.memoryStatistics.cachedBytes == 0)
        #expect(device.context.statistics.liveBytes == liveBefore - cached)
    }

    @Test("changed pinned knobs rebuild the plan; results stay the same")
    func pinnedKnobsRebuildPlan() throws {
        let device = try TestDevice.fresh()
        let pool = try BlurPool2D(channels: 3)
        let host = try randomTensor([2, 3, 40, 40], seed: 4)
        let x = try DeviceTensor(host, on: device)
        let first = try pool(x).toHost()
        var launches: [Int] = []
        try LaunchVariantParityTests.forEachPinned(
            [false, true], knobs: { WindowKnobs(outputsPerItem: 8, localSize: [64, 8, 1], foldedSides: $0) },
            families: ["window-forward"], shapeClasses: ["wide", "medium", "narrow"]
        ) { folded in
            let before = device.context.statistics.launches
            let y = try pool(x).toHost()
            launches.append(device.context.statistics.launches - before)
            #expect(y.values == first.values)
        }
        #expect(launches[0] > launches[1], "folding the side columns must take fewer launches: \(launches)")
    }

    @Test("loss weights are per-call values: a new weight reuses the plan and scales the loss terms")
    func lossWeightsReusePlans() throws {
        let device = try TestDevice.fresh()
        let shape = [2, 3, 7, 8]
        let x = try randomTensor(shape, seed: 31)
        let input = try DeviceTensor(x, on: device)

        let lift = try LiftDownPool2D(channels: 3, kernelSize: 3, seed: 2, on: device)
        let hostParameters = try LiftPoolParameters<Float>(lift.configuration, stateDict: lift.parameterValues())
        let gradOutput = try randomTensor(try lift.configuration.outputShape(for: Shape4D(shape)).dimensions, seed: 32)
        let (_, liftSaved) = try lift.forwardTraining(input)
        var plans: Int?
        for weight in [1.0, 0.5, 0, 3] {
            let gradients = try lift.backward(
                LiftDownPool2DOutputGradients(output: try DeviceTensor(gradOutput, on: device), regulariserLoss: weight),
                liftSaved)
            let expected = try Reference.liftDownPool2DBackward(
                input: x, hostParameters, lift.configuration, gradOutput: gradOutput, gradLoss: Float(weight))
            let error = Discrepancy(actual: try gradients.input.toHost().values, expected: expected.input.values)
            #expect(error.within(LiftPoolParityTests.backwardTolerance), "regulariser weight \(weight): \(error)")
            if let plans { #expect(device.compiledPassCount == plans, "weight \(weight) built a plan") }
            plans = device.compiledPassCount
        }

        let tips = try TIPSPool2D(channels: 3, seed: 4, on: device)
        let shift = MapShift(dy: 1, dx: 1, fill: .circular)
        let tipsGradOutput = try randomTensor(try tips.outputShape(for: input).dimensions, seed: 33)
        let (_, tipsSaved) = try tips.forwardTraining(input, undoShift: shift)
        let referenceSaved = Reference.TIPSSaved(input: x, parameters: try tips.parameterValues(), shift: shift)
        plans = nil
        for (fm, undo) in [(0.0, 0.0), (0.5, 2.0), (1.5, 0.25)] {
            let weights = try TIPSLossWeights(fm: fm, undo: undo)
            let gradients = try tips.backward(
                TIPSPool2DOutputGradients(output: try DeviceTensor(tipsGradOutput, on: device), lossWeights: weights),
                tipsSaved)
            let expected = try Reference.tipsPool2DBackward(
                gradOutput: tipsGradOutput, saved: referenceSaved, tips.configuration, lossWeights: weights)
            let error = Discrepancy(actual: try gradients.input.toHost().values, expected: expected.input.values)
            #expect(error.within(PolyphaseTolerance.tipsBackward), "loss weights \(fm), \(undo): \(error)")
            if let plans { #expect(device.compiledPassCount == plans, "loss weights \(fm), \(undo) built a plan") }
            plans = device.compiledPassCount
        }
    }
}
