import Nyquist
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

/// APSPool2D and TIPSPool2D through compiled plans: steady-state calls build nothing, allocate
/// nothing from the driver and upload nothing; the L_undo target's plans are shared by shifts
/// that give the same target.
@Suite("Polyphase compiled plans")
struct PolyphasePlanTests {
    @Test("steady-state APS and TIPS calls build nothing and allocate nothing from the driver")
    func steadyState() throws {
        let device = try TestDevice.fresh()
        let x = try DeviceTensor(randomTensor([2, 3, 13, 10], seed: 1), on: device)
        var calls: [() throws -> Void] = []
        for filterSize in [1, 3] {
            let aps = try APSPool2D(channels: 3, filterSize: filterSize)
            calls.append {
                let (training, saved) = try aps.forwardTraining(x, indices: nil)
                _ = try aps(x, indices: training.indices)
                _ = try aps.backward(training.output, saved)
                _ = try aps.backward(training.output, APSPool2DSaved(input: x))
            }
        }
        let tips = try TIPSPool2D(channels: 3, on: device)
        let weights = try TIPSLossWeights(fm: 0.5, undo: 2)
        calls.append {
            // The training forward also reduces and reads back the losses (L_FM and L_undo).
            let (outputs, saved) = try tips.forwardTraining(x, undoShift: MapShift(dy: 1, dx: -2, fill: .zero))
            #expect(try outputs.losses?.undo != nil)
            _ = try tips.backward(TIPSPool2DOutputGradients(output: outputs.output, lossWeights: weights), saved)
            _ = try tips.backward(TIPSPool2DOutputGradients(output: outputs.output), TIPSPool2DSaved(input: x))
            _ = try tips(x)
        }
        for call in calls { try call() }
        let before = device.context.statistics
        for _ in 0..<3 {
            for call in calls { try call() }
        }
        let after = device.context.statistics
        #expect(after.allocations == before.allocations, "outputs, temporaries and weights come from caches")
        #expect(after.builds == before.builds)
    }

    @Test("a TIPS inference call allocates only tau and q: the weights stay on the layer's device")
    func weightsUploadedOnce() throws {
        let device = try TestDevice.fresh()
        let tips = try TIPSPool2D(channels: 4, kernelSize: 5, seed: 3, on: device)
        let x = try DeviceTensor(randomTensor([1, 4, 9, 12], seed: 2), on: device)
        let output = try tips(x).output
        let expected = try output.toHost()
        let requests = device.memoryStatistics.requests
        try tips.forward(x, into: output)
        #expect(device.memoryStatistics.requests - requests == 2)
        #expect(try output.toHost().values == expected.values)
        // The layer is bound to its device: an input on another device is refused; a layer built
        // there from the same weights gives the same output.
        let other = try TestDevice.fresh()
        let elsewhereInput = try DeviceTensor(randomTensor([1, 4, 9, 12], seed: 2), on: other)
        let refused = #expect(throws: NyquistError.self) { try tips(elsewhereInput) }
        #expect(refused?.kind == .invalidConfiguration)
        let elsewhere = try TIPSPool2D(tips.configuration, parameters: try tips.parameterValues(), on: other)(elsewhereInput)
        #expect(try elsewhere.output.toHost().values == expected.values)
    }

    @Test("shifts that give the same L_undo target give the same target, huge ones included")
    func normalisedShifts() throws {
        let device = try TestDevice.get()
        let shape = [2, 3, 7, 10]
        let host = try randomTensor(shape, seed: 4)
        let x = try DeviceTensor(host, on: device)
        let tips = try TIPSPool2D(channels: 3, on: device)
        // x' is 8 x 10.
        let cases: [(MapShift, MapShift)] = [
            (MapShift(dy: 3, dx: -4, fill: .circular), MapShift(dy: 3 - 5 * 8, dx: -4 + 7 * 10, fill: .circular)),
            (
                MapShift(dy: 1, dx: 2, fill: .circular),
                MapShift(dy: 1 + 8 * 1_000_000_000, dx: 2 - 10 * 1_000_000_000, fill: .circular)
            ),
            (MapShift(dy: 8, dx: 0, fill: .zero), MapShift(dy: Int.max - 1, dx: 0, fill: .zero)),
            (MapShift(dy: -2, dx: -10, fill: .zero), MapShift(dy: -2, dx: -1_000_000_000_000, fill: .zero)),
        ]
        for (plain, far) in cases {
            let expected = try Reference.tipsUndoTarget(host, tips.configuration, shift: plain)
            for shift in [plain, far] {
                let target = try #require(try tips.forwardTraining(x, undoShift: shift).saved.target)
                #expect(try target.toHost().values == expected.values, "\(shift)")
            }
        }
    }
}
