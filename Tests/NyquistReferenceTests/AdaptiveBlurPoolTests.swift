import NyquistCore
import NyquistReference
import PropertyBased
import Testing

/// Random parameters in Double: Kaiming conv weights scaled up so the softmax is far from
/// uniform, gamma around 1, beta and running statistics away from their defaults.
func adaptiveParameters(_ config: AdaptiveBlurPool2DConfiguration, using rng: inout Xoshiro) throws
    -> AdaptiveBlurPool2DParameters<Double>
{
    var parameters = AdaptiveBlurPool2DParameters<Double>(configuration: config, seed: rng.next())
    let p = config.predictorChannels
    parameters.convWeight.values = parameters.convWeight.values.map { $0 * 3 }
    parameters.bnWeight.values = (0..<p).map { _ in Double.random(in: 0.5...1.5, using: &rng) }
    parameters.bnBias.values = (0..<p).map { _ in Double.random(in: -0.5...0.5, using: &rng) }
    parameters.runningMean.values = (0..<p).map { _ in Double.random(in: -0.2...0.2, using: &rng) }
    parameters.runningVar.values = (0..<p).map { _ in Double.random(in: 0.5...2, using: &rng) }
    return parameters
}

/// One case of the AdaptiveBlurPool grids.
struct AdaptiveCase: CustomStringConvertible, Sendable {
    let shape: [Int]
    let config: AdaptiveBlurPool2DConfiguration
    var description: String { "\(config) on \(shape)" }

    /// k 3/5, stride 1/2, groups 1, 2 and C, both softmax modes, padding modes in turn, over an
    /// odd/even and an even/odd shape; plus k = 7 once per softmax mode.
    static func grid() throws -> [AdaptiveCase] {
        var cases: [AdaptiveCase] = []
        var modeIndex = 0
        for shape in [[2, 4, 5, 6], [1, 2, 6, 5]] {
            for k in [3, 5] {
                for stride in [1, 2] {
                    for groups in Set([1, 2, shape[1]]).sorted() {
                        for softmax in AdaptiveSoftmax.allCases {
                            let mode = PaddingMode.allCases[modeIndex % PaddingMode.allCases.count]
                            modeIndex += 1
                            cases.append(
                                AdaptiveCase(
                                    shape: shape,
                                    config: try AdaptiveBlurPool2DConfiguration(
                                        channels: shape[1], kernelSize: k, stride: stride, groups: groups,
                                        padding: mode, softmax: softmax)))
                        }
                    }
                }
            }
        }
        for softmax in AdaptiveSoftmax.allCases {
            cases.append(
                AdaptiveCase(
                    shape: [1, 2, 8, 7],
                    config: try AdaptiveBlurPool2DConfiguration(
                        channels: 2, kernelSize: 7, stride: 2, groups: 2, padding: .reflect, softmax: softmax)))
        }
        return cases
    }
}

@Suite("AdaptiveBlurPool reference")
struct AdaptiveBlurPoolTests {
    static let step = 1e-5

    @Test("Directional derivatives match backward for x, conv.weight, bn.weight, bn.bias", arguments: try AdaptiveCase.grid())
    func gradients(_ testCase: AdaptiveCase) throws {
        let config = testCase.config
        var rng = seededGenerator(UInt64(config.kernelSize * 1000 + config.stride * 100 + config.groups * 10 + testCase.shape[2]))
        let x = try randomTensor(testCase.shape, using: &rng)
        let parameters = try adaptiveParameters(config, using: &rng)
        let forward = try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, config)
        let g = try randomTensor(forward.output.shape, using: &rng)
        let gradients = try Reference.adaptiveBlurPool2DBackward(gradOutput: g, saved: forward.saved, config)
        #expect(gradients.input.shape == x.shape)

        func loss(_ x: Tensor<Double>, _ parameters: AdaptiveBlurPool2DParameters<Double>) throws -> Double {
            dot(try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, config).output.values, g.values)
        }
        var worst = (0.0, "")
        func check(_ name: String, analytic gradient: [Double], perturb: (Double, [Double]) throws -> Double) throws {
            var rng2 = seededGenerator(UInt64(gradient.count))
            let d = (0..<gradient.count).map { _ in Double.random(in: -1...1, using: &rng2) }
            let numeric = (try perturb(Self.step, d) - perturb(-Self.step, d)) / (2 * Self.step)
            let analytic = dot(gradient, d)
            let scale = max(absoluteDot(gradient, d), 1e-12)
            let error = abs(numeric - analytic) / scale
            #expect(error <= 1e-6, "\(testCase) \(name): numeric \(numeric), analytic \(analytic), error \(error)")
            if error > worst.0 { worst = (error, name) }
        }
        try check("input", analytic: gradients.input.values) { t, d in
            try loss(shifted(x, by: d, times: t), parameters)
        }
        try check("conv.weight", analytic: gradients.convWeight.values) { t, d in
            var p = parameters
            p.convWeight = try shifted(parameters.convWeight, by: d, times: t)
            return try loss(x, p)
        }
        try check("bn.weight", analytic: gradients.bnWeight.values) { t, d in
            var p = parameters
            p.bnWeight = try shifted(parameters.bnWeight, by: d, times: t)
            return try loss(x, p)
        }
        try check("bn.bias", analytic: gradients.bnBias.values) { t, d in
            var p = parameters
            p.bnBias = try shifted(parameters.bnBias, by: d, times: t)
            return try loss(x, p)
        }
        print("adaptive FD \(testCase): largest directional error \(worst.0) (\(worst.1))")
    }

    @Test("Frozen BatchNorm (inference forward): directional derivatives match backward", arguments: try AdaptiveCase.grid().enumerated().filter { $0.offset % 3 == 0 }.map(\.element))
    func frozenGradients(_ testCase: AdaptiveCase) throws {
        let config = testCase.config
        var rng = seededGenerator(UInt64(config.kernelSize * 999 + config.stride * 99 + config.groups * 9 + testCase.shape[2]))
        let x = try randomTensor(testCase.shape, using: &rng)
        let parameters = try adaptiveParameters(config, using: &rng)
        let output = try Reference.adaptiveBlurPool2D(x, parameters: parameters, config).output
        let g = try randomTensor(output.shape, using: &rng)
        let gradients = try Reference.adaptiveBlurPool2DBackward(
            gradOutput: g, saved: .init(input: x, parameters: parameters, batchStatistics: false), config)
        func loss(_ x: Tensor<Double>, _ parameters: AdaptiveBlurPool2DParameters<Double>) throws -> Double {
            dot(try Reference.adaptiveBlurPool2D(x, parameters: parameters, config).output.values, g.values)
        }
        var worst = 0.0
        let cases: [(String, [Double], (Double, [Double]) throws -> Double)] = [
            ("input", gradients.input.values, { t, d in try loss(shifted(x, by: d, times: t), parameters) }),
            ("conv.weight", gradients.convWeight.values, { t, d in
                var p = parameters
                p.convWeight = try shifted(parameters.convWeight, by: d, times: t)
                return try loss(x, p)
            }),
            ("bn.weight", gradients.bnWeight.values, { t, d in
                var p = parameters
                p.bnWeight = try shifted(parameters.bnWeight, by: d, times: t)
                return try loss(x, p)
            }),
            ("bn.bias", gradients.bnBias.values, { t, d in
                var p = parameters
                p.bnBias = try shifted(parameters.bnBias, by: d, times: t)
                return try loss(x, p)
            }),
        ]
        for (name, gradient, perturb) in cases {
            var rng2 = seededGenerator(UInt64(gradient.count) + 5)
            let d = (0..<gradient.count).map { _ in Double.random(in: -1...1, using: &rng2) }
            let numeric = (try perturb(Self.step, d) - perturb(-Self.step, d)) / (2 * Self.step)
            let analytic = dot(gradient, d)
            let error = abs(numeric - analytic) / max(absoluteDot(gradient, d), 1e-12)
            #expect(error <= 1e-6, "\(testCase) frozen \(name): numeric \(numeric), analytic \(analytic)")
            worst = max(worst, error)
        }
        print("adaptive frozen-BN FD \(testCase): largest directional error \(worst)")
    }

    @Test("Every input-gradient coordinate matches central differences (small map)", arguments: AdaptiveSoftmax.allCases)
    func fullInputGradient(softmax: AdaptiveSoftmax) throws {
        let config = try AdaptiveBlurPool2DConfiguration(
            channels: 2, kernelSize: 3, stride: 2, groups: 2, padding: .reflect, softmax: softmax)
        var rng = seededGenerator(5)
        let x = try randomTensor([2, 2, 4, 5], using: &rng)
        let parameters = try adaptiveParameters(config, using: &rng)
        let forward = try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, config)
        let g = try randomTensor(forward.output.shape, using: &rng)
        let gradient = try Reference.adaptiveBlurPool2DBackward(gradOutput: g, saved: forward.saved, config).input.values
        var numeric = [Double](repeating: 0, count: x.count)
        for index in 0..<x.count {
            var plus = x
            plus.values[index] += Self.step
            var minus = x
            minus.values[index] -= Self.step
            numeric[index] =
                (dot(try Reference.adaptiveBlurPool2DTraining(plus, parameters: parameters, config).output.values, g.values)
                    - dot(try Reference.adaptiveBlurPool2DTraining(minus, parameters: parameters, config).output.values, g.values))
                / (2 * Self.step)
        }
        let error = maxAbsDifference(numeric, gradient) / max(maxAbs(gradient), 1e-12)
        #expect(error <= 1e-6, "largest coordinate error \(error)")
        print("adaptive \(softmax) full input-gradient FD error: \(error)")
    }

    @Test("Filters: per-group sums to 1 per group, joint sums to 1 over all; per-group preserves a constant")
    func filterSums() throws {
        var rng = seededGenerator(11)
        for softmax in AdaptiveSoftmax.allCases {
            for mode in [PaddingMode.reflect, .replicate, .circular] {
                let config = try AdaptiveBlurPool2DConfiguration(
                    channels: 4, kernelSize: 3, stride: 2, groups: 2, padding: mode, softmax: softmax)
                let parameters = try adaptiveParameters(config, using: &rng)
                let x = try randomTensor([2, 4, 7, 6], using: &rng)
                let (_, filters) = try Reference.adaptiveBlurPool2D(x, parameters: parameters, config)
                let (oh, ow) = (filters.shape[2], filters.shape[3])
                for n in 0..<2 {
                    for q in 0..<(oh * ow) {
                        let groupSums = (0..<2).map { g in
                            (0..<9).reduce(0.0) { $0 + filters.values[(n * 18 + g * 9 + $1) * oh * ow + q] }
                        }
                        if softmax == .perGroup {
                            #expect(groupSums.allSatisfy { abs($0 - 1) < 1e-12 })
                        } else {
                            #expect(abs(groupSums.reduce(0, +) - 1) < 1e-12)
                        }
                    }
                }
                // A constant input: every filter sees only the constant, so per-group output is it.
                let constant = try Tensor<Double>(shape: [2, 4, 7, 6], repeating: 0.75)
                let inference = try Reference.adaptiveBlurPool2D(constant, parameters: parameters, config).output
                let training = try Reference.adaptiveBlurPool2DTraining(constant, parameters: parameters, config).output
                if softmax == .perGroup {
                    #expect(maxAbsDifference(inference.values, Array(repeating: 0.75, count: inference.count)) < 1e-12)
                    #expect(maxAbsDifference(training.values, Array(repeating: 0.75, count: training.count)) < 1e-12)
                } else {
                    // Joint: each group's share of the one softmax scales the constant; the shares
                    // sum to 1 and the groups are equally large, so the channel mean is 0.75 / G.
                    let mean = inference.values.reduce(0, +) / Double(inference.count)
                    #expect(abs(mean - 0.375) < 1e-12)
                }
            }
        }
    }

    @Test("Inference with running statistics equal to the batch statistics reproduces training")
    func inferenceMatchesTraining() throws {
        var rng = seededGenerator(3)
        for softmax in AdaptiveSoftmax.allCases {
            let config = try AdaptiveBlurPool2DConfiguration(channels: 6, kernelSize: 5, stride: 2, groups: 3, softmax: softmax)
            let parameters = try adaptiveParameters(config, using: &rng)
            let x = try randomTensor([2, 6, 9, 8], using: &rng)
            let training = try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, config)
            var frozen = parameters
            frozen.runningMean = training.batchMean
            frozen.runningVar = training.batchVariance
            let inference = try Reference.adaptiveBlurPool2D(x, parameters: frozen, config)
            #expect(maxAbsDifference(inference.output.values, training.output.values) < 1e-12)
            #expect(maxAbsDifference(inference.filters.values, training.filters.values) < 1e-12)

            // Running statistics: momentum 0.1, unbiased variance over N*H*W = 144 positions.
            let count = 144.0
            for o in 0..<config.predictorChannels {
                let mean = 0.9 * parameters.runningMean.values[o] + 0.1 * training.batchMean.values[o]
                let variance = 0.9 * parameters.runningVar.values[o] + 0.1 * training.batchVariance.values[o] * count / (count - 1)
                #expect(abs(training.updatedParameters.runningMean.values[o] - mean) < 1e-12)
                #expect(abs(training.updatedParameters.runningVar.values[o] - variance) < 1e-12)
            }
            // The batch statistics cover all full-resolution positions: compare with a direct sum.
            let stride1 = try AdaptiveBlurPool2DConfiguration(
                channels: 6, kernelSize: 5, stride: 1, groups: 3, softmax: softmax)
            let full = try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, stride1)
            #expect(maxAbsDifference(full.batchMean.values, training.batchMean.values) < 1e-12)
            #expect(maxAbsDifference(full.batchVariance.values, training.batchVariance.values) < 1e-12)
        }
    }

    @Test("A hand-computed case: zero conv weight gives the box filter of the beta softmax")
    func handComputed() throws {
        // conv.weight = 0: z = beta everywhere, so w = softmax(beta) at every pixel.
        let config = try AdaptiveBlurPool2DConfiguration(
            channels: 1, kernelSize: 3, stride: 1, groups: 1, padding: .zero, softmax: .perGroup)
        var parameters = AdaptiveBlurPool2DParameters<Double>(configuration: config)
        parameters.convWeight.values = Array(repeating: 0, count: 81)
        parameters.bnBias.values = [0, 0, 0, 0, 0, 0, 0, 0, 2]  // weight e^2 on the bottom-right tap
        let x = try Tensor<Double>(shape: [1, 1, 2, 2], values: [1, 2, 3, 4])
        let y = try Reference.adaptiveBlurPool2D(x, parameters: parameters, config).output
        let e2 = 7.38905609893065
        let total = 8 + e2
        // Output (0,0): taps read xpad rows -1...1, cols -1...1: x[0,0]=1 (centre), x[0,1]=2
        // (right), x[1,0]=3 (below), x[1,1]=4 (bottom-right, weight e^2).
        let expected = (1 + 2 + 3 + 4 * e2) / total
        #expect(abs(y.values[0] - expected) < 1e-12)
    }

    @Test("Typed errors: G not dividing C, misshapen parameters, too few positions, wrong gradient shape")
    func errors() throws {
        #expect(throws: NyquistError.self) { try AdaptiveBlurPool2DConfiguration(channels: 6, groups: 4) }
        let config = try AdaptiveBlurPool2DConfiguration(channels: 2, kernelSize: 3, stride: 1, groups: 2, padding: .zero)
        var rng = seededGenerator(9)
        let parameters = try adaptiveParameters(config, using: &rng)
        var bad = parameters
        bad.bnBias = try Tensor(shape: [17], repeating: 0)
        #expect(throws: NyquistError.self) {
            try Reference.adaptiveBlurPool2D(try randomTensor([1, 2, 4, 4], using: &rng), parameters: bad, config)
        }
        do {
            _ = try Reference.adaptiveBlurPool2DTraining(try Tensor<Double>(shape: [1, 2, 1, 1], repeating: 1), parameters: parameters, config)
            Issue.record("one position per channel must throw in training")
        } catch let error as NyquistError {
            #expect(error.kind == .invalidShape && error.message.contains("more than one value"))
        }
        // Inference on a single position is fine.
        _ = try Reference.adaptiveBlurPool2D(try Tensor<Double>(shape: [1, 2, 1, 1], repeating: 1), parameters: parameters, config)
        let x = try randomTensor([1, 2, 4, 4], using: &rng)
        let forward = try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, config)
        #expect(throws: NyquistError.self) {
            try Reference.adaptiveBlurPool2DBackward(
                gradOutput: try Tensor<Double>(shape: [1, 2, 2, 2], repeating: 0), saved: forward.saved, config)
        }
    }
}
