import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

@testable import Nyquist

// Every candidate of the polyphase, LiftPool and AdaptiveBlurPool tuner families
// (OperatorTuning) against the CPU reference, on odd shapes with N and C that are not multiples
// of anything the kernels tile by. Each test pins its candidates with withPinnedKnobs (the one
// path the tuner uses, ahead of the database): pins hold only on the task that sets them, and
// plans built under them are cached under them, so suites running meanwhile keep the built-in
// choice (a process-wide override once let a concurrent LiftPool test build its program with
// one RUN and launch it with another). Each test still uses a Device of its own, so that the
// plans of every candidate stay out of the shared device's plan cache.
@Suite("Launch-parameter candidates vs reference", .serialized)
struct LaunchVariantParityTests {
    static let shapes: [[Int]] = [[3, 5, 7, 9], [1, 3, 31, 33], [2, 3, 13, 40]]

    /// Runs `body` once per candidate, with it pinned for every shape class of `families`.
    static func forEachPinned<Knobs: LaunchKnobs>(
        _ candidates: [Knobs], families: [String], shapeClasses: [String], _ body: (Knobs) throws -> Void
    ) throws {
        try forEachPinned(candidates, knobs: { $0 }, families: families, shapeClasses: shapeClasses, body)
    }

    /// Runs `body` once per value, with the knobs `knobs` makes of it pinned for every shape
    /// class of `families`.
    static func forEachPinned<Value, Knobs: LaunchKnobs>(
        _ values: [Value], knobs: (Value) -> Knobs, families: [String], shapeClasses: [String],
        _ body: (Value) throws -> Void
    ) throws {
        for value in values {
            try withPinnedKnobs(knobs(value), families: families, shapeClasses: shapeClasses) { try body(value) }
        }
    }

    @Test("APS with every group size and gather/scatter work-group shape")
    func aps() throws {
        let device = try TestDevice.fresh()
        let family = PolyphaseLaunch.apsFamily
        let classes = ["large", "small"]
        let candidates = APSKnobs.candidates.filter { $0.isUsable(on: device) }
        #expect(candidates.count > 10)
        var checkedShapes = 0
        defer { #expect(checkedShapes >= 2, "too few APS shapes without near-ties") }
        // Padded heights 8 and 32 fall in both shape classes.
        for (index, shape) in (Self.shapes + [[2, 3, 32, 18]]).enumerated() {
            let x = try randomTensor(shape, seed: UInt64(40 + index))
            let aps = try APSPool2D(channels: shape[1])
            // Float and Double norms may order a near-tie differently; such inputs are not
            // a launch-parameter question.
            guard try apsNormGap(x, aps.configuration).allSatisfy({ $0 > 1e-4 }) else { continue }
            checkedShapes += 1
            let (expected, indices) = try Reference.apsPool2D(x, aps.configuration)
            let gradHost = try randomTensor(expected.shape, seed: UInt64(45 + index))
            let expectedGrad = try Reference.apsPool2DBackward(
                gradOutput: gradHost, saved: .init(input: x, indices: indices), aps.configuration)
            let input = try DeviceTensor(x, on: device)
            let gradOutput = try DeviceTensor(gradHost, on: device)
            try Self.forEachPinned(candidates, families: [family], shapeClasses: classes) { candidate in
                let label = "\(candidate) on \(shape)"
                let (training, saved) = try aps.forwardTraining(input, indices: nil)
                let (output, chosen) = (training.output, training.indices)
                let error = Discrepancy(actual: try output.toHost().values, expected: expected.values)
                #expect(error.maxAbsoluteError == 0, "\(label) aps forward: \(error)")
                #expect(try chosen.toHost().values == indices.map(Float.init), "\(label) aps indices")
                let gradInput = try GuardedTensor(shape: shape, on: device)
                try aps.backward(gradOutput, saved, into: gradInput.tensor)
                let gradError = Discrepancy(actual: try gradInput.tensor.toHost().values, expected: expectedGrad.values)
                #expect(gradError.maxAbsoluteError == 0, "\(label) aps backward: \(gradError)")
                #expect(try gradInput.damagedGuards().isEmpty, "\(label) aps backward wrote outside its output")
            }
        }
    }

    @Test("TIPS forward with every group size and plane batching")
    func tips() throws {
        let device = try TestDevice.fresh()
        let family = PolyphaseLaunch.tipsFamily
        let classes = [PolyphaseLaunch.tipsShapeClass]
        let candidates = TIPSKnobs.candidates.filter { $0.isUsable(on: device) }
        #expect(candidates.count > 10)
        for (index, shape) in Self.shapes.enumerated() {
            let x = try randomTensor(shape, seed: UInt64(40 + index))
            let input = try DeviceTensor(x, on: device)
            let tips = try TIPSPool2D(channels: shape[1], kernelSize: 3, seed: 5, on: device)
            let expected = try Reference.tipsPool2D(x, tips.configuration, parameters: try tips.parameterValues())
            try Self.forEachPinned(candidates, families: [family], shapeClasses: classes) { candidate in
                let label = "\(candidate) on \(shape)"
                let output = try GuardedTensor(shape: expected.output.shape, on: device)
                try tips.forward(input, into: output.tensor)
                let forward = Discrepancy(actual: try output.tensor.toHost().values, expected: expected.output.values)
                #expect(forward.within(PolyphaseTolerance.tipsForward), "\(label) tips forward: \(forward)")
                #expect(try output.damagedGuards().isEmpty, "\(label) tips forward wrote outside its output")
                // psi is written by the training forward (inference does not keep it).
                let trainingPsi = try #require(try tips.forwardTraining(input).output.psi, "\(label) tips psi")
                let psi = Discrepancy(actual: try trainingPsi.toHost().values, expected: expected.psi.values)
                #expect(psi.within(PolyphaseTolerance.tipsForward), "\(label) tips psi: \(psi)")
            }
        }
    }

    @Test("TIPS backward with other band sizes (and the unfused passes), with and without saved psi")
    func tipsBackward() throws {
        let device = try TestDevice.fresh()
        let family = PolyphaseLaunch.tipsFamily
        let classes = [PolyphaseLaunch.tipsShapeClass]
        // 0: the unfused passes; 1 and 1000: bands of 3 and of several rows (111 x 111 has many);
        // 16384: whole small planes batched into one work-group.
        try Self.forEachPinned(
            [
                TIPSKnobs(groupSize: 16, elementsPerGroup: 4096, bandElements: 1),
                TIPSKnobs(groupSize: 64, elementsPerGroup: 4096, bandElements: 1000),
                TIPSKnobs(groupSize: 128, elementsPerGroup: 4096, bandElements: 16384),
                TIPSKnobs(groupSize: 16, elementsPerGroup: 4096, bandElements: 0),
            ], families: [family], shapeClasses: classes
        ) { launch in
            // Not group size 1: tips_grad_tau then sums a 111 x 111 plane serially, and d conv2
            // misses 1e-4 (1.2e-4 relative); that kernel is unchanged by the band size.
            #expect(PolyphaseLaunch.choose(for: device).backwardBandElements == launch.bandElements)
            let shapes = Self.shapes + [[2, 3, 111, 111], [3, 5, 2, 2], [1, 1, 3, 3], [2, 3, 7, 7], [1, 2, 8, 17]]
            for (index, shape) in shapes.enumerated() {
                let label = "\(launch) on \(shape)"
                let x = try randomTensor(shape, seed: UInt64(140 + index))
                let input = try DeviceTensor(x, on: device)
                let tips = try TIPSPool2D(channels: shape[1], kernelSize: index % 2 == 0 ? 3 : 5, seed: 9, on: device)
                let hostParameters = try tips.parameterValues()
                let expectedForward = try Reference.tipsPool2D(x, tips.configuration, parameters: hostParameters)
                let gradOutput = try randomTensor(expectedForward.output.shape, seed: UInt64(160 + index))
                let shift = MapShift(dy: 1, dx: -2, fill: index % 2 == 0 ? .circular : .zero)
                let referenceSaved = Reference.TIPSSaved(input: x, parameters: hostParameters, shift: shift)
                let weights = try TIPSLossWeights(fm: 0.5, undo: 2)
                let expected = try Reference.tipsPool2DBackward(
                    gradOutput: gradOutput, saved: referenceSaved, tips.configuration, lossWeights: weights)
                let (_, saved) = try tips.forwardTraining(input, undoShift: shift)
                let gradients = try tips.backward(
                    TIPSPool2DOutputGradients(output: try DeviceTensor(gradOutput, on: device), lossWeights: weights), saved)
                var pairs = [("input", gradients.input, expected.input)]
                for name in [TIPSPool2DConfiguration.conv1Name, TIPSPool2DConfiguration.conv2Name] {
                    pairs.append((name, try #require(gradients.parameters[name]), try #require(expected.parameters[name])))
                }
                for (name, actual, reference) in pairs {
                    let discrepancy = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
                    #expect(discrepancy.within(PolyphaseTolerance.tipsBackward), "\(label) grad \(name): \(discrepancy)")
                }
                // Only the input saved (TIPSPool2DSaved(input:)), no loss: backward recomputes tau
                // and q (and, fused, psi from the input), into a guarded gradient.
                let plainExpected = try Reference.tipsPool2DBackward(
                    gradOutput: gradOutput, saved: Reference.TIPSSaved(input: x, parameters: hostParameters, shift: nil),
                    tips.configuration)
                let plain = try GuardedTensor(shape: shape, on: device)
                try tips.backward(
                    TIPSPool2DOutputGradients(output: try DeviceTensor(gradOutput, on: device)), TIPSPool2DSaved(input: input),
                    into: plain.tensor)
                let plainError = Discrepancy(actual: try plain.tensor.toHost().values, expected: plainExpected.input.values)
                #expect(plainError.within(PolyphaseTolerance.tipsBackward), "\(label) plain backward: \(plainError)")
                #expect(try plain.damagedGuards().isEmpty, "\(label) plain backward wrote outside its gradient")
                // Run to run identical: no atomics, every order fixed by the sizes.
                let again = try tips.backward(
                    TIPSPool2DOutputGradients(output: try DeviceTensor(gradOutput, on: device), lossWeights: weights), saved)
                for name in [TIPSPool2DConfiguration.conv1Name, TIPSPool2DConfiguration.conv2Name] {
                    #expect(
                        try #require(again.parameters[name]).toHost().values
                            == (try #require(gradients.parameters[name]).toHost().values), "\(label) \(name) repeat")
                }
                #expect(try again.input.toHost().values == (try gradients.input.toHost().values), "\(label) input repeat")
            }
        }
    }

    @Test("LiftDownPool2D and LiftUpPool2D forward and backward with every run length")
    func lift() throws {
        let device = try TestDevice.fresh()
        let classes = ["wide", "narrow"]
        // [1, 3, 31, 33]: bands of 16 and 17 positions (wide), the others narrow. Only rows of at
        // least 2 (RUN + 2 K) samples have interior runs (vector loads; docs/kernels.md), so two
        // wide maps (even and odd width, K = 7 and 3) reach them for every run length.
        let cases = Self.shapes.map { ($0, 5) } + [([1, 2, 5, 150], 7), ([1, 2, 6, 149], 3)]
        for (index, (shape, kernelSize)) in cases.enumerated() {
            let config = try LiftPoolConfiguration(channels: shape[1], kernelSize: kernelSize)
            let params = LiftPoolParityTests.parameters(config, seed: UInt64(70 + index))
            let pool = try LiftDownPool2D(config, parameters: params, on: device)
            let x = try randomTensor(shape, seed: UInt64(80 + index))
            let (expected, _) = try Reference.liftDownPool2D(x, params, config)
            // Backward with every upstream gradient and the regularisers (forward lifting), and
            // of the inverse lifting, against the reference once per shape.
            let bandShape = expected.ll.shape
            let upstream = try (0..<5).map { try randomTensor(bandShape, seed: UInt64(85 + index * 5 + $0)) }
            let expectedBackward = try Reference.liftDownPool2DBackward(
                input: x, params, config, gradOutput: upstream[0], gradLL: upstream[1], gradLH: upstream[2],
                gradHL: upstream[3], gradHH: upstream[4], gradLoss: 1.3)
            let gradUp = try randomTensor(shape, seed: UInt64(95 + index))
            let expectedUp = try Reference.liftUpPool2DBackward(
                gradOutput: gradUp, ll: upstream[1], lh: upstream[2], hl: upstream[3], hh: upstream[4], height: shape[2],
                width: shape[3], params, config)
            let unpool = try LiftUpPool2D(config, parameters: params, on: device)
            try Self.forEachPinned(LiftKnobs.candidates, families: [LiftLaunch.family], shapeClasses: classes) { candidate in
                let label = "\(candidate) on \(shape)"
                let bands = try pool(try DeviceTensor(x, on: device))
                for (name, actual, reference) in [
                    ("output", bands.output, expected.output), ("LL", bands.ll, expected.ll), ("HH", bands.hh, expected.hh),
                ] {
                    let discrepancy = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
                    #expect(discrepancy.within(LiftPoolParityTests.tolerance), "\(label) \(name): \(discrepancy)")
                }
                let back = try LiftUpPool2D(inverting: pool)(LiftUpPool2DInput(bands, height: shape[2], width: shape[3]))
                let reconstruction = Discrepancy(actual: try back.toHost().values, expected: x.values)
                #expect(reconstruction.maxAbsoluteError < 1e-4, "\(label) reconstruction: \(reconstruction)")

                let (_, saved) = try pool.forwardTraining(try DeviceTensor(x, on: device))
                let onDevice = try upstream.map { try DeviceTensor($0, on: device) }
                let gradients = try pool.backward(
                    LiftDownPool2DOutputGradients(
                        output: onDevice[0], ll: onDevice[1], lh: onDevice[2], hl: onDevice[3], hh: onDevice[4],
                        regulariserLoss: 1.3), saved)
                let input = Discrepancy(actual: try gradients.input.toHost().values, expected: expectedBackward.input.values)
                #expect(input.within(LiftPoolParityTests.backwardTolerance), "\(label) input gradient: \(input)")
                _ = try LiftPoolParityTests.parameterError(gradients.parameters, expectedBackward.parameters, label: label)
                let (_, upSaved) = try unpool.forwardTraining(
                    LiftUpPool2DInput(
                        ll: onDevice[1], lh: onDevice[2], hl: onDevice[3], hh: onDevice[4], height: shape[2], width: shape[3]))
                let upGradients = try unpool.backward(try DeviceTensor(gradUp, on: device), upSaved)
                for band in 0..<4 {
                    let discrepancy = Discrepancy(
                        actual: try upGradients.bands[band].toHost().values, expected: expectedUp.bands[band].values)
                    #expect(discrepancy.within(LiftPoolParityTests.backwardTolerance), "\(label) up band \(band): \(discrepancy)")
                }
                _ = try LiftPoolParityTests.parameterError(upGradients.parameters, expectedUp.parameters, label: "\(label) up")
            }
        }
    }

    @Test("AdaptiveBlurPool2D forward with every predictor candidate")
    func adaptive() throws {
        let device = try TestDevice.fresh()
        let classes = [AdaptiveLaunch.shapeClass]
        for (index, shape) in Self.shapes.enumerated() {
            for softmax in AdaptiveSoftmax.allCases {
                let config = try AdaptiveBlurPool2DConfiguration(
                    channels: shape[1], kernelSize: 3, stride: 2, groups: shape[1], padding: .reflect, softmax: softmax)
                let parameters = try adaptiveTestParameters(config, seed: UInt64(90 + index))
                let x = try randomTensor(shape, seed: UInt64(95 + index))
                let expected = try Reference.adaptiveBlurPool2D(x, parameters: parameters, config)
                let layer = try AdaptiveBlurPool2D(config, parameters: parameters, on: device)
                let input = try DeviceTensor(x, on: device)
                try Self.forEachPinned(AdaptiveKnobs.candidates, families: [AdaptiveLaunch.family], shapeClasses: classes) {
                    candidate in
                    let label = "\(candidate), \(config) on \(shape)"
                    let output = try GuardedTensor(shape: expected.output.shape, on: device)
                    try layer.forward(input, into: output.tensor)
                    let error = Discrepancy(actual: try output.tensor.toHost().values, expected: expected.output.values)
                    #expect(error.within(AdaptiveParityTests.tolerance), "\(label): \(error)")
                    #expect(try output.damagedGuards().isEmpty, "\(label) wrote outside its output")
                }
            }
        }
    }

    @Test("AdaptiveBlurPool2D backward with the one-element (GPU default) and the row gradient kernels")
    func adaptiveGradientKernels() throws {
        let device = try TestDevice.fresh()
        let classes = [AdaptiveLaunch.shapeClass]
        try Self.forEachPinned(
            [false, true], knobs: { (rows: Bool) in AdaptiveKnobs(tiled: true, positions: 4, outVectors: 3, rowGradients: rows) },
            families: [AdaptiveLaunch.family], shapeClasses: classes
        ) { rowGradients in
            for (index, spec) in AdaptiveParityTests.trainingCases.enumerated() {
                let config = try AdaptiveBlurPool2DConfiguration(
                    channels: spec.shape[1], kernelSize: spec.k, stride: spec.stride, groups: spec.groups,
                    padding: spec.mode, softmax: spec.softmax)
                #expect(AdaptiveLaunch.choose(for: device, configuration: config).rowGradients == rowGradients)
                let label = "rowGradients \(rowGradients), \(config) on \(spec.shape)"
                let parameters = try adaptiveTestParameters(config, seed: UInt64(500 + index))
                let x = try randomTensor(spec.shape, seed: UInt64(600 + index))
                let expected = try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, config)
                let layer = try AdaptiveBlurPool2D(config, parameters: parameters, on: device)
                let (_, _, saved) = try layer.forwardTraining(
                    try DeviceTensor(x, on: device), withFilters: false, frozenStatistics: false)
                let g = try randomTensor(expected.output.shape, seed: UInt64(700 + index))
                let expectedGradients = try Reference.adaptiveBlurPool2DBackward(
                    gradOutput: g, saved: expected.saved, config)
                let gradients = try layer.backward(try DeviceTensor(g, on: device), saved)
                var pairs = [("input", gradients.input, expectedGradients.input)]
                if let weight = gradients.parameters["conv.weight"], let reference = expectedGradients.parameters["conv.weight"] {
                    pairs.append(("conv.weight", weight, reference))
                } else {
                    Issue.record("\(label): no conv.weight gradient")
                }
                for (name, actual, reference) in pairs {
                    let error = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
                    #expect(error.within(AdaptiveParityTests.gradientTolerance), "\(label) grad \(name): \(error)")
                }
            }
        }
    }
}
