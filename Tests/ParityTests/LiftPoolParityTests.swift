import Nyquist
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

/// LiftDownPool / LiftUpPool on the device against the CPU reference, with guarded outputs, and
/// perfect reconstruction on the device.
///
/// Tolerance 2e-5 relative to max|reference|: a band value is a K-tap convolution inside a tanh
/// inside another K-tap convolution (K <= 7) plus a sum; in Float each stage adds a few ulps
/// (PoCL's tanh is within 4 ulp), so errors stay near 1e-6 of the band magnitude; a 2-D band
/// goes through two liftings.
@Suite("LiftPool parity")
struct LiftPoolParityTests {
    static let tolerance = 2e-5

    /// Parameters uniform in -1.5...1.5 (larger than the default init, so every nonlinearity
    /// and the border handling matter), fixed by `seed`.
    static func parameters(_ config: LiftPoolConfiguration, seed: UInt64) -> LiftPoolParameters<Float> {
        var params = LiftPoolParameters<Float>(config, seed: seed)
        var generator = SplitMix64(seed: seed &+ 99)
        for name in LiftPoolParameters<Float>.names {
            params[name] = params[name].map { _ in generator.uniform(-1.5...1.5) }
        }
        return params
    }

    static let sizes: [(h: Int, w: Int)] = paritySpatialSizes + [(1, 6), (5, 1), (2, 3)]

    @Test(arguments: [1, 3, 5, 7])
    func downPool2DForwardAndReconstruction(kernelSize: Int) throws {
        let device = try TestDevice.get()
        var worst = 0.0
        var worstReconstruction = 0.0
        for (n, c) in parityBatchChannels {
            let config = try LiftPoolConfiguration(channels: c, kernelSize: kernelSize)
            let params = Self.parameters(config, seed: UInt64(kernelSize * 10 + c))
            let pool = try LiftDownPool2D(config, parameters: params, on: device)
            let unpool = LiftUpPool2D(inverting: pool)
            for (index, size) in Self.sizes.enumerated() {
                let shape = [n, c, size.h, size.w]
                let label = "K=\(kernelSize) \(shape)"
                let x = try randomTensor(shape, seed: UInt64(500 + index))
                let (expected, _) = try Reference.liftDownPool2D(x, params, config)
                let bandShape = expected.ll.shape
                let guarded = try (0..<5).map { _ in try GuardedTensor(shape: bandShape, on: device) }
                let output = LiftDownPool2DOutput(
                    output: guarded[0].tensor, ll: guarded[1].tensor, lh: guarded[2].tensor, hl: guarded[3].tensor,
                    hh: guarded[4].tensor)
                let input = try DeviceTensor(x, on: device)
                try pool.forward(input, into: output)
                let pairs = [
                    ("output", output.output, expected.output), ("LL", output.ll, expected.ll), ("LH", output.lh, expected.lh),
                    ("HL", output.hl, expected.hl), ("HH", output.hh, expected.hh),
                ]
                for (name, actual, reference) in pairs {
                    let discrepancy = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
                    #expect(discrepancy.within(Self.tolerance), "\(label) \(name): \(discrepancy)")
                    worst = max(worst, discrepancy.relativeError)
                }
                for (slot, tensor) in guarded.enumerated() {
                    let damaged = try tensor.damagedGuards()
                    #expect(damaged.isEmpty, "\(label) band \(slot) wrote outside its output at \(damaged.prefix(5))")
                }
                // Reconstruction on the device, into a guarded output.
                let back = try GuardedTensor(shape: shape, on: device)
                try unpool.forward(ll: output.ll, lh: output.lh, hl: output.hl, hh: output.hh, into: back.tensor)
                let reconstruction = Discrepancy(actual: try back.tensor.toHost().values, expected: x.values)
                #expect(reconstruction.maxAbsoluteError < 1e-4, "\(label) reconstruction: \(reconstruction)")
                #expect(try back.damagedGuards().isEmpty, "\(label) LiftUpPool wrote outside its output")
                worstReconstruction = max(worstReconstruction, reconstruction.maxAbsoluteError)
                // LiftUpPool on given bands against the reference inverse.
                let bands = try (0..<4).map { try randomTensor(bandShape, seed: UInt64(900 + index * 4 + $0)) }
                let expectedUp = try Reference.liftUpPool2D(
                    ll: bands[0], lh: bands[1], hl: bands[2], hh: bands[3], height: size.h, width: size.w, params, config)
                let deviceBands = try bands.map { try DeviceTensor($0, on: device) }
                let up = try unpool(
                    ll: deviceBands[0], lh: deviceBands[1], hl: deviceBands[2], hh: deviceBands[3], height: size.h, width: size.w)
                let upDiscrepancy = Discrepancy(actual: try up.toHost().values, expected: expectedUp.values)
                #expect(upDiscrepancy.within(Self.tolerance), "\(label) LiftUpPool2D: \(upDiscrepancy)")
                worst = max(worst, upDiscrepancy.relativeError)
            }
        }
        print("LiftPool 2-D parity K=\(kernelSize): worst relative error \(worst), device reconstruction max error \(worstReconstruction)")
    }

    @Test(arguments: [1, 3, 5, 7])
    func pool1DForwardAndReconstruction(kernelSize: Int) throws {
        let device = try TestDevice.get()
        var worst = 0.0
        var worstReconstruction = 0.0
        for (n, c) in parityBatchChannels {
            let config = try LiftPoolConfiguration(channels: c, kernelSize: kernelSize)
            let params = Self.parameters(config, seed: UInt64(kernelSize * 10 + c + 1))
            let pool = try LiftDownPool1D(config, parameters: params, on: device)
            let unpool = LiftUpPool1D(inverting: pool)
            for (index, length) in [1, 2, 3, 8, 9, 31, 64].enumerated() {
                let shape = [n, c, length]
                let label = "1-D K=\(kernelSize) \(shape)"
                let x = try randomTensor(shape, seed: UInt64(700 + index))
                let (expected, _) = try Reference.liftDownPool1D(x, params, config)
                let guarded = try (0..<3).map { _ in try GuardedTensor(shape: expected.s.shape, on: device) }
                let output = LiftDownPool1DOutput(output: guarded[0].tensor, s: guarded[1].tensor, d: guarded[2].tensor)
                try pool.forward(try DeviceTensor(x, on: device), into: output)
                for (name, actual, reference) in [("output", output.output, expected.output), ("s", output.s, expected.s), ("d", output.d, expected.d)] {
                    let discrepancy = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
                    #expect(discrepancy.within(Self.tolerance), "\(label) \(name): \(discrepancy)")
                    worst = max(worst, discrepancy.relativeError)
                }
                for tensor in guarded { #expect(try tensor.damagedGuards().isEmpty, "\(label) wrote outside a band") }
                let back = try unpool(s: output.s, d: output.d, length: length)
                let reconstruction = Discrepancy(actual: try back.toHost().values, expected: x.values)
                #expect(reconstruction.maxAbsoluteError < 1e-4, "\(label) reconstruction: \(reconstruction)")
                worstReconstruction = max(worstReconstruction, reconstruction.maxAbsoluteError)
            }
        }
        print("LiftPool 1-D parity K=\(kernelSize): worst relative error \(worst), device reconstruction max error \(worstReconstruction)")
    }

    @Test func rejectsMismatches() throws {
        let device = try TestDevice.get()
        let pool = try LiftDownPool2D(channels: 3, on: device)
        #expect(throws: NyquistError.self) { try pool(try DeviceTensor(shape: [1, 4, 4, 4], on: device)) }
        let bands = try pool(try DeviceTensor(try randomTensor([1, 3, 5, 4], seed: 1), on: device))
        #expect(throws: NyquistError.self) { try LiftUpPool2D(inverting: pool)(bands, height: 4, width: 4) }
        #expect(throws: NyquistError.self) { try pool.weights.load(stateDict: [:]) }
        let config = try LiftPoolConfiguration(channels: 3)
        let stored = try LiftPoolParameters<Float>(config, seed: 3).stateDict()
        try pool.weights.load(stateDict: stored)
        #expect(try pool.weights.toHost() == LiftPoolParameters<Float>(config, seed: 3))
        #expect(pool.parameters.count == 8 && pool.parameters["predict.0.weight"]?.shape == [3, 1, 5])
    }
}
