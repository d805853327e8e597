import Nyquist
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

@Suite("Device behaviour", .parityReport)
struct BehaviourTests {
    @Test("fused MaxBlurPool equals MaxPool(2, 1) followed by BlurPool, bit for bit")
    func fusedEqualsComposition() throws {
        let device = try TestDevice.get()
        for (shape, mode) in [([2, 3, 17, 20], PaddingMode.reflect), ([1, 4, 8, 8], .zero), ([3, 2, 9, 7], .circular)] {
            let x = try DeviceTensor(randomTensor(shape, seed: 5), on: device)
            let fused = try MaxBlurPool2D(channels: shape[1], filterSize: 4, stride: 2, padding: mode)(x).toHost()
            let maxMap = try MaxPool2D(kernelSize: 2, stride: 1)(x)
            let twoStep = try BlurPool2D(channels: shape[1], filterSize: 4, stride: 2, padding: mode)(maxMap).toHost()
            #expect(fused == twoStep, "\(shape) \(mode)")
        }
    }

    @Test("fused MaxBlurPool forward allocates only its output; a second call builds nothing")
    func fusedAllocatesNoIntermediate() throws {
        // A context of its own: other tests run in parallel on the shared one and would move
        // its counters.
        let device = try TestDevice.fresh()
        // The launch counts below are the vector path's: pin it, since a device's built-in or
        // tuned choice may be the one-element kernels (a third launch for the border rows).
        let pool = try MaxBlurPool2D(channels: 8)
        let x = try DeviceTensor(randomTensor([2, 8, 64, 64], seed: 6), on: device)
        var y = x
        try LaunchVariantParityTests.forEachPinned(
            [false, true], knobs: { WindowKnobs(outputsPerItem: 8, localSize: [64, 8, 1], foldedSides: $0) },
            families: ["max-blur-forward"], shapeClasses: ["wide", "medium", "narrow"]
        ) { foldedSides in
            _ = try pool(x)  // builds the program and the constant padding tables
            let before = device.context.statistics
            let tensorsBefore = device.memoryStatistics.requests
            y = try pool(x)
            let after = device.context.statistics
            #expect(device.memoryStatistics.requests - tensorsBefore == 1, "only the output may be allocated")
            #expect(after.allocations == before.allocations, "the output's memory comes from the cache")
            #expect(after.builds == before.builds, "the second call must not rebuild")
            // The vector kernel (every row, interior columns; with folded sides also the left and
            // right columns) and, otherwise, the strip kernel: both are the fused kernel; a
            // separate max pass would need another launch and a map-sized buffer.
            #expect(after.launches - before.launches == (foldedSides ? 1 : 2), "only the fused kernels run")
        }
        let output = try GuardedTensor(shape: y.shape, on: device)
        let guardedBefore = device.memoryStatistics.requests
        try pool.forward(x, into: output.tensor)
        #expect(device.memoryStatistics.requests == guardedBefore, "forward(into:) allocates nothing")
    }

    @Test("reflect padding on a map too small for it names the sizes")
    func reflectTooSmall() throws {
        let device = try TestDevice.get()
        let x = try DeviceTensor(HostTensor(shape: [1, 1, 2, 2], repeating: 1), on: device)
        let error = #expect(throws: NyquistError.self) { try BlurPool2D(channels: 1, filterSize: 5)(x) }
        #expect(error?.kind == .invalidShape)
        #expect(error?.message.contains("H = 2") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("2") == true)
    }

    @Test("wrong channel count, rank and gradient shape are typed errors")
    func shapeErrors() throws {
        let device = try TestDevice.get()
        let x = try DeviceTensor(randomTensor([1, 3, 8, 8], seed: 7), on: device)
        #expect(throws: NyquistError.self) { try BlurPool2D(channels: 4)(x) }
        let rank3 = try DeviceTensor(randomTensor([3, 8, 8], seed: 7), on: device)
        #expect(throws: NyquistError.self) { try MaxPool2D()(rank3) }
        let pool = try BlurPool2D(channels: 3)
        let (_, saved) = try pool.forwardTraining(x)
        let wrongGradient = try DeviceTensor(randomTensor([1, 3, 5, 5], seed: 8), on: device)
        #expect(throws: NyquistError.self) { try pool.backward(wrongGradient, saved) }
        #expect(throws: NyquistError.self) { try BlurPool2D(channels: 3, filterSize: 8) }
        #expect(throws: NyquistError.self) { try MaxPool2D(kernelSize: 2, stride: 0) }
    }

    @Test("NaN and Inf propagate as in the reference")
    func nonFinite() throws {
        var values = try randomTensor([1, 2, 9, 9], seed: 9)
        values.values[10] = .nan
        values.values[50] = .infinity
        values.values[90] = -.infinity
        values.values[161] = .infinity  // bottom-right corner: read by padded taps
        try maxPoolCase(MaxPool2DConfiguration(kernelSize: 3, stride: 2, padding: 1)).check(
            shape: values.shape, seed: 9, input: values)
        for mode in PaddingMode.allCases {
            try blurPoolCase(BlurPool2DConfiguration(channels: 2, filterSize: 4, padding: mode)).check(
                shape: values.shape, seed: 9, input: values)
            try maxBlurPoolCase(MaxBlurPool2DConfiguration(channels: 2, filterSize: 3, padding: mode)).check(
                shape: values.shape, seed: 9, input: values)
        }
        try avgPoolCase(AvgPool2DConfiguration(kernelSize: 3, stride: 2, padding: 1)).check(
            shape: values.shape, seed: 9, input: values)
    }

    @Test("random shapes and options (fixed seed)")
    func randomConfigurations() throws {
        var generator = SplitMix64(seed: 2026)
        for _ in 0..<60 {
            let n = Int.random(in: 1...3, using: &generator)
            let c = Int.random(in: 1...6, using: &generator)
            let h = Int.random(in: 1...24, using: &generator)
            let w = Int.random(in: 1...24, using: &generator)
            let filter = Int.random(in: 1...7, using: &generator)
            let stride = Int.random(in: 1...4, using: &generator)
            let mode = PaddingMode.allCases.randomElement(using: &generator) ?? .reflect
            let offset = Int.random(in: 0...1, using: &generator)
            let seed = generator.next()
            let blur = try BlurPool2DConfiguration(
                channels: c, filterSize: filter, stride: stride, padding: mode, padOffset: offset)
            try blurPoolCase(blur).check(shape: [n, c, h, w], seed: seed)
            let maxBlur = try MaxBlurPool2DConfiguration(
                channels: c, filterSize: filter, stride: stride, padding: mode, padOffset: offset)
            try maxBlurPoolCase(maxBlur).check(shape: [n, c, h, w], seed: seed)
            let kernel = Int.random(in: 1...5, using: &generator)
            let padding = Int.random(in: 0...(kernel / 2), using: &generator)
            try maxPoolCase(MaxPool2DConfiguration(kernelSize: kernel, stride: stride, padding: padding)).check(
                shape: [n, c, h, w], seed: seed)
            try avgPoolCase(AvgPool2DConfiguration(kernelSize: kernel, stride: stride, padding: padding)).check(
                shape: [n, c, h, w], seed: seed)
        }
    }
}
