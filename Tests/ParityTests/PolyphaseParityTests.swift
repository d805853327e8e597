import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

@testable import Nyquist

// APSPool2D and TIPSPool2D on the device against the CPU reference: forward (guarded), the
// phase choice, training forward, backward (input and weights, with the TIPS losses and the
// external gradients of psi and tau), the loss values, and APS's exact circular-shift invariance
// on the device.

/// Tolerances of the polyphase operators, relative to max |reference|.
///
/// APS only copies values, so without a blur its forward and backward are exact; with a blur
/// they inherit BlurPool's 1e-5. TIPS's forward is a k x k correlation, a quadrant mean and a
/// 4-term mixture in Float: 1e-5 relative. Its weight gradients sum up to N * H' * W' products
/// in Float (serially, in a fixed order), so they get 1e-4.
enum PolyphaseTolerance {
    static let tipsForward = 1e-5
    static let tipsBackward = 1e-4
}

/// Smallest relative gap between the two largest phase norms of any sample (Double reference).
func apsNormGap(_ x: HostTensor, _ config: APSPool2DConfiguration) throws -> [Double] {
    try Reference.apsNorms(x.converted(to: Double.self), config).map { norms in
        let sorted = norms.sorted(by: >)
        return sorted[0] > 0 ? (sorted[0] - sorted[1]) / sorted[0] : 0
    }
}

/// roll(x)[i, j] = x[(i - dy) mod H, (j - dx) mod W] on every plane.
func rollPlanes(_ x: HostTensor, dy: Int, dx: Int) throws -> HostTensor {
    let (h, w) = (x.shape[2], x.shape[3])
    var values = x.values
    for plane in 0..<(x.shape[0] * x.shape[1]) {
        for i in 0..<h {
            for j in 0..<w {
                values[(plane * h + i) * w + j] = x.values[(plane * h + ((i - dy) % h + h) % h) * w + ((j - dx) % w + w) % w]
            }
        }
    }
    return try HostTensor(shape: x.shape, values: values)
}

@Suite("Polyphase: OpenCL vs reference", .parityReport)
struct PolyphaseParityTests {
    @Test("aps-pool", arguments: [1, 3, 4])
    func aps(filterSize: Int) throws {
        let device = try TestDevice.get()
        var worst = WorstErrors()
        var comparedChoices = 0
        for norm in PolyphaseNorm.allCases {
            for (n, c) in parityBatchChannels + [(5, 3)] {
                let config = try APSPool2DConfiguration(channels: c, filterSize: filterSize, norm: norm)
                let layer = APSPool2D(config)
                for (index, size) in paritySpatialSizes.enumerated() {
                    let shape = [n, c, size.h, size.w]
                    let label = "\(config) on \(shape)"
                    let x = try randomTensor(shape, seed: UInt64(300 + index * 7 + n))
                    let (expected, expectedIndices) = try Reference.apsPool2D(x, config)
                    let deviceInput = try DeviceTensor(x, on: device)
                    // The device's own choice, wherever the reference's is not a near-tie.
                    let chosen = try layer(deviceInput, indices: nil).indices
                    let chosenIndices = try chosen.toHost().values.map { Int($0) }
                    for (sample, gap) in try apsNormGap(x, config).enumerated() where gap > 1e-4 {
                        comparedChoices += 1
                        let same = chosenIndices[sample] == expectedIndices[sample]
                        #expect(same, "\(label) sample \(sample) choice")
                        ParityReport.record(
                            .polyphase, "APSPool2D", "phase choice", tolerance: 0, relative: same ? 0 : 1, nmse: nil,
                            passed: same, shape: shape, label: "\(label) sample \(sample)")
                    }
                    // Forward with the reference's phases, into a guarded output.
                    let given = try DeviceTensor(
                        HostTensor(shape: [n], values: expectedIndices.map { Float($0) }), on: device)
                    let output = try GuardedTensor(shape: expected.shape, on: device)
                    try layer.forward(deviceInput, into: output.tensor, indices: given, given: true)
                    let forward = Discrepancy(actual: try output.tensor.toHost().values, expected: expected.values)
                    let tolerance = filterSize == 1 ? 0 : Tolerance.window
                    #expect(forward.within(tolerance), "\(label) forward: \(forward)")
                    ParityReport.record(.polyphase, "APSPool2D", "forward", tolerance: tolerance, forward, shape: shape, label: label)
                    #expect(try output.damagedGuards().isEmpty, "\(label) forward wrote outside its output")
                    // Training forward and backward with the same phases.
                    let (trainingOutput, saved) = try layer.forwardTraining(deviceInput, indices: given)
                    let training = Discrepancy(actual: try trainingOutput.output.toHost().values, expected: expected.values)
                    #expect(training.within(tolerance), "\(label) training forward: \(training)")
                    ParityReport.record(
                        .polyphase, "APSPool2D", "training forward", tolerance: tolerance, training, shape: shape, label: label)
                    let gradOutput = try randomTensor(expected.shape, seed: UInt64(400 + index))
                    let expectedGradient = try Reference.apsPool2DBackward(
                        gradOutput: gradOutput, saved: .init(input: x, indices: expectedIndices), config)
                    let gradient = try GuardedTensor(shape: shape, on: device)
                    try layer.backward(try DeviceTensor(gradOutput, on: device), saved, into: gradient.tensor)
                    let backward = Discrepancy(actual: try gradient.tensor.toHost().values, expected: expectedGradient.values)
                    #expect(backward.within(tolerance), "\(label) backward: \(backward)")
                    ParityReport.record(.polyphase, "APSPool2D", "backward", tolerance: tolerance, backward, shape: shape, label: label)
                    #expect(try gradient.damagedGuards().isEmpty, "\(label) backward wrote outside its gradient")
                    worst.merge(WorstErrors(forward: forward.relativeError, backward: backward.relativeError))
                }
            }
        }
        #expect(comparedChoices > 100)
        print("aps-pool k=\(filterSize): \(worst), \(comparedChoices) phase choices compared")
    }

    @Test("aps-pool backward without saved indices re-chooses them")
    func apsRechoose() throws {
        let device = try TestDevice.get()
        let config = try APSPool2DConfiguration(channels: 3, filterSize: 3, norm: .l1)
        let x = try randomTensor([4, 3, 9, 10], seed: 5)
        let (expected, indices) = try Reference.apsPool2D(x, config)
        let deviceInput = try DeviceTensor(x, on: device)
        let (training, _) = try APSPool2D(config).forwardTraining(deviceInput)
        #expect(Discrepancy(actual: try training.output.toHost().values, expected: expected.values).within(Tolerance.window))
        let gradOutput = try randomTensor(expected.shape, seed: 6)
        // Only the input saved: backward chooses the phases again.
        let saved = APSPool2DSaved(input: deviceInput)
        let gradient = try APSPool2D(config).backward(try DeviceTensor(gradOutput, on: device), saved).input
        let expectedGradient = try Reference.apsPool2DBackward(
            gradOutput: gradOutput, saved: .init(input: x, indices: indices), config)
        #expect(Discrepancy(actual: try gradient.toHost().values, expected: expectedGradient.values).within(Tolerance.window))
        let wrongShape = try DeviceTensor(shape: [3], on: device)
        #expect(throws: NyquistError.self) { try APSPool2D(config)(deviceInput, indices: wrongShape) }
    }

    @Test("aps-pool on the device: a circular shift of the input shifts the output exactly, every shift in 4x4")
    func apsExactness() throws {
        // Same statement as the reference test: for even sizes and untied norms, the output for
        // roll(x, dy, dx) equals, bit for bit, roll(y, floor((a* + dy)/2), floor((b* + dx)/2))
        // per sample, with (a*, b*) the phase chosen for x, and the chosen phase moves to
        // ((a* + dy) mod 2, (b* + dx) mod 2).
        let device = try TestDevice.get()
        var compared = 0
        for shape in [[3, 4, 8, 6], [2, 5, 12, 16]] {
            let x = try randomTensor(shape, seed: UInt64(shape[3]))
            for filterSize in [1, 3, 4] {
                for norm in PolyphaseNorm.allCases {
                    let config = try APSPool2DConfiguration(channels: shape[1], filterSize: filterSize, norm: norm)
                    let layer = APSPool2D(config)
                    let pooled = try layer(try DeviceTensor(x, on: device), indices: nil)
                    let (y, chosen) = (pooled.output, pooled.indices)
                    let yHost = try y.toHost()
                    let indices = try chosen.toHost().values.map { Int($0) }
                    let gaps = try apsNormGap(x, config)
                    let (c, oh, ow) = (shape[1], yHost.shape[2], yHost.shape[3])
                    for dy in 0..<4 {
                        for dx in 0..<4 {
                            let shifted = try layer(
                                try DeviceTensor(try rollPlanes(x, dy: dy, dx: dx), on: device), indices: nil)
                            let (ys, shiftedChosen) = (shifted.output, shifted.indices)
                            let ysHost = try ys.toHost()
                            let shiftedIndices = try shiftedChosen.toHost().values.map { Int($0) }
                            for sample in 0..<shape[0] where gaps[sample] > 1e-4 {
                                compared += 1
                                let (a, b) = (indices[sample] % 2, indices[sample] / 2)
                                let phaseMoved = shiftedIndices[sample] == (a + dy) % 2 + 2 * ((b + dx) % 2)
                                #expect(phaseMoved)
                                let slice = sample * c * oh * ow..<(sample + 1) * c * oh * ow
                                let one = try HostTensor(shape: [1, c, oh, ow], values: Array(yHost.values[slice]))
                                let expected = try rollPlanes(one, dy: (a + dy) / 2, dx: (b + dx) / 2)
                                let exact = Array(ysHost.values[slice]) == expected.values
                                #expect(exact, "\(config) \(shape) shift (\(dy), \(dx)) sample \(sample)")
                                ParityReport.record(
                                    .polyphase, "APSPool2D", "circular-shift exactness", tolerance: 0,
                                    relative: exact && phaseMoved ? 0 : 1, nmse: nil, passed: exact && phaseMoved,
                                    shape: shape, label: "\(config) on \(shape)")
                            }
                        }
                    }
                }
            }
        }
        #expect(compared > 400)
        print("aps-pool device exactness: \(compared) cases compared bit for bit")
    }

    @Test("tips-pool", arguments: [1, 3, 5])
    func tips(kernelSize: Int) throws {
        let device = try TestDevice.get()
        var worstForward = 0.0
        var worstBackward = 0.0
        var worstLoss = 0.0
        var shifts = try ShiftGenerator(seed: UInt64(kernelSize), maxShiftH: 3, maxShiftW: 2)
        for (n, c) in parityBatchChannels + [(2, 6)] {
            let config = try TIPSPool2DConfiguration(channels: c, kernelSize: kernelSize)
            let layer = try TIPSPool2D(channels: c, kernelSize: kernelSize, seed: UInt64(c), on: device)
            let parameters = try layer.parameterValues()
            for (index, size) in paritySpatialSizes.enumerated() {
                let shape = [n, c, size.h, size.w]
                let label = "\(config) on \(shape)"
                let x = try randomTensor(shape, seed: UInt64(500 + index * 5 + n))
                let deviceInput = try DeviceTensor(x, on: device)
                let expected: Reference.TIPSResult<Float>
                do {
                    expected = try Reference.tipsPool2D(x, config, parameters: parameters)
                } catch let referenceError as NyquistError {
                    let error = #expect(throws: NyquistError.self, "\(label)") { try layer(deviceInput) }
                    #expect(error?.kind == referenceError.kind, "\(label)")
                    continue
                }
                let output = try GuardedTensor(shape: expected.output.shape, on: device)
                try layer.forward(deviceInput, into: output.tensor)
                let forward = Discrepancy(actual: try output.tensor.toHost().values, expected: expected.output.values)
                #expect(forward.within(PolyphaseTolerance.tipsForward), "\(label) forward: \(forward)")
                ParityReport.record(
                    .polyphase, "TIPSPool2D", "forward", tolerance: PolyphaseTolerance.tipsForward, forward, shape: shape,
                    label: label)
                #expect(try output.damagedGuards().isEmpty, "\(label) forward wrote outside its output")

                let drawn = shifts.next()
                let shift = MapShift(dy: drawn.dy, dx: drawn.dx, fill: index % 2 == 0 ? .circular : .zero)
                let (outputs, saved) = try layer.forwardTraining(deviceInput, undoShift: shift)
                let psi = try #require(outputs.psi, "\(label): training forward gives psi")
                for (name, actual, reference) in [
                    ("training output", outputs.output, expected.output), ("psi", psi, expected.psi),
                    ("tau", outputs.tau, expected.tau),
                ] {
                    let discrepancy = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
                    #expect(discrepancy.within(PolyphaseTolerance.tipsForward), "\(label) \(name): \(discrepancy)")
                    ParityReport.record(
                        .polyphase, "TIPSPool2D", name == "training output" ? "training forward" : "training forward: \(name)",
                        tolerance: PolyphaseTolerance.tipsForward, discrepancy, shape: shape, label: label)
                    worstForward = max(worstForward, discrepancy.relativeError)
                }
                let referenceSaved = Reference.TIPSSaved(input: x, parameters: parameters, shift: shift)
                let expectedLosses = try Reference.tipsLosses(saved: referenceSaved, config)
                let losses = try #require(try outputs.losses, "\(label): training forward gives the losses")
                let lossError = max(
                    abs(losses.fm - expectedLosses.fm) / max(abs(expectedLosses.fm), 1e-3),
                    abs((losses.undo ?? .nan) - (expectedLosses.undo ?? 0)) / max(expectedLosses.undo ?? 0, 1e-3))
                #expect(lossError < 1e-5, "\(label) losses \(losses) vs \(expectedLosses)")
                ParityReport.record(
                    .polyphase, "TIPSPool2D", "losses L_FM, L_undo", tolerance: 1e-5, relative: lossError, nmse: nil,
                    passed: lossError < 1e-5, shape: shape, label: label)
                worstLoss = max(worstLoss, lossError)

                let weights = try TIPSLossWeights(fm: 0.5, undo: 2)
                let gradOutput = try randomTensor(expected.output.shape, seed: UInt64(600 + index))
                let expectedGradients = try Reference.tipsPool2DBackward(
                    gradOutput: gradOutput, saved: referenceSaved, config, lossWeights: weights)
                let gradients = try layer.backward(
                    TIPSPool2DOutputGradients(output: try DeviceTensor(gradOutput, on: device), lossWeights: weights), saved)
                var pairs = [("input", gradients.input, expectedGradients.input)]
                for name in [TIPSPool2DConfiguration.conv1Name, TIPSPool2DConfiguration.conv2Name] {
                    let actual = try #require(gradients.parameters[name])
                    let reference = try #require(expectedGradients.parameters[name])
                    pairs.append((name, actual, reference))
                }
                for (name, actual, reference) in pairs {
                    #expect(actual.shape == reference.shape, "\(label) \(name) shape")
                    let discrepancy = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
                    #expect(discrepancy.within(PolyphaseTolerance.tipsBackward), "\(label) grad \(name): \(discrepancy)")
                    ParityReport.record(
                        .polyphase, "TIPSPool2D", name == "input" ? "backward" : "backward: \(name)",
                        tolerance: PolyphaseTolerance.tipsBackward, discrepancy, shape: shape, label: label)
                    worstBackward = max(worstBackward, discrepancy.relativeError)
                }
                // Backward of the output alone (default loss weights: neither loss) agrees with the
                // reference's, written into a guarded gradient.
                let plain = try GuardedTensor(shape: shape, on: device)
                try layer.backward(
                    TIPSPool2DOutputGradients(output: try DeviceTensor(gradOutput, on: device)), saved, into: plain.tensor)
                let plainExpected = try Reference.tipsPool2DBackward(gradOutput: gradOutput, saved: referenceSaved, config)
                let plainError = Discrepancy(actual: try plain.tensor.toHost().values, expected: plainExpected.input.values)
                #expect(plainError.within(PolyphaseTolerance.tipsBackward), "\(label) plain backward: \(plainError)")
                #expect(try plain.damagedGuards().isEmpty, "\(label) backward wrote outside its gradient")
            }
        }
        print(
            "tips-pool k=\(kernelSize): worst relative error forward \(worstForward), backward \(worstBackward), "
                + "losses \(worstLoss)")
    }

    @Test("tips-pool backward with external gradients of psi and tau: fused (whole planes, 3-row bands) and unfused")
    func tipsExternalGradients() throws {
        let device = try TestDevice.get()
        // One group size for every path, so the paths share their programs and must agree bit for
        // bit (tips.cl's determinism rule); bandElements 1: bands of 3 rows, 0: the unfused passes.
        let paths = [nil, 1, 0].map { TIPSKnobs(groupSize: 64, elementsPerGroup: 4096, bandElements: $0) }
        // Odd and even H and W; the wide ones reach the vector chunks of dz (W' - 2p - (W & 1) >= 8).
        let shapes = [[2, 3, 6, 8], [1, 2, 7, 21], [3, 2, 12, 17], [2, 1, 9, 16]]
        for (index, shape) in shapes.enumerated() {
            let kernelSize = index == 2 ? 5 : 3
            let layer = try TIPSPool2D(channels: shape[1], kernelSize: kernelSize, seed: UInt64(20 + index), on: device)
            let parameters = try layer.parameterValues()
            let x = try randomTensor(shape, seed: UInt64(700 + index))
            let input = try DeviceTensor(x, on: device)
            let forward = try Reference.tipsPool2D(x, layer.configuration, parameters: parameters)
            let gradOutput = try randomTensor(forward.output.shape, seed: UInt64(710 + index))
            let gradPsi = try randomTensor(forward.psi.shape, seed: UInt64(720 + index))
            let gradTau = try randomTensor(forward.tau.shape, seed: UInt64(730 + index))
            let shift = MapShift(dy: -1, dx: 2, fill: index % 2 == 0 ? .circular : .zero)
            // Both external gradients with both losses; psi's alone from the input alone (the
            // forward recomputed); tau's alone with L_FM; neither (a plan of its own: the
            // external variants must not be served for it).
            let cases: [(name: String, psi: Bool, tau: Bool, weights: TIPSLossWeights, full: Bool)] = [
                ("psi and tau, both losses", true, true, try TIPSLossWeights(fm: 0.5, undo: 2), true),
                ("psi only, input saved", true, false, .none, false),
                ("tau only, L_FM", false, true, try TIPSLossWeights(fm: 0.5), true),
                ("neither", false, false, .none, true),
            ]
            let expected = try cases.map { item in
                try Reference.tipsPool2DBackward(
                    gradOutput: gradOutput,
                    saved: Reference.TIPSSaved(input: x, parameters: parameters, shift: item.full ? shift : nil),
                    layer.configuration, lossWeights: item.weights, gradPsi: item.psi ? gradPsi : nil,
                    gradTau: item.tau ? gradTau : nil)
            }
            var firstPathBits: [String: [UInt32]] = [:]
            for launch in paths {
                try withPinnedKnobs(
                    launch, families: [PolyphaseLaunch.tipsFamily], shapeClasses: [PolyphaseLaunch.tipsShapeClass]
                ) {
                    let (_, trainingSaved) = try layer.forwardTraining(input, undoShift: shift)
                    for (item, reference) in zip(cases, expected) {
                        let label = "\(layer.configuration) on \(shape), \(launch), \(item.name)"
                        let gradients = TIPSPool2DOutputGradients(
                            output: try DeviceTensor(gradOutput, on: device),
                            psi: item.psi ? try DeviceTensor(gradPsi, on: device) : nil,
                            tau: item.tau ? try DeviceTensor(gradTau, on: device) : nil, lossWeights: item.weights)
                        let gradInput = try GuardedTensor(shape: shape, on: device)
                        let weights = try layer.backward(
                            gradients, item.full ? trainingSaved : TIPSPool2DSaved(input: input), into: gradInput.tensor)
                        #expect(try gradInput.damagedGuards().isEmpty, "\(label): wrote outside the input's gradient")
                        var pairs = [("input", gradInput.tensor, reference.input)]
                        for name in [TIPSPool2DConfiguration.conv1Name, TIPSPool2DConfiguration.conv2Name] {
                            pairs.append((name, try #require(weights[name]), try #require(reference.parameters[name])))
                        }
                        for (name, actual, referenceValue) in pairs {
                            let values = try actual.toHost().values
                            let discrepancy = Discrepancy(actual: values, expected: referenceValue.values)
                            #expect(discrepancy.within(PolyphaseTolerance.tipsBackward), "\(label) grad \(name): \(discrepancy)")
                            ParityReport.record(
                                .polyphase, "TIPSPool2D", "backward, external gradients: \(name)",
                                tolerance: PolyphaseTolerance.tipsBackward, discrepancy, shape: shape, label: label)
                            let key = "\(item.name) \(name)"
                            let bits = values.map(\.bitPattern)
                            if let first = firstPathBits[key] {
                                #expect(bits == first, "\(label) grad \(name) differs from the first path's bits")
                            } else {
                                firstPathBits[key] = bits
                            }
                        }
                    }
                }
            }
        }
    }

    @Test("tips-pool backward refuses external gradients that do not fit psi or tau with invalidShape")
    func tipsExternalGradientShapes() throws {
        let device = try TestDevice.get()
        let layer = try TIPSPool2D(channels: 2, seed: 3, on: device)
        // H = 5: psi is 6 rows high, so a gradient of the input's own shape does not fit it.
        let input = try DeviceTensor(try randomTensor([1, 2, 5, 6], seed: 740), on: device)
        let (outputs, saved) = try layer.forwardTraining(input)
        let gradOutput = try DeviceTensor(try randomTensor(outputs.output.shape, seed: 741), on: device)
        let misshapen: [(String, DeviceTensor?, DeviceTensor?)] = [
            ("psi of the input's shape", try DeviceTensor(try randomTensor([1, 2, 5, 6], seed: 742), on: device), nil),
            ("psi of another batch", try DeviceTensor(try randomTensor([2, 2, 6, 6], seed: 743), on: device), nil),
            ("tau with 3 entries", nil, try DeviceTensor(try randomTensor([1, 2, 3], seed: 744), on: device)),
            ("tau of rank 4", nil, try DeviceTensor(try randomTensor([1, 2, 4, 1], seed: 745), on: device)),
        ]
        for (name, psi, tau) in misshapen {
            let error = #expect(throws: NyquistError.self, "\(name)") {
                try layer.backward(TIPSPool2DOutputGradients(output: gradOutput, psi: psi, tau: tau), saved)
            }
            #expect(error?.kind == .invalidShape, "\(name)")
        }
        // The shapes the forward gave are accepted.
        let psi: DeviceTensor = try #require(outputs.psi)
        let accepted = try layer.backward(TIPSPool2DOutputGradients(output: gradOutput, psi: psi, tau: outputs.tau), saved)
        #expect(accepted.input.shape == [1, 2, 5, 6])
    }

    @Test("NaN and Inf propagate as in the reference (APS: the first NaN norm wins)")
    func nonFinite() throws {
        let device = try TestDevice.get()
        var x = try randomTensor([3, 2, 6, 7], seed: 77)
        x.values[5] = .nan  // sample 0, channel 0, row 0, column 5: phase p2 = (0,1)
        x.values[2 * 42 + 13] = .infinity  // sample 1
        x.values[2 * 42 + 50] = -.infinity  // sample 1, channel 1
        for filterSize in [1, 3] {
            for norm in PolyphaseNorm.allCases {
                let config = try APSPool2DConfiguration(channels: 2, filterSize: filterSize, norm: norm)
                let (expected, indices) = try Reference.apsPool2D(x, config)
                // Unblurred, only p2 of sample 0 holds the NaN; the blur spreads it to every phase.
                #expect(indices[0] == (filterSize == 1 ? 2 : 0), "\(config)")
                let pooled = try APSPool2D(config)(try DeviceTensor(x, on: device), indices: nil)
                let (y, chosen) = (pooled.output, pooled.indices)
                #expect(try chosen.toHost().values.map { Int($0) } == indices, "\(config)")
                let discrepancy = Discrepancy(actual: try y.toHost().values, expected: expected.values)
                #expect(discrepancy.within(filterSize == 1 ? 0 : Tolerance.window), "\(config): \(discrepancy)")
            }
        }
        let config = try TIPSPool2DConfiguration(channels: 2)
        let layer = try TIPSPool2D(channels: 2, seed: 3, on: device)
        let expected = try Reference.tipsPool2D(x, config, parameters: try layer.parameterValues())
        // psi comes from the training forward (inference does not write it).
        let outputs = try layer.forwardTraining(try DeviceTensor(x, on: device)).output
        let psi = try #require(outputs.psi)
        for (name, actual, reference) in [
            ("output", outputs.output, expected.output), ("psi", psi, expected.psi), ("tau", outputs.tau, expected.tau),
        ] {
            let discrepancy = Discrepancy(actual: try actual.toHost().values, expected: reference.values)
            #expect(discrepancy.within(PolyphaseTolerance.tipsForward), "tips \(name): \(discrepancy)")
        }
    }

    @Test("tips-pool parameters: safetensors-style dictionaries are checked by name and shape, strictly")
    func tipsParameters() throws {
        let device = try TestDevice.get()
        let config = try TIPSPool2DConfiguration(channels: 4)
        var parameters = config.defaultParameters(seed: 1)
        let layer = try TIPSPool2D(config, parameters: parameters, on: device)
        #expect(Set(layer.parameters.keys) == [TIPSPool2DConfiguration.conv1Name, TIPSPool2DConfiguration.conv2Name])
        // An unexpected name is refused and named (PyTorch's strict load_state_dict) ...
        parameters["other.weight"] = try HostTensor(shape: [1], values: [0])
        let unexpected = #expect(throws: NyquistError.self) { try TIPSPool2D(config, parameters: parameters, on: device) }
        #expect(unexpected?.kind == .invalidParameters)
        #expect(unexpected?.message.contains("other.weight") == true)
        // ... unless a prefix selects the layer out of a larger dictionary.
        var model = ["head.other.weight": try HostTensor(shape: [1], values: [0])]
        for (name, tensor) in config.defaultParameters(seed: 1) { model["layer1.tips." + name] = tensor }
        let selected = try StateDictSelection.select(
            model, prefix: "layer1.tips.", expected: TIPSPool2DConfiguration.parameterNames, layer: "tips-pool")
        #expect(try TIPSPool2D(config, parameters: selected, on: device).parameterValues() == layer.parameterValues())
        #expect(try layer.parameterValues() == config.defaultParameters(seed: 1))
        parameters["other.weight"] = nil
        parameters[TIPSPool2DConfiguration.conv2Name] = try HostTensor(shape: [4, 1, 1], repeating: 0)
        let wrong = #expect(throws: NyquistError.self) { try TIPSPool2D(config, parameters: parameters, on: device) }
        #expect(wrong?.kind == .invalidParameters)
        parameters[TIPSPool2DConfiguration.conv2Name] = nil
        let missing = #expect(throws: NyquistError.self) { try TIPSPool2D(config, parameters: parameters, on: device) }
        #expect(missing?.kind == .invalidParameters)
        #expect(config.defaultParameters(seed: 9) == config.defaultParameters(seed: 9))
        #expect(config.defaultParameters(seed: 9) != config.defaultParameters(seed: 10))
    }
}
