import NyquistCore
import NyquistReference
import PropertyBased
import Testing

/// APS and TIPS reference: hand-checked values, finite-difference gradients in Double, the TIPS
/// losses, and APS's exact invariance to circular shifts.
@Suite("Polyphase reference")
struct PolyphaseReferenceTests {
    static let step = 1e-6
    static let shapes: [[Int]] = [[1, 1, 4, 4], [2, 3, 6, 8], [3, 2, 5, 7], [2, 1, 2, 3], [1, 2, 1, 1]]

    /// roll(x)[i, j] = x[(i - dy) mod H, (j - dx) mod W] on every plane.
    static func roll<T>(_ x: Tensor<T>, dy: Int, dx: Int) throws -> Tensor<T> {
        let (h, w) = (x.shape[2], x.shape[3])
        let planes = x.shape[0] * x.shape[1]
        var values = x.values
        for plane in 0..<planes {
            for i in 0..<h {
                for j in 0..<w {
                    let si = ((i - dy) % h + h) % h
                    let sj = ((j - dx) % w + w) % w
                    values[(plane * h + i) * w + j] = x.values[(plane * h + si) * w + sj]
                }
            }
        }
        return try Tensor(shape: x.shape, values: values)
    }

    /// Largest |numeric - analytic| relative to max |analytic| over random directions.
    static func directionalError(
        _ f: (Tensor<Double>) throws -> Double, at x: Tensor<Double>, gradient: [Double], rng: inout Xoshiro,
        directions: Int = 3
    ) throws -> Double {
        var worst = 0.0
        let scale = max(maxAbs(gradient), 1e-3)
        for _ in 0..<directions {
            let d = (0..<x.count).map { _ in Double.random(in: -1...1, using: &rng) }
            let numeric = (try f(try shifted(x, by: d, times: step)) - f(try shifted(x, by: d, times: -step))) / (2 * step)
            let analytic = dot(gradient, d)
            worst = max(worst, abs(numeric - analytic) / (scale * Double(x.count).squareRoot()))
        }
        return worst
    }

    /// Relative gap between the largest and second largest phase norm, smallest over samples.
    static func normGap(_ x: Tensor<Double>, _ config: APSPool2DConfiguration) throws -> Double {
        try Reference.apsNorms(x, config).map { norms in
            let sorted = norms.sorted(by: >)
            return (sorted[0] - sorted[1]) / max(sorted[0], 1e-300)
        }.min() ?? 0
    }

    /// A random input whose phase norms are at least 1e-3 apart (relative), so the choice cannot
    /// move under a finite-difference step, and whether one was found: on small maps blurring
    /// can tie phases structurally (every blurred 2x2 map, l1 on a blurred 2x3 map), and then
    /// only the given-indices mode is differentiable.
    static func untiedInput(_ shape: [Int], _ config: APSPool2DConfiguration, using rng: inout Xoshiro) throws
        -> (Tensor<Double>, Bool)
    {
        for _ in 0..<50 {
            let x = try randomTensor(shape, using: &rng)
            if try normGap(x, config) >= 1e-3 { return (x, true) }
        }
        return (try randomTensor(shape, using: &rng), false)
    }

    @Test("APS picks the phase with the largest norm, ties to the lowest index")
    func apsHand() throws {
        // 4x4 plane; phase (1,0) (odd rows, even columns) holds the largest values.
        let values: [Double] = [
            1, 0, 1, 0,
            5, 0, 5, 0,
            1, 0, 1, 0,
            5, 0, 5, 0,
        ]
        let x = try Tensor(shape: [1, 1, 4, 4], values: values)
        for norm in PolyphaseNorm.allCases {
            let config = try APSPool2DConfiguration(channels: 1, norm: norm)
            let (y, indices) = try Reference.apsPool2D(x, config)
            #expect(indices == [1])
            #expect(y.values == [5, 5, 5, 5])
        }
        // All four phases equal: the lowest index wins.
        let flat = try Tensor<Double>(shape: [1, 1, 2, 2], repeating: 1)
        #expect(try Reference.apsPool2D(flat, try APSPool2DConfiguration(channels: 1)).indices == [0])
        // Given indices override the choice; out-of-range ones are rejected.
        let (given, used) = try Reference.apsPool2D(x, try APSPool2DConfiguration(channels: 1), indices: [2])
        #expect(used == [2] && given.values == [0, 0, 0, 0])
        #expect(throws: NyquistError.self) {
            try Reference.apsPool2D(x, try APSPool2DConfiguration(channels: 1), indices: [4])
        }
        // l1 and l2 can disagree: one large value against many medium ones.
        let mixed = try Tensor<Double>(shape: [1, 1, 2, 4], values: [3, 0, 0, 0, 0, 2, 0, 2])
        #expect(try Reference.apsPool2D(mixed, try APSPool2DConfiguration(channels: 1, norm: .l1)).indices == [3])
        #expect(try Reference.apsPool2D(mixed, try APSPool2DConfiguration(channels: 1, norm: .l2)).indices == [0])
        #expect(try Reference.apsPool2D(mixed, try APSPool2DConfiguration(channels: 1, norm: .linf)).indices == [0])
        // A NaN makes its phase win (the first NaN norm, as torch.argmax).
        let withNaN = try Tensor<Double>(shape: [1, 1, 2, 2], values: [9, 1, .nan, 1])
        #expect(try Reference.apsPool2D(withNaN, try APSPool2DConfiguration(channels: 1)).indices == [1])
        // Odd sizes wrap row/column 0 to the bottom/right.
        let odd = try Tensor<Double>(shape: [1, 1, 1, 3], values: [1, 2, 3])
        let (oddY, oddIndex) = try Reference.apsPool2D(odd, try APSPool2DConfiguration(channels: 1, norm: .l1))
        #expect(oddIndex == [0] && oddY.values == [1, 3])
    }

    @Test("APS backward matches finite differences (away from ties), with and without given indices")
    func apsGradients() throws {
        var rng = seededGenerator(61)
        var worst = 0.0
        for shape in Self.shapes {
            for filterSize in [1, 2, 3, 4, 7] {
                for norm in PolyphaseNorm.allCases {
                    let config = try APSPool2DConfiguration(channels: shape[1], filterSize: filterSize, norm: norm)
                    let (x, untied) = try Self.untiedInput(shape, config, using: &rng)
                    let modes: [[Int]?] = untied ? [nil, (0..<shape[0]).map { $0 % 4 }] : [(0..<shape[0]).map { $0 % 4 }]
                    for given in modes {
                        let (y, indices, saved) = try Reference.apsPool2DTraining(x, config, indices: given)
                        let g = try randomTensor(y.shape, using: &rng)
                        let gradient = try Reference.apsPool2DBackward(gradOutput: g, saved: saved, config)
                        let f: (Tensor<Double>) throws -> Double = {
                            let (output, chosen) = try Reference.apsPool2D($0, config, indices: given)
                            #expect(chosen == indices, "the choice moved under a step of \(Self.step)")
                            return dot(output.values, g.values)
                        }
                        let error = try Self.directionalError(f, at: x, gradient: gradient.values, rng: &rng)
                        #expect(error < 1e-8, "\(config) \(shape) given \(given ?? [])")
                        worst = max(worst, error)
                    }
                }
            }
        }
        print("APS reference: worst finite-difference error \(worst)")
    }

    @Test("APS of a circularly shifted input is the shifted APS output, bit for bit, for every shift in 4x4")
    func apsExactInvariance() throws {
        // For even H, W and phase norms without ties (checked: a sample whose two largest norms
        // are within 1e-9 relative is skipped, and structural ties do occur, e.g. l1 of a
        // k=4-blurred 4x4 map, or any blurred 2x2 map, where blurring makes the phases equal): rolling the input by (dy, dx) moves the
        // chosen phase (a*, b*) to ((a* + dy) mod 2, (b* + dx) mod 2) and rolls the output by
        // (floor((a* + dy) / 2), floor((b* + dx) / 2)), per sample. The circular blur commutes
        // with the roll exactly (same operands, same order), and selection copies values, so
        // the Float outputs must be identical.
        var generator = NyquistRandom(seed: 7)
        var tested = 0
        for shape in [[3, 2, 8, 6], [2, 3, 4, 4], [1, 1, 2, 2]] {
            let x = try HostTensor(shape: shape) { _ in generator.uniform(-1...1) }
            for filterSize in [1, 3, 4] {
                for norm in PolyphaseNorm.allCases {
                    let config = try APSPool2DConfiguration(channels: shape[1], filterSize: filterSize, norm: norm)
                    let (y, indices) = try Reference.apsPool2D(x, config)
                    let untied = try Reference.apsNorms(x.converted(to: Double.self), config).map { norms in
                        let sorted = norms.sorted(by: >)
                        return sorted[0] - sorted[1] > 1e-9 * sorted[0]
                    }
                    let (n, c, oh, ow) = (shape[0], shape[1], y.shape[2], y.shape[3])
                    for dy in 0..<4 {
                        for dx in 0..<4 {
                            let (ys, shiftedIndices) = try Reference.apsPool2D(try Self.roll(x, dy: dy, dx: dx), config)
                            for sample in 0..<n where untied[sample] {
                                tested += 1
                                let (a, b) = (indices[sample] % 2, indices[sample] / 2)
                                #expect(shiftedIndices[sample] == (a + dy) % 2 + 2 * ((b + dx) % 2))
                                let slice = sample * c * oh * ow..<(sample + 1) * c * oh * ow
                                let one = try Tensor(shape: [1, c, oh, ow], values: Array(y.values[slice]))
                                let expected = try Self.roll(one, dy: (a + dy) / 2, dx: (b + dx) / 2)
                                #expect(
                                    Array(ys.values[slice]) == expected.values,
                                    "\(config) \(shape) shift (\(dy), \(dx)) sample \(sample)")
                            }
                        }
                    }
                }
            }
        }
        #expect(tested > 500)
        print("APS exactness: \(tested) (sample, shift, option) cases compared bit for bit")
    }

    static func tipsParameters(_ config: TIPSPool2DConfiguration, seed: UInt64) -> [String: Tensor<Double>] {
        config.defaultParameters(seed: seed).mapValues { $0.converted(to: Double.self) }
    }

    @Test("TIPS with conv2 = 0 mixes the phases uniformly (2x2 average of the parity-padded input)")
    func tipsUniform() throws {
        let config = try TIPSPool2DConfiguration(channels: 2)
        var parameters = Self.tipsParameters(config, seed: 3)
        parameters[TIPSPool2DConfiguration.conv2Name] = try Tensor(shape: [2, 1, 1, 1], repeating: 0)
        var rng = seededGenerator(5)
        let x = try randomTensor([1, 2, 3, 5], using: &rng)
        let result = try Reference.tipsPool2D(x, config, parameters: parameters)
        #expect(result.output.shape == [1, 2, 2, 3] && result.psi.shape == [1, 2, 4, 6] && result.tau.shape == [1, 2, 4])
        #expect(result.tau.values.allSatisfy { abs($0 - 0.25) < 1e-15 })
        // Parity pad: reflect at the top (row -1 reads row 1) and left (column -1 reads column 1).
        func xp(_ c: Int, _ r: Int, _ s: Int) -> Double {
            x.values[(c * 3 + (r == 0 ? 1 : r - 1)) * 5 + (s == 0 ? 1 : s - 1)]
        }
        for c in 0..<2 {
            for i in 0..<2 {
                for j in 0..<3 {
                    let expected = (xp(c, 2 * i, 2 * j) + xp(c, 2 * i + 1, 2 * j) + xp(c, 2 * i, 2 * j + 1)
                        + xp(c, 2 * i + 1, 2 * j + 1)) / 4
                    #expect(abs(result.output.values[(c * 2 + i) * 3 + j] - expected) < 1e-14)
                }
            }
        }
        let (fm, undo) = try Reference.tipsLosses(
            saved: .init(input: x, parameters: parameters, shift: nil), config)
        #expect(abs(fm - 0.5) < 1e-15 && undo == nil)
        // 1-row inputs cannot be reflect-padded; wrong parameter shapes are typed errors.
        #expect(throws: NyquistError.self) { try Reference.tipsPool2D(try randomTensor([1, 2, 1, 4], using: &rng), config, parameters: parameters) }
        var bad = parameters
        bad[TIPSPool2DConfiguration.conv1Name] = try Tensor(shape: [2, 1, 5, 5], repeating: 0)
        let error = #expect(throws: NyquistError.self) { try Reference.tipsPool2D(x, config, parameters: bad) }
        #expect(error?.kind == .invalidParameters)
    }

    @Test("TIPS backward (output, L_FM, L_undo circular and zero-filled) matches finite differences")
    func tipsGradients() throws {
        var rng = seededGenerator(17)
        var worst = 0.0
        var shifts = try ShiftGenerator(seed: 11, maxShiftH: 2, maxShiftW: 3)
        for shape in [[1, 1, 4, 4], [2, 3, 5, 7], [2, 2, 6, 3], [1, 2, 2, 2]] {
            for kernelSize in [1, 3, 5] {
                for fill in ShiftFill.allCases {
                    let config = try TIPSPool2DConfiguration(channels: shape[1], kernelSize: kernelSize)
                    let parameters = Self.tipsParameters(config, seed: UInt64(kernelSize))
                    let drawn = shifts.next()
                    let shift = MapShift(dy: drawn.dy, dx: drawn.dx, fill: fill)
                    let weights = try TIPSLossWeights(fm: 0.7, undo: 1.3)
                    let x = try randomTensor(shape, using: &rng)
                    let (result, saved) = try Reference.tipsPool2DTraining(x, config, parameters: parameters, shift: shift)
                    let g = try randomTensor(result.output.shape, using: &rng)
                    let gradients = try Reference.tipsPool2DBackward(
                        gradOutput: g, saved: saved, config, lossWeights: weights)
                    // T(x') is a constant: frozen at the unperturbed input.
                    let target = try Reference.tipsUndoTarget(x, config, shift: shift)
                    func objective(_ x: Tensor<Double>, _ parameters: [String: Tensor<Double>]) throws -> Double {
                        let result = try Reference.tipsPool2D(x, config, parameters: parameters)
                        let losses = try Reference.tipsLosses(result: result, target: target)
                        return dot(result.output.values, g.values) + weights.fm * losses.fm + weights.undo * (losses.undo ?? 0)
                    }
                    let errorX = try Self.directionalError({ try objective($0, parameters) }, at: x, gradient: gradients.input.values, rng: &rng)
                    worst = max(worst, errorX)
                    #expect(errorX < 1e-6, "input \(config) \(shape) \(shift)")
                    for name in [TIPSPool2DConfiguration.conv1Name, TIPSPool2DConfiguration.conv2Name] {
                        let weight = try #require(parameters[name])
                        let gradient = try #require(gradients.parameters[name])
                        let error = try Self.directionalError(
                            { var changed = parameters; changed[name] = $0; return try objective(x, changed) }, at: weight,
                            gradient: gradient.values, rng: &rng)
                        worst = max(worst, error)
                        #expect(error < 1e-6, "\(name) \(config) \(shape) \(shift)")
                    }
                }
            }
        }
        print("TIPS reference: worst finite-difference error \(worst)")
    }

    @Test("TIPS backward with external gradients of psi and tau (and the losses) matches finite differences")
    func tipsExternalGradients() throws {
        var rng = seededGenerator(23)
        var worst = 0.0
        for (index, shape) in [[1, 1, 4, 4], [2, 3, 5, 7], [2, 2, 6, 3]].enumerated() {
            for kernelSize in [1, 3] {
                // The second round also weighs both losses: every term is added to the others.
                for withLosses in [false, true] {
                    let config = try TIPSPool2DConfiguration(channels: shape[1], kernelSize: kernelSize)
                    let parameters = Self.tipsParameters(config, seed: UInt64(kernelSize + index))
                    let shift = withLosses ? MapShift(dy: 1, dx: -1, fill: index % 2 == 0 ? .circular : .zero) : nil
                    let weights = withLosses ? try TIPSLossWeights(fm: 0.7, undo: 1.3) : .none
                    let x = try randomTensor(shape, using: &rng)
                    let (result, saved) = try Reference.tipsPool2DTraining(x, config, parameters: parameters, shift: shift)
                    let gy = try randomTensor(result.output.shape, using: &rng)
                    let gpsi = try randomTensor(result.psi.shape, using: &rng)
                    let gtau = try randomTensor(result.tau.shape, using: &rng)
                    let gradients = try Reference.tipsPool2DBackward(
                        gradOutput: gy, saved: saved, config, lossWeights: weights, gradPsi: gpsi, gradTau: gtau)
                    let target = try shift.map { try Reference.tipsUndoTarget(x, config, shift: $0) }
                    func objective(_ x: Tensor<Double>, _ parameters: [String: Tensor<Double>]) throws -> Double {
                        let result = try Reference.tipsPool2D(x, config, parameters: parameters)
                        let losses = try Reference.tipsLosses(result: result, target: target)
                        return dot(result.output.values, gy.values) + dot(result.psi.values, gpsi.values)
                            + dot(result.tau.values, gtau.values) + weights.fm * losses.fm
                            + weights.undo * (losses.undo ?? 0)
                    }
                    let label = "\(config) \(shape) losses \(withLosses)"
                    let errorX = try Self.directionalError(
                        { try objective($0, parameters) }, at: x, gradient: gradients.input.values, rng: &rng)
                    worst = max(worst, errorX)
                    #expect(errorX < 1e-6, "input \(label)")
                    for name in [TIPSPool2DConfiguration.conv1Name, TIPSPool2DConfiguration.conv2Name] {
                        let weight = try #require(parameters[name])
                        let gradient = try #require(gradients.parameters[name])
                        let error = try Self.directionalError(
                            { var changed = parameters; changed[name] = $0; return try objective(x, changed) }, at: weight,
                            gradient: gradient.values, rng: &rng)
                        worst = max(worst, error)
                        #expect(error < 1e-6, "\(name) \(label)")
                    }
                }
            }
        }
        print("TIPS reference with external gradients: worst finite-difference error \(worst)")
    }

    @Test("TIPS backward refuses external gradients of the wrong shape with a typed error")
    func tipsExternalGradientShapes() throws {
        var rng = seededGenerator(29)
        let config = try TIPSPool2DConfiguration(channels: 2)
        let x = try randomTensor([1, 2, 5, 6], using: &rng)
        let (result, saved) = try Reference.tipsPool2DTraining(
            x, config, parameters: Self.tipsParameters(config, seed: 1), shift: nil)
        let gy = try randomTensor(result.output.shape, using: &rng)
        // psi is 1 x 2 x 6 x 6 (H padded to even): the input's own shape is wrong for it.
        let unpadded = try randomTensor([1, 2, 5, 6], using: &rng)
        let psiError = #expect(throws: NyquistError.self) {
            try Reference.tipsPool2DBackward(gradOutput: gy, saved: saved, config, gradPsi: unpadded)
        }
        #expect(psiError?.kind == .invalidShape)
        let tauError = #expect(throws: NyquistError.self) {
            try Reference.tipsPool2DBackward(
                gradOutput: gy, saved: saved, config, gradTau: try randomTensor([1, 2, 3], using: &rng))
        }
        #expect(tauError?.kind == .invalidShape)
        // A tensor whose values were replaced by fewer than its shape holds.
        var short = try randomTensor(result.psi.shape, using: &rng)
        short.values.removeLast()
        let countError = #expect(throws: NyquistError.self) {
            try Reference.tipsPool2DBackward(gradOutput: gy, saved: saved, config, gradPsi: short)
        }
        #expect(countError?.kind == .invalidShape)
    }

    @Test("The L_undo target: circular and zero-filled shifts as torch.roll, generator seeded")
    func shiftTargets() throws {
        var a = try ShiftGenerator(seed: 99, maxShiftH: 3, maxShiftW: 1)
        var b = try ShiftGenerator(seed: 99, maxShiftH: 3, maxShiftW: 1)
        var seen = Set<MapShift>()
        for _ in 0..<200 {
            let shift = a.next()
            #expect(shift == b.next())
            #expect(abs(shift.dy) <= 3 && abs(shift.dx) <= 1)
            seen.insert(shift)
        }
        #expect(seen.count == 7 * 3)
        #expect(throws: NyquistError.self) { try ShiftGenerator(seed: 1, maxShiftH: -1, maxShiftW: 0) }
        // L_undo with psi = ReLU(identity conv) of a positive input against its own 1-row roll.
        let config = try TIPSPool2DConfiguration(channels: 1, kernelSize: 1)
        let parameters: [String: Tensor<Double>] = [
            TIPSPool2DConfiguration.conv1Name: try Tensor(shape: [1, 1, 1, 1], values: [1]),
            TIPSPool2DConfiguration.conv2Name: try Tensor(shape: [1, 1, 1, 1], values: [0]),
        ]
        let x = try Tensor<Double>(shape: [1, 1, 2, 2], values: [1, 2, 3, 4])
        let circular = try Reference.tipsLosses(
            saved: .init(input: x, parameters: parameters, shift: MapShift(dy: 1, dx: 0, fill: .circular)), config)
        let circularExpected = 4.0
        #expect(circular.undo == circularExpected)  // rows swap: every difference is 2
        let zero = try Reference.tipsLosses(
            saved: .init(input: x, parameters: parameters, shift: MapShift(dy: 1, dx: 0, fill: .zero)), config)
        let zeroExpected: Double = 13.0 / 4
        #expect(zero.undo == zeroExpected)  // top row against 0, bottom against the top
    }
}
