import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

@testable import Nyquist

// The launch parameters a per-device tuner may pick (PolyphaseLaunch, LiftLaunch,
// AdaptiveLaunch candidates other than today's choice) against the CPU reference, on odd shapes
// with N and C that are not multiples of anything the kernels tile by. Each test pins
// its candidates on a Device of its own: the overrides are per device, so suites running
// meanwhile keep the built-in choice (a process-wide override once let a concurrent LiftPool
// test build its program with one RUN and launch it with another).
@Suite("Launch-parameter candidates vs reference", .serialized)
struct LaunchVariantParityTests {
    static let shapes: [[Int]] = [[3, 5, 7, 9], [1, 3, 31, 33], [2, 3, 13, 40]]

    @Test("APS and TIPS with other work-group sizes and plane batching")
    func polyphase() throws {
        let device = try TestDevice.fresh()  // overrides are per device: other suites keep theirs
        defer { PolyphaseLaunch.override.withLock { $0[ObjectIdentifier(device)] = nil } }
        for launch in [
            PolyphaseLaunch(groupSize: 16, elementsPerGroup: 1), PolyphaseLaunch(groupSize: 128, elementsPerGroup: 16384),
            PolyphaseLaunch(groupSize: 1, elementsPerGroup: 1024),
        ] {
            PolyphaseLaunch.override.withLock { $0[ObjectIdentifier(device)] = launch }
            for (index, shape) in Self.shapes.enumerated() {
                let label = "\(launch) on \(shape)"
                let x = try randomTensor(shape, seed: UInt64(40 + index))
                let input = try DeviceTensor(x, on: device)
                let tips = try TIPSPool2D(channels: shape[1], kernelSize: 3, seed: 5)
                let expected = try Reference.tipsPool2D(
                    x, tips.configuration, parameters: tips.parameters)
                let output = try GuardedTensor(shape: expected.output.shape, on: device)
                try tips.forward(input, into: output.tensor)
                let forward = Discrepancy(actual: try output.tensor.toHost().values, expected: expected.output.values)
                #expect(forward.within(PolyphaseTolerance.tipsForward), "\(label) tips forward: \(forward)")
                #expect(try output.damagedGuards().isEmpty, "\(label) tips forward wrote outside its output")
                let psi = Discrepancy(actual: try tips.outputs(input).psi.toHost().values, expected: expected.psi.values)
                #expect(psi.within(PolyphaseTolerance.tipsForward), "\(label) tips psi: \(psi)")

                let aps = try APSPool2D(channels: shape[1])
                // Float and Double norms may order a near-tie differently; such inputs are not
                // a launch-parameter question.
                guard try apsNormGap(x, aps.configuration).allSatisfy({ $0 > 1e-4 }) else { continue }
                let (expectedAPS, _) = try Reference.apsPool2D(x, aps.configuration)
                let (actualAPS, _) = try aps(input, indices: nil)
                let apsError = Discrepancy(actual: try actualAPS.toHost().values, expected: expectedAPS.values)
                #expect(apsError.maxAbsoluteError == 0, "\(label) aps forward: \(apsError)")
            }
        }
    }

    @Test("TIPS backward with other band sizes (and the unfused passes), with and without saved psi")
    func tipsBackward() throws {
        let device = try TestDevice.fresh()  // overrides are per device: other suites keep theirs
        defer { PolyphaseLaunch.override.withLock { $0[ObjectIdentifier(device)] = nil } }
        // 0: the unfused passes; 1 and 1000: bands of 3 and of several rows (111 x 111 has many);
        // 16384: whole small planes batched into one work-group.
        for launch in [
            PolyphaseLaunch(groupSize: 16, backwardBandElements: 1), PolyphaseLaunch(groupSize: 64, backwardBandElements: 1000),
            PolyphaseLaunch(groupSize: 128, backwardBandElements: 16384), PolyphaseLaunch(groupSize: 16, backwardBandElements: 0),
        ] {
            // Not group size 1: tips_grad_tau then sums a 111 x 111 plane serially, and d conv2
            // misses 1e-4 (1.2e-4 relative); that kernel is unchanged by the band size.
            PolyphaseLaunch.override.withLock { $0[ObjectIdentifier(device)] = launch }
            let shapes = Self.shapes + [[2, 3, 111, 111], [3, 5, 2, 2], [1, 1, 3, 3], [2, 3, 7, 7], [1, 2, 8, 17]]
            for (index, shape) in shapes.enumerated() {
                let label = "\(launch) on \(shape)"
                let x = try randomTensor(shape, seed: UInt64(140 + index))
                let input = try DeviceTensor(x, on: device)
                let tips = try TIPSPool2D(channels: shape[1], kernelSize: index % 2 == 0 ? 3 : 5, seed: 9)
                let expectedForward = try Reference.tipsPool2D(x, tips.configuration, parameters: tips.parameters)
                let gradOutput = try randomTensor(expectedForward.output.shape, seed: UInt64(160 + index))
                let shift = MapShift(dy: 1, dx: -2, fill: index % 2 == 0 ? .circular : .zero)
                let referenceSaved = Reference.TIPSSaved(input: x, parameters: tips.parameters, shift: shift)
                let weights = TIPSLossWeights(fm: 0.5, undo: 2)
                let expected = try Reference.tipsPool2DBackward(
                    gradOutput: gradOutput, saved: referenceSaved, tips.configuration, lossWeights: weights)
                let (_, saved) = try tips.forwardTraining(input, undoShift: shift)
                let gradients = try tips.backward(try DeviceTensor(gradOutput, on: device), saved, lossWeights: weights)
                var pairs = [("input", gradients.input, expected.input)]
                for name in [TIPSPool2DConfiguration.conv1Name, TIPSPool2DConfiguration.conv2Name] {
                    pairs.append((name, try #require(gradients.parameters[name]), try #require(expected.parameters[name])))
                }
                for (name, actual, reference) in pairs {
                    let discrepancy = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
                    #expect(discrepancy.within(PolyphaseTolerance.tipsBackward), "\(label) grad \(name): \(discrepancy)")
                }
                // Through the protocol: only the input is saved, so backward recomputes tau and q
                // (and, fused, psi from the input).
                let plainExpected = try Reference.tipsPool2DBackward(
                    gradOutput: gradOutput, saved: Reference.TIPSSaved(input: x, parameters: tips.parameters, shift: nil),
                    tips.configuration)
                let plain = try GuardedTensor(shape: shape, on: device)
                try tips.backward(try DeviceTensor(gradOutput, on: device), try tips.forwardTraining(input).saved, into: plain.tensor)
                let plainError = Discrepancy(actual: try plain.tensor.toHost().values, expected: plainExpected.input.values)
                #expect(plainError.within(PolyphaseTolerance.tipsBackward), "\(label) plain backward: \(plainError)")
                #expect(try plain.damagedGuards().isEmpty, "\(label) backward wrote outside its gradient")
                // Run to run identical: no atomics, every order fixed by the sizes.
                let again = try tips.backward(try DeviceTensor(gradOutput, on: device), saved, lossWeights: weights)
                for name in [TIPSPool2DConfiguration.conv1Name, TIPSPool2DConfiguration.conv2Name] {
                    #expect(
                        try #require(again.parameters[name]).toHost().values
                            == (try #require(gradients.parameters[name]).toHost().values), "\(label) \(name) repeat")
                }
                #expect(try again.input.toHost().values == (try gradients.input.toHost().values), "\(label) input repeat")
            }
        }
    }

    @Test("LiftDownPool2D and LiftUpPool2D with other run lengths")
    func lift() throws {
        let device = try TestDevice.fresh()  // overrides are per device: other suites keep theirs
        defer { LiftLaunch.override.withLock { $0[ObjectIdentifier(device)] = nil } }
        for run in [1, 3, 16] {
            LiftLaunch.override.withLock { $0[ObjectIdentifier(device)] = LiftLaunch(run: run) }
            for (index, shape) in Self.shapes.enumerated() {
                let label = "RUN=\(run) on \(shape)"
                let config = try LiftPoolConfiguration(channels: shape[1], kernelSize: 5)
                let params = LiftPoolParityTests.parameters(config, seed: UInt64(70 + index))
                let pool = try LiftDownPool2D(config, parameters: params, on: device)
                let x = try randomTensor(shape, seed: UInt64(80 + index))
                let (expected, _) = try Reference.liftDownPool2D(x, params, config)
                let bands = try pool(try DeviceTensor(x, on: device))
                for (name, actual, reference) in [
                    ("output", bands.output, expected.output), ("LL", bands.ll, expected.ll), ("HH", bands.hh, expected.hh),
                ] {
                    let discrepancy = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
                    #expect(discrepancy.within(LiftPoolParityTests.tolerance), "\(label) \(name): \(discrepancy)")
                }
                let back = try LiftUpPool2D(inverting: pool)(bands, height: shape[2], width: shape[3])
                let reconstruction = Discrepancy(actual: try back.toHost().values, expected: x.values)
                #expect(reconstruction.maxAbsoluteError < 1e-4, "\(label) reconstruction: \(reconstruction)")
            }
        }
    }

    @Test("AdaptiveBlurPool2D tiled predictor with other register tiles")
    func adaptive() throws {
        let device = try TestDevice.fresh()  // overrides are per device: other suites keep theirs
        defer { AdaptiveLaunch.override.withLock { $0[ObjectIdentifier(device)] = nil } }
        for (positions, outVectors) in [(1, 1), (2, 4), (3, 2), (4, 1)] {
            AdaptiveLaunch.override.withLock {
                $0[ObjectIdentifier(device)] = AdaptiveLaunch(tiled: true, positions: positions, outVectors: outVectors, local: nil)
            }
            for (index, shape) in Self.shapes.enumerated() {
                for softmax in AdaptiveSoftmax.allCases {
                    let config = try AdaptiveBlurPool2DConfiguration(
                        channels: shape[1], kernelSize: 3, stride: 2, groups: shape[1], padding: .reflect, softmax: softmax)
                    let label = "positions \(positions) x \(outVectors) vectors, \(config) on \(shape)"
                    let parameters = try adaptiveTestParameters(config, seed: UInt64(90 + index))
                    let x = try randomTensor(shape, seed: UInt64(95 + index))
                    let expected = try Reference.adaptiveBlurPool2D(x, parameters: parameters, config)
                    let layer = try AdaptiveBlurPool2D(config, parameters: parameters, on: device)
                    let output = try GuardedTensor(shape: expected.output.shape, on: device)
                    try layer.forward(try DeviceTensor(x, on: device), into: output.tensor)
                    let error = Discrepancy(actual: try output.tensor.toHost().values, expected: expected.output.values)
                    #expect(error.within(AdaptiveParityTests.tolerance), "\(label): \(error)")
                    #expect(try output.damagedGuards().isEmpty, "\(label) wrote outside its output")
                }
            }
        }
    }
}
