import Nyquist
import NyquistCL
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
@Suite("LiftPool parity", .parityReport)
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
                    ParityReport.record(
                        .lift, "LiftDownPool2D", name == "output" ? "forward" : "forward: band \(name)", tolerance: Self.tolerance,
                        discrepancy, shape: shape, label: label)
                    worst = max(worst, discrepancy.relativeError)
                }
                for (slot, tensor) in guarded.enumerated() {
                    let damaged = try tensor.damagedGuards()
                    #expect(damaged.isEmpty, "\(label) band \(slot) wrote outside its output at \(damaged.prefix(5))")
                }
                // Reconstruction on the device, into a guarded output.
                let back = try GuardedTensor(shape: shape, on: device)
                try unpool.forward(LiftUpPool2DInput(output, height: size.h, width: size.w), into: back.tensor)
                let reconstruction = Discrepancy(actual: try back.tensor.toHost().values, expected: x.values)
                #expect(reconstruction.maxAbsoluteError < 1e-4, "\(label) reconstruction: \(reconstruction)")
                ParityReport.record(
                    .lift, "LiftUpPool2D", "reconstruction (absolute error)", tolerance: 1e-4,
                    relative: reconstruction.maxAbsoluteError, nmse: reconstruction.nmse,
                    passed: reconstruction.maxAbsoluteError < 1e-4, shape: shape, label: label)
                #expect(try back.damagedGuards().isEmpty, "\(label) LiftUpPool wrote outside its output")
                worstReconstruction = max(worstReconstruction, reconstruction.maxAbsoluteError)
                // LiftUpPool on given bands against the reference inverse.
                let bands = try (0..<4).map { try randomTensor(bandShape, seed: UInt64(900 + index * 4 + $0)) }
                let expectedUp = try Reference.liftUpPool2D(
                    ll: bands[0], lh: bands[1], hl: bands[2], hh: bands[3], height: size.h, width: size.w, params, config)
                let deviceBands = try bands.map { try DeviceTensor($0, on: device) }
                let up = try unpool(
                    LiftUpPool2DInput(
                        ll: deviceBands[0], lh: deviceBands[1], hl: deviceBands[2], hh: deviceBands[3], height: size.h,
                        width: size.w))
                let upDiscrepancy = Discrepancy(actual: try up.toHost().values, expected: expectedUp.values)
                #expect(upDiscrepancy.within(Self.tolerance), "\(label) LiftUpPool2D: \(upDiscrepancy)")
                ParityReport.record(.lift, "LiftUpPool2D", "forward", tolerance: Self.tolerance, upDiscrepancy, shape: shape, label: label)
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
                    ParityReport.record(
                        .lift, "LiftDownPool1D", name == "output" ? "forward" : "forward: band \(name)", tolerance: Self.tolerance,
                        discrepancy, shape: shape, label: label)
                    worst = max(worst, discrepancy.relativeError)
                }
                for tensor in guarded { #expect(try tensor.damagedGuards().isEmpty, "\(label) wrote outside a band") }
                let back = try unpool(LiftUpPool1DInput(output, length: length))
                let reconstruction = Discrepancy(actual: try back.toHost().values, expected: x.values)
                #expect(reconstruction.maxAbsoluteError < 1e-4, "\(label) reconstruction: \(reconstruction)")
                ParityReport.record(
                    .lift, "LiftUpPool1D", "reconstruction (absolute error)", tolerance: 1e-4,
                    relative: reconstruction.maxAbsoluteError, nmse: reconstruction.nmse,
                    passed: reconstruction.maxAbsoluteError < 1e-4, shape: shape, label: label)
                worstReconstruction = max(worstReconstruction, reconstruction.maxAbsoluteError)
            }
        }
        print("LiftPool 1-D parity K=\(kernelSize): worst relative error \(worst), device reconstruction max error \(worstReconstruction)")
    }

    /// Backward tolerance, relative to max|reference gradient|: parameter gradients are sums over
    /// every band element of a channel in Float (per-item strided sums, then a tree), so their
    /// rounding grows with the element count; 1e-4 covers 3 x 5 x 56 x 56 (see ``parameterError``).
    static let backwardTolerance = 1e-4

    /// Compares the eight parameter gradients; the error of each is taken relative to the largest
    /// reference parameter gradient of all eight (the inf-norm of the gradient vector), because a
    /// single small entry (a sum over every band element of a channel that nearly cancels) has a
    /// Float rounding error set by the size of its terms, not by its own size.
    static func parameterError(_ actual: [String: DeviceTensor], _ expected: [String: HostTensor], label: String) throws
        -> Double
    {
        let scale = expected.values.flatMap { $0.values.map { abs(Double($0)) } }.max() ?? 0
        var worst = 0.0
        for name in LiftPoolParameters<Float>.names {
            let values = try #require(actual[name]).toHost()
            let reference = try #require(expected[name])
            #expect(values.shape == reference.shape, "\(label) \(name) shape")
            let discrepancy = Discrepancy(actual: values.values, expected: reference.values)
            let error = scale > 0 ? discrepancy.maxAbsoluteError / scale : discrepancy.maxAbsoluteError
            #expect(error <= backwardTolerance && !discrepancy.nonFiniteMismatch, "\(label) \(name): \(discrepancy), scale \(scale)")
            worst = max(worst, error)
        }
        return worst
    }

    /// Training forward (regularisers) and backward (input and all eight parameters) against the
    /// reference, for upstream gradients on the output only, on the bands and the loss only, and
    /// on everything at once.
    @Test(arguments: [1, 3, 5, 7])
    func downPool2DTrainingAndBackward(kernelSize: Int) throws {
        let device = try TestDevice.get()
        var worst = (forward: 0.0, regulariser: 0.0, input: 0.0, parameters: 0.0)
        for (n, c) in parityBatchChannels {
            let config = try LiftPoolConfiguration(channels: c, kernelSize: kernelSize, lambdaU: 0.3, lambdaP: 0.7)
            let params = Self.parameters(config, seed: UInt64(kernelSize * 10 + c + 2))
            let pool = try LiftDownPool2D(config, parameters: params, on: device)
            for (index, size) in Self.sizes.enumerated() {
                let shape = [n, c, size.h, size.w]
                let x = try randomTensor(shape, seed: UInt64(1500 + index))
                let (expected, expectedRegularisers) = try Reference.liftDownPool2D(x, params, config)
                let (bands, saved) = try pool.forwardTraining(try DeviceTensor(x, on: device))
                let regularisers = try #require(try bands.regularisers, "K=\(kernelSize) \(shape): training forward gives regularisers")
                let forward = Discrepancy(actual: try bands.output.toHost().values, expected: expected.output.values)
                #expect(forward.within(Self.tolerance), "K=\(kernelSize) \(shape) training output: \(forward)")
                ParityReport.record(
                    .lift, "LiftDownPool2D", "training forward", tolerance: Self.tolerance, forward, shape: shape,
                    label: "K=\(kernelSize) \(shape)")
                worst.forward = max(worst.forward, forward.relativeError)
                for (name, actual, reference) in [
                    ("c_u", regularisers.cu, Double(expectedRegularisers.cu)), ("c_p", regularisers.cp, Double(expectedRegularisers.cp)),
                    ("loss", regularisers.loss, Double(expectedRegularisers.loss)),
                ] {
                    let error = abs(actual - reference) / max(abs(reference), 1e-30)
                    #expect(error < 1e-5, "K=\(kernelSize) \(shape) \(name): \(actual) vs \(reference)")
                    ParityReport.record(
                        .lift, "LiftDownPool2D", "regularisers c_u, c_p, loss", tolerance: 1e-5, relative: error, nmse: nil,
                        passed: error < 1e-5, shape: shape, label: "K=\(kernelSize) \(shape) \(name)")
                    worst.regulariser = max(worst.regulariser, error)
                }
                let bandShape = expected.ll.shape
                // The three upstream variants on small maps; only "everything at once" on the
                // large ones (the Double reference backward dominates the test's time).
                for variant in (size.h * size.w > 100 ? 2..<3 : 0..<3) {
                    let label = "K=\(kernelSize) \(shape) variant \(variant)"
                    var upstream: [HostTensor?] = try (0..<5).map { try randomTensor(bandShape, seed: UInt64(2000 + index * 10 + $0)) }
                    if variant == 0 { upstream = [upstream[0], nil, nil, nil, nil] }
                    if variant == 1 { upstream[0] = nil }
                    let gradLoss: Float = variant == 0 ? 0 : 1.3
                    let reference = try Reference.liftDownPool2DBackward(
                        input: x, params, config, gradOutput: upstream[0], gradLL: upstream[1], gradLH: upstream[2],
                        gradHL: upstream[3], gradHH: upstream[4], gradLoss: gradLoss)
                    let onDevice = try upstream.map { try $0.map { try DeviceTensor($0, on: device) } }
                    let gradients = try pool.backward(
                        LiftDownPool2DOutputGradients(
                            output: onDevice[0], ll: onDevice[1], lh: onDevice[2], hl: onDevice[3], hh: onDevice[4],
                            regulariserLoss: Double(gradLoss)), saved)
                    let input = Discrepancy(actual: try gradients.input.toHost().values, expected: reference.input.values)
                    #expect(input.within(Self.backwardTolerance), "\(label) input gradient: \(input)")
                    ParityReport.record(
                        .lift, "LiftDownPool2D", "backward", tolerance: Self.backwardTolerance, input, shape: shape, label: label)
                    worst.input = max(worst.input, input.relativeError)
                    let error = try Self.parameterError(gradients.parameters, reference.parameters, label: label)
                    ParityReport.record(
                        .lift, "LiftDownPool2D", "backward: parameters (relative to the largest)",
                        tolerance: Self.backwardTolerance, relative: error, nmse: nil, passed: error <= Self.backwardTolerance,
                        shape: shape, label: label)
                    worst.parameters = max(worst.parameters, error)
                }
            }
        }
        print("LiftDownPool2D training parity K=\(kernelSize): worst relative error \(worst)")
    }

    @Test(arguments: [1, 3, 5, 7])
    func downPool1DTrainingAndBackward(kernelSize: Int) throws {
        let device = try TestDevice.get()
        var worst = 0.0
        for (n, c) in parityBatchChannels {
            let config = try LiftPoolConfiguration(channels: c, kernelSize: kernelSize, lambdaU: 0.3, lambdaP: 0.7)
            let params = Self.parameters(config, seed: UInt64(kernelSize * 10 + c + 3))
            let pool = try LiftDownPool1D(config, parameters: params, on: device)
            for (index, length) in [1, 2, 3, 9, 64, 75].enumerated() {
                let shape = [n, c, length]
                let x = try randomTensor(shape, seed: UInt64(2500 + index))
                let (_, expectedRegularisers) = try Reference.liftDownPool1D(x, params, config)
                let (bands, saved) = try pool.forwardTraining(try DeviceTensor(x, on: device))
                let regularisers = try #require(try bands.regularisers, "1-D K=\(kernelSize) \(shape): training forward gives regularisers")
                let error = abs(regularisers.loss - Double(expectedRegularisers.loss)) / max(Double(expectedRegularisers.loss), 1e-30)
                #expect(error < 1e-5, "1-D K=\(kernelSize) \(shape) loss: \(regularisers) vs \(expectedRegularisers)")
                ParityReport.record(
                    .lift, "LiftDownPool1D", "regularisers c_u, c_p, loss", tolerance: 1e-5, relative: error, nmse: nil,
                    passed: error < 1e-5, shape: shape, label: "K=\(kernelSize) \(shape) loss")
                let upstream = try (0..<3).map { try randomTensor(bands.s.shape, seed: UInt64(2600 + index * 3 + $0)) }
                let reference = try Reference.liftDownPool1DBackward(
                    input: x, params, config, gradOutput: upstream[0], gradS: upstream[1], gradD: upstream[2], gradLoss: 0.9)
                let onDevice = try upstream.map { try DeviceTensor($0, on: device) }
                let gradients = try pool.backward(
                    LiftDownPool1DOutputGradients(output: onDevice[0], s: onDevice[1], d: onDevice[2], regulariserLoss: 0.9), saved)
                let input = Discrepancy(actual: try gradients.input.toHost().values, expected: reference.input.values)
                #expect(input.within(Self.backwardTolerance), "1-D K=\(kernelSize) \(shape) input gradient: \(input)")
                ParityReport.record(
                    .lift, "LiftDownPool1D", "backward", tolerance: Self.backwardTolerance, input, shape: shape,
                    label: "K=\(kernelSize) \(shape)")
                worst = max(worst, input.relativeError)
                let parameterError = try Self.parameterError(
                    gradients.parameters, reference.parameters, label: "1-D K=\(kernelSize) \(shape)")
                ParityReport.record(
                    .lift, "LiftDownPool1D", "backward: parameters (relative to the largest)",
                    tolerance: Self.backwardTolerance, relative: parameterError, nmse: nil,
                    passed: parameterError <= Self.backwardTolerance, shape: shape, label: "K=\(kernelSize) \(shape)")
                worst = max(worst, parameterError)
            }
        }
        print("LiftDownPool1D training parity K=\(kernelSize): worst relative error \(worst)")
    }

    /// LiftUpPool training forward and backward (bands and all eight parameters) against the
    /// reference, 2-D and 1-D, even and odd targets.
    @Test(arguments: [1, 3, 5, 7])
    func upPoolBackward(kernelSize: Int) throws {
        let device = try TestDevice.get()
        var worst = (bands: 0.0, parameters: 0.0)
        for (n, c) in parityBatchChannels {
            let config = try LiftPoolConfiguration(channels: c, kernelSize: kernelSize)
            let params = Self.parameters(config, seed: UInt64(kernelSize * 10 + c + 4))
            let unpool = try LiftUpPool2D(config, parameters: params, on: device)
            // (9, 80) and (6, 75): rows long enough for interior runs (vector loads) in every kernel.
            let sizes: [(h: Int, w: Int)] = [(1, 1), (2, 2), (3, 5), (7, 9), (8, 8), (31, 33), (1, 6), (5, 1), (9, 80), (6, 75)]
            for (index, size) in sizes.enumerated() {
                let label = "up K=\(kernelSize) \(n)x\(c)x\(size.h)x\(size.w)"
                let bandShape = [n, c, LiftPoolConfiguration.bandLength(size.h), LiftPoolConfiguration.bandLength(size.w)]
                let bands = try (0..<4).map { try randomTensor(bandShape, seed: UInt64(3000 + index * 4 + $0)) }
                let g = try randomTensor([n, c, size.h, size.w], seed: UInt64(3500 + index))
                let reference = try Reference.liftUpPool2DBackward(
                    gradOutput: g, ll: bands[0], lh: bands[1], hl: bands[2], hh: bands[3], height: size.h, width: size.w,
                    params, config)
                let deviceBands = try bands.map { try DeviceTensor($0, on: device) }
                let (output, saved) = try unpool.forwardTraining(
                    LiftUpPool2DInput(
                        ll: deviceBands[0], lh: deviceBands[1], hl: deviceBands[2], hh: deviceBands[3], height: size.h,
                        width: size.w))
                #expect(output.shape == g.shape)
                let gradients = try unpool.backward(try DeviceTensor(g, on: device), saved)
                for band in 0..<4 {
                    let discrepancy = Discrepancy(
                        actual: try gradients.bands[band].toHost().values, expected: reference.bands[band].values)
                    #expect(discrepancy.within(Self.backwardTolerance), "\(label) band \(band): \(discrepancy)")
                    ParityReport.record(
                        .lift, "LiftUpPool2D", "backward: bands", tolerance: Self.backwardTolerance, discrepancy,
                        shape: [n, c, size.h, size.w], label: "\(label) band \(band)")
                    worst.bands = max(worst.bands, discrepancy.relativeError)
                }
                let parameterError = try Self.parameterError(gradients.parameters, reference.parameters, label: label)
                ParityReport.record(
                    .lift, "LiftUpPool2D", "backward: parameters (relative to the largest)", tolerance: Self.backwardTolerance,
                    relative: parameterError, nmse: nil, passed: parameterError <= Self.backwardTolerance,
                    shape: [n, c, size.h, size.w], label: label)
                worst.parameters = max(worst.parameters, parameterError)
                // 1-D on the LL rows as (N, C, w) signals.
                let m = bandShape[3]
                let s1 = try HostTensor(shape: [n, c, m], values: Array(bands[0].values.prefix(n * c * m)))
                let d1 = try HostTensor(shape: [n, c, m], values: Array(bands[1].values.prefix(n * c * m)))
                let g1 = try HostTensor(shape: [n, c, size.w], values: Array(g.values.prefix(n * c * size.w)))
                let reference1 = try Reference.liftUpPool1DBackward(gradOutput: g1, s: s1, d: d1, length: size.w, params, config)
                let unpool1 = LiftUpPool1D(unpool.weights)
                let gradients1 = try unpool1.backward(
                    try DeviceTensor(g1, on: device),
                    LiftUpPool1DInput(s: try DeviceTensor(s1, on: device), d: try DeviceTensor(d1, on: device), length: size.w))
                for band in 0..<2 {
                    let discrepancy = Discrepancy(
                        actual: try gradients1.bands[band].toHost().values, expected: reference1.bands[band].values)
                    #expect(discrepancy.within(Self.backwardTolerance), "1-D \(label) band \(band): \(discrepancy)")
                    ParityReport.record(
                        .lift, "LiftUpPool1D", "backward: bands", tolerance: Self.backwardTolerance, discrepancy,
                        shape: [n, c, size.w], label: "1-D \(label) band \(band)")
                    worst.bands = max(worst.bands, discrepancy.relativeError)
                }
                let parameterError1 = try Self.parameterError(gradients1.parameters, reference1.parameters, label: "1-D \(label)")
                ParityReport.record(
                    .lift, "LiftUpPool1D", "backward: parameters (relative to the largest)", tolerance: Self.backwardTolerance,
                    relative: parameterError1, nmse: nil, passed: parameterError1 <= Self.backwardTolerance,
                    shape: [n, c, size.w], label: "1-D \(label)")
                worst.parameters = max(worst.parameters, parameterError1)
            }
        }
        print("LiftUpPool backward parity K=\(kernelSize): worst relative error \(worst)")
    }

    /// A NaN in the input reaches the same band positions on the device as in the reference (the
    /// device's ReLU must not turn NaN into 0), and an Inf does not crash anything.
    @Test func nanAndInfPropagate() throws {
        let device = try TestDevice.get()
        let config = try LiftPoolConfiguration(channels: 2, kernelSize: 3)
        let params = Self.parameters(config, seed: 5)
        let pool = try LiftDownPool2D(config, parameters: params, on: device)
        var x = try randomTensor([1, 2, 9, 8], seed: 77)
        x.values[20] = .nan
        x.values[100] = .infinity
        let (expected, _) = try Reference.liftDownPool2D(x, params, config)
        let bands = try pool(try DeviceTensor(x, on: device))
        for (name, actual, reference) in [("output", bands.output, expected.output), ("LL", bands.ll, expected.ll), ("HH", bands.hh, expected.hh)] {
            let values = try actual.toHost().values
            #expect(values.contains { $0.isNaN }, "\(name): the NaN was lost")
            let discrepancy = Discrepancy(actual: values, expected: reference.values)
            #expect(discrepancy.within(Self.tolerance), "\(name) with NaN/Inf: \(discrepancy)")
        }
    }

    @Test func rejectsMismatches() throws {
        let device = try TestDevice.get()
        let pool = try LiftDownPool2D(channels: 3, on: device)
        #expect(throws: NyquistError.self) { try pool(try DeviceTensor(shape: [1, 4, 4, 4], on: device)) }
        let bands = try pool(try DeviceTensor(try randomTensor([1, 3, 5, 4], seed: 1), on: device))
        #expect(throws: NyquistError.self) { try LiftUpPool2D(inverting: pool)(LiftUpPool2DInput(bands, height: 4, width: 4)) }
        #expect(throws: NyquistError.self) { try pool.weights.load(stateDict: [:]) }
        let config = try LiftPoolConfiguration(channels: 3)
        let stored = try LiftPoolParameters<Float>(config, seed: 3).stateDict()
        try pool.weights.load(stateDict: stored)
        #expect(try pool.weights.toHost() == LiftPoolParameters<Float>(config, seed: 3))
        #expect(pool.parameters.count == 8 && pool.parameters["predict.0.weight"]?.shape == [3, 1, 5])
    }

    /// Launches per call of each pass, in the order `compiledPlans` calls them: LiftDownPool2D
    /// forward, training forward, backward; LiftUpPool2D forward, training forward, backward;
    /// LiftDownPool1D forward, training forward, backward; LiftUpPool1D forward, backward.
    static let launchesPerPass = [2, 3, 8, 2, 2, 10, 1, 2, 4, 1, 5]

    @Test("compiled plans: a steady-state call builds, requests and allocates nothing; launches per pass; loaded parameters are used")
    func compiledPlans() throws {
        let device = try TestDevice.fresh()
        let config = try LiftPoolConfiguration(channels: 3, kernelSize: 5)
        let pool = try LiftDownPool2D(config, parameters: Self.parameters(config, seed: 11), on: device)
        let unpool = LiftUpPool2D(inverting: pool)
        let pool1D = try LiftDownPool1D(config, parameters: Self.parameters(config, seed: 12), on: device)
        let unpool1D = LiftUpPool1D(inverting: pool1D)
        let x = try DeviceTensor(randomTensor([2, 3, 9, 12], seed: 13), on: device)
        let x1D = try DeviceTensor(randomTensor([2, 3, 21], seed: 14), on: device)
        let gradients = try (0..<5).map { try DeviceTensor(randomTensor([2, 3, 5, 6], seed: UInt64(15 + $0)), on: device) }
        let gradients1D = try (0..<3).map { try DeviceTensor(randomTensor([2, 3, 11], seed: UInt64(20 + $0)), on: device) }
        func launches(_ call: () throws -> Void) throws -> Int {
            let before = device.context.statistics.launches
            try call()
            return device.context.statistics.launches - before
        }
        func everyPass() throws -> [Int] {
            let (bands, saved) = try pool.forwardTraining(x)
            let upInput = LiftUpPool2DInput(bands, height: 9, width: 12)
            let (_, upSaved) = try unpool.forwardTraining(upInput)
            let (bands1D, saved1D) = try pool1D.forwardTraining(x1D)
            let upInput1D = LiftUpPool1DInput(bands1D, length: 21)
            return try [
                launches { _ = try pool(x) },
                launches { _ = try pool.forwardTraining(x) },
                launches {
                    _ = try pool.backward(
                        LiftDownPool2DOutputGradients(
                            output: gradients[0], ll: gradients[1], lh: gradients[2], hl: gradients[3], hh: gradients[4]),
                        saved)
                },
                launches { _ = try unpool(upInput) },
                launches { _ = try unpool.forwardTraining(upInput) },
                launches { _ = try unpool.backward(x, upSaved) },
                launches { _ = try pool1D(x1D) },
                launches { _ = try pool1D.forwardTraining(x1D) },
                launches {
                    _ = try pool1D.backward(
                        LiftDownPool1DOutputGradients(output: gradients1D[0], s: gradients1D[1], d: gradients1D[2]), saved1D)
                },
                launches { _ = try unpool1D(upInput1D) },
                launches { _ = try unpool1D.backward(x1D, upInput1D) },
            ]
        }
        _ = try everyPass()
        let before = device.context.statistics
        #expect(try everyPass() == Self.launchesPerPass)
        let after = device.context.statistics
        #expect(after.builds == before.builds && after.cacheHits == before.cacheHits, "no program is requested on the call path")
        #expect(after.allocations == before.allocations, "outputs and temporaries come from the device's cache")

        // Parameters are bound per call: a cached plan runs with the values load(stateDict:) put in.
        let replacement = Self.parameters(config, seed: 31)
        try pool.weights.load(stateDict: replacement.stateDict())
        let fresh = try LiftDownPool2D(config, parameters: replacement, on: device)
        #expect(try pool(x).output.toHost().values == (try fresh(x).output.toHost().values))
        let (_, saved) = try pool.forwardTraining(x)
        let (_, freshSaved) = try fresh.forwardTraining(x)
        let loaded = try pool.backward(LiftDownPool2DOutputGradients(output: gradients[0]), saved)
        let expected = try fresh.backward(LiftDownPool2DOutputGradients(output: gradients[0]), freshSaved)
        #expect(try loaded.input.toHost().values == (try expected.input.toHost().values))
        for name in LiftPoolParameters<Float>.names {
            #expect(
                try #require(loaded.parameters[name]).toHost().values == (try #require(expected.parameters[name]).toHost().values),
                "\(name)")
        }
    }
}
