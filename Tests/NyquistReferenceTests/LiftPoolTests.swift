import Foundation
import NyquistCore
import NyquistReference
import PropertyBased
import Testing

/// LiftDownPool / LiftUpPool reference: hand-checked cases, finite differences (Double) on every
/// output, band and regulariser and every parameter, and perfect reconstruction.
@Suite("LiftPool reference")
struct LiftPoolReferenceTests {
    static func zeroParameters(_ config: LiftPoolConfiguration) throws -> LiftPoolParameters<Double> {
        var params = LiftPoolParameters<Double>(config, seed: 0)
        for name in LiftPoolParameters<Double>.names {
            params[name] = params[name].map { _ in 0 }
        }
        return params
    }

    /// Random parameters of a larger scale than the default init, so every nonlinearity matters.
    static func randomParameters(_ config: LiftPoolConfiguration, seed: UInt64) throws -> LiftPoolParameters<Double> {
        var params = LiftPoolParameters<Double>(config, seed: seed)
        var rng = seededGenerator(seed)
        for name in LiftPoolParameters<Double>.names {
            params[name] = params[name].map { _ in Double.random(in: -1.5...1.5, using: &rng) }
        }
        return params
    }

    // MARK: Hand-checked

    @Test func zeroParametersGiveThePolyphaseComponents() throws {
        let config = try LiftPoolConfiguration(channels: 1, kernelSize: 3)
        let params = try Self.zeroParameters(config)
        // 3 x 3 input: replicate-padded to 4 x 4.
        let x = try Tensor<Double>(shape: [1, 1, 3, 3], values: [1, 2, 3, 4, 5, 6, 7, 8, 9])
        let (bands, reg) = try Reference.liftDownPool2D(x, params, config)
        #expect(bands.ll.values == [1, 3, 7, 9])
        #expect(bands.hl.values == [2, 3, 8, 9])
        #expect(bands.lh.values == [4, 6, 7, 9])
        #expect(bands.hh.values == [5, 6, 8, 9])
        #expect(bands.output.values == [12, 18, 30, 36])
        // Horizontal: s_h = even columns, x_o = odd columns (padded): (s - x_o)^2 means.
        let horizontalCU = (1.0 + 0 + 1 + 0 + 1 + 0) / 6
        let horizontalCP = (4.0 + 9 + 25 + 36 + 64 + 81) / 6
        let lowCU = (9.0 + 9 + 0 + 0) / 4  // s_h = [[1,3],[4,6],[7,9]] -> LL - LH
        let lowCP = (16.0 + 36 + 49 + 81) / 4
        let highCU = (9.0 + 9 + 0 + 0) / 4
        let highCP = (25.0 + 36 + 64 + 81) / 4
        #expect(abs(reg.cu - (horizontalCU + lowCU + highCU)) < 1e-12)
        #expect(abs(reg.cp - (horizontalCP + lowCP + highCP)) < 1e-12)
        #expect(abs(reg.loss - (0.01 * reg.cu + 0.1 * reg.cp)) < 1e-12)
    }

    @Test func handComputed1D() throws {
        let config = try LiftPoolConfiguration(channels: 1, kernelSize: 3, lambdaU: 1, lambdaP: 2)
        var params = try Self.zeroParameters(config)
        params["predict.0.weight"] = [0.5, 1, 0]  // conv(v)[m] = 0.5 v[m-1] + v[m]
        params["predict.0.bias"] = [-0.5]
        params["predict.2.weight"] = [2]
        params["predict.2.bias"] = [0.1]
        params["update.2.bias"] = [0.25]  // U = tanh(0.25), constant
        let x = try Tensor<Double>(shape: [1, 1, 5], values: [1, -2, 3, 0.5, -1])
        // x_e = [1, 3, -1]: conv = [1 - 0.5, 0.5 * 1 + 3 - 0.5, 0.5 * 3 - 1 - 0.5] = [0.5, 3, 0].
        let (bands, reg) = try Reference.liftDownPool1D(x, params, config)
        let even = [1.0, 3, -1]
        let odd = [-2.0, 0.5, -1]  // last sample replicated
        let conv: [Double] = [0.5, 3.0, 0.0]
        let p = conv.map { tanh(2 * max($0, 0) + 0.1) }
        let d = (0..<3).map { odd[$0] - p[$0] }
        let s = even.map { $0 + tanh(0.25) }
        for m in 0..<3 {
            #expect(abs(bands.d.values[m] - d[m]) < 1e-12)
            #expect(abs(bands.s.values[m] - s[m]) < 1e-12)
            #expect(abs(bands.output.values[m] - s[m] - d[m]) < 1e-12)
        }
        var cu = 0.0
        var cp = 0.0
        for m in 0..<3 {
            let residual: Double = s[m] - odd[m]
            cu += residual * residual / 3
            cp += d[m] * d[m] / 3
        }
        #expect(abs(reg.cu - cu) < 1e-12 && abs(reg.cp - cp) < 1e-12 && abs(reg.loss - (cu + 2 * cp)) < 1e-12)
    }

    @Test func rejectsBadShapes() throws {
        let config = try LiftPoolConfiguration(channels: 2, kernelSize: 3)
        let params = try Self.zeroParameters(config)
        let x = try Tensor<Double>(shape: [1, 2, 4, 4], repeating: 1)
        #expect(throws: NyquistError.self) { try Reference.liftDownPool2D(try Tensor<Double>(shape: [1, 3, 4, 4], repeating: 1), params, config) }
        #expect(throws: NyquistError.self) {
            try Reference.liftDownPool2DBackward(input: x, params, config, gradOutput: try Tensor<Double>(shape: [1, 2, 3, 2], repeating: 1))
        }
        let band = try Tensor<Double>(shape: [1, 2, 2, 2], repeating: 1)
        #expect(throws: NyquistError.self) { try Reference.liftUpPool2D(ll: band, lh: band, hl: band, hh: band, height: 5, width: 4, params, config) }
        let other = try LiftPoolConfiguration(channels: 2, kernelSize: 5)
        #expect(throws: NyquistError.self) { try Reference.liftDownPool2D(x, params, other) }
    }

    // MARK: Perfect reconstruction

    @Test(arguments: [1, 3, 5, 7])
    func perfectReconstruction(kernelSize: Int) throws {
        var worst = 0.0
        var worstFloat = 0.0
        for (index, (h, w)) in [(1, 1), (1, 2), (2, 1), (2, 2), (3, 3), (4, 6), (5, 8), (7, 5), (9, 12)].enumerated() {
            let config = try LiftPoolConfiguration(channels: 3, kernelSize: kernelSize)
            let params = try Self.randomParameters(config, seed: UInt64(10 + index))
            var rng = seededGenerator(UInt64(100 + index))
            let x = try randomTensor([2, 3, h, w], using: &rng)
            let (bands, _) = try Reference.liftDownPool2D(x, params, config)
            let back = try Reference.liftUpPool2D(ll: bands.ll, lh: bands.lh, hl: bands.hl, hh: bands.hh, height: h, width: w, params, config)
            #expect(back.shape == x.shape)
            worst = max(worst, zip(back.values, x.values).map { abs($0 - $1) }.max() ?? 0)
            let xf = x.converted(to: Float.self)
            let pf = params.converted(to: Float.self)
            let (bf, _) = try Reference.liftDownPool2D(xf, pf, config)
            let backf = try Reference.liftUpPool2D(ll: bf.ll, lh: bf.lh, hl: bf.hl, hh: bf.hh, height: h, width: w, pf, config)
            worstFloat = max(worstFloat, zip(backf.values, xf.values).map { Double(abs($0 - $1)) }.max() ?? 0)
            // 1-D along a length-w signal.
            let x1 = try Tensor<Double>(shape: [2, 3, w], values: Array(x.values.prefix(6 * w)))
            let (b1, _) = try Reference.liftDownPool1D(x1, params, config)
            let back1 = try Reference.liftUpPool1D(s: b1.s, d: b1.d, length: w, params, config)
            #expect(back1.shape == x1.shape)
            worst = max(worst, zip(back1.values, x1.values).map { abs($0 - $1) }.max() ?? 0)
        }
        print("LiftPool reference reconstruction K=\(kernelSize): max error Double \(worst), Float \(worstFloat)")
        #expect(worst < 1e-12)
        #expect(worstFloat < 1e-5)
    }

    // MARK: Finite differences

    static let step = 1e-6

    /// Central-difference derivative of `f` along every element of `values`, compared with
    /// `analytic`; returns the largest error relative to max(1, max|analytic|).
    static func check(_ values: [Double], _ analytic: [Double], _ f: ([Double]) throws -> Double) rethrows -> Double {
        var worst = 0.0
        let scale = max(1, analytic.map(abs).max() ?? 0)
        for index in values.indices {
            var plus = values
            plus[index] += step
            var minus = values
            minus[index] -= step
            let numeric = (try f(plus) - f(minus)) / (2 * step)
            worst = max(worst, abs(numeric - analytic[index]) / scale)
        }
        return worst
    }

    static func dot(_ a: Tensor<Double>, _ b: Tensor<Double>?) -> Double {
        guard let b else { return 0 }
        return zip(a.values, b.values).reduce(0) { $0 + $1.0 * $1.1 }
    }

    /// Upstream gradients: exactly one of output, band i, c_u, c_p is non-zero (`which` 0...6).
    @Test(arguments: [1, 3, 5, 7])
    func downPool2DGradients(kernelSize: Int) throws {
        var worst = 0.0
        for (index, shape) in [[1, 1, 1, 1], [2, 3, 5, 6], [1, 2, 4, 3]].enumerated() {
            for which in 0..<7 {
                let lambdaU = which == 5 ? 1.0 : 0.0
                let lambdaP = which == 6 ? 1.0 : 0.0
                let config = try LiftPoolConfiguration(channels: shape[1], kernelSize: kernelSize, lambdaU: lambdaU, lambdaP: lambdaP)
                let params = try Self.randomParameters(config, seed: UInt64(index * 7 + which))
                var rng = seededGenerator(UInt64(1000 + index * 7 + which))
                let x = try randomTensor(shape, using: &rng)
                let bandShape = try config.outputShape(for: Shape4D(shape)).dimensions
                var upstream: [Tensor<Double>?] = Array(repeating: nil, count: 5)
                if which < 5 { upstream[which] = try randomTensor(bandShape, using: &rng) }
                let gradLoss = which >= 5 ? 1.7 : 0.0
                func objective(_ x: Tensor<Double>, _ p: LiftPoolParameters<Double>) throws -> Double {
                    let (b, r) = try Reference.liftDownPool2D(x, p, config)
                    return Self.dot(b.output, upstream[0]) + Self.dot(b.ll, upstream[1]) + Self.dot(b.lh, upstream[2])
                        + Self.dot(b.hl, upstream[3]) + Self.dot(b.hh, upstream[4]) + gradLoss * r.loss
                }
                let grads = try Reference.liftDownPool2DBackward(
                    input: x, params, config, gradOutput: upstream[0], gradLL: upstream[1], gradLH: upstream[2],
                    gradHL: upstream[3], gradHH: upstream[4], gradLoss: gradLoss)
                let label = "K=\(kernelSize) \(shape) upstream \(which)"
                let inputError = try Self.check(x.values, grads.input.values) {
                    try objective(try Tensor(shape: shape, values: $0), params)
                }
                #expect(inputError < 1e-6, "\(label) input: \(inputError)")
                worst = max(worst, inputError)
                for name in LiftPoolParameters<Double>.names {
                    let analytic = try #require(grads.parameters[name]).values
                    let error = try Self.check(params[name], analytic) { values in
                        var p = params
                        p[name] = values
                        return try objective(x, p)
                    }
                    #expect(error < 1e-6, "\(label) \(name): \(error)")
                    worst = max(worst, error)
                }
            }
        }
        print("LiftDownPool2D reference FD K=\(kernelSize): worst relative error \(worst)")
    }

    @Test(arguments: [1, 3, 5, 7])
    func downPool1DGradients(kernelSize: Int) throws {
        var worst = 0.0
        for (index, shape) in [[1, 1, 1], [2, 3, 9], [1, 2, 6]].enumerated() {
            for which in 0..<5 {
                let config = try LiftPoolConfiguration(
                    channels: shape[1], kernelSize: kernelSize, lambdaU: which == 3 ? 1 : 0, lambdaP: which == 4 ? 1 : 0)
                let params = try Self.randomParameters(config, seed: UInt64(50 + index * 5 + which))
                var rng = seededGenerator(UInt64(2000 + index * 5 + which))
                let x = try randomTensor(shape, using: &rng)
                let bandShape = try config.outputShape1D(for: shape)
                var upstream: [Tensor<Double>?] = [nil, nil, nil]
                if which < 3 { upstream[which] = try randomTensor(bandShape, using: &rng) }
                let gradLoss = which >= 3 ? 0.8 : 0.0
                func objective(_ x: Tensor<Double>, _ p: LiftPoolParameters<Double>) throws -> Double {
                    let (b, r) = try Reference.liftDownPool1D(x, p, config)
                    return Self.dot(b.output, upstream[0]) + Self.dot(b.s, upstream[1]) + Self.dot(b.d, upstream[2])
                        + gradLoss * r.loss
                }
                let grads = try Reference.liftDownPool1DBackward(
                    input: x, params, config, gradOutput: upstream[0], gradS: upstream[1], gradD: upstream[2], gradLoss: gradLoss)
                let label = "K=\(kernelSize) \(shape) upstream \(which)"
                let inputError = try Self.check(x.values, grads.input.values) {
                    try objective(try Tensor(shape: shape, values: $0), params)
                }
                #expect(inputError < 1e-6, "\(label) input: \(inputError)")
                worst = max(worst, inputError)
                for name in LiftPoolParameters<Double>.names {
                    let error = try Self.check(params[name], try #require(grads.parameters[name]).values) { values in
                        var p = params
                        p[name] = values
                        return try objective(x, p)
                    }
                    #expect(error < 1e-6, "\(label) \(name): \(error)")
                    worst = max(worst, error)
                }
            }
        }
        print("LiftDownPool1D reference FD K=\(kernelSize): worst relative error \(worst)")
    }

    @Test(arguments: [1, 3, 5, 7])
    func upPoolGradients(kernelSize: Int) throws {
        var worst = 0.0
        for (index, (h, w)) in [(1, 1), (5, 6), (4, 3)].enumerated() {
            let config = try LiftPoolConfiguration(channels: 2, kernelSize: kernelSize)
            let params = try Self.randomParameters(config, seed: UInt64(70 + index))
            var rng = seededGenerator(UInt64(3000 + index))
            let bandShape = [2, 2, LiftPoolConfiguration.bandLength(h), LiftPoolConfiguration.bandLength(w)]
            let bands = try (0..<4).map { _ in try randomTensor(bandShape, using: &rng) }
            let g = try randomTensor([2, 2, h, w], using: &rng)
            func objective(_ b: [Tensor<Double>], _ p: LiftPoolParameters<Double>) throws -> Double {
                Self.dot(try Reference.liftUpPool2D(ll: b[0], lh: b[1], hl: b[2], hh: b[3], height: h, width: w, p, config), g)
            }
            let grads = try Reference.liftUpPool2DBackward(
                gradOutput: g, ll: bands[0], lh: bands[1], hl: bands[2], hh: bands[3], height: h, width: w, params, config)
            for band in 0..<4 {
                let error = try Self.check(bands[band].values, grads.bands[band].values) { values in
                    var b = bands
                    b[band] = try Tensor(shape: bandShape, values: values)
                    return try objective(b, params)
                }
                #expect(error < 1e-6, "K=\(kernelSize) \(h)x\(w) band \(band): \(error)")
                worst = max(worst, error)
            }
            for name in LiftPoolParameters<Double>.names {
                let error = try Self.check(params[name], try #require(grads.parameters[name]).values) { values in
                    var p = params
                    p[name] = values
                    return try objective(bands, p)
                }
                #expect(error < 1e-6, "K=\(kernelSize) \(h)x\(w) \(name): \(error)")
                worst = max(worst, error)
            }
            // 1-D on the first band's rows as signals of length w.
            let s = try Tensor<Double>(shape: [2, 2, bandShape[3]], values: Array(bands[0].values.prefix(4 * bandShape[3])))
            let d = try Tensor<Double>(shape: s.shape, values: Array(bands[1].values.prefix(4 * bandShape[3])))
            let g1 = try Tensor<Double>(shape: [2, 2, w], values: Array(g.values.prefix(4 * w)))
            let grads1 = try Reference.liftUpPool1DBackward(gradOutput: g1, s: s, d: d, length: w, params, config)
            let inputs1 = [s, d]
            for band in 0..<2 {
                let error = try Self.check(inputs1[band].values, grads1.bands[band].values) { values in
                    var b = inputs1
                    b[band] = try Tensor(shape: s.shape, values: values)
                    return Self.dot(try Reference.liftUpPool1D(s: b[0], d: b[1], length: w, params, config), g1)
                }
                #expect(error < 1e-6, "1-D K=\(kernelSize) length \(w) band \(band): \(error)")
                worst = max(worst, error)
            }
            for name in LiftPoolParameters<Double>.names {
                let error = try Self.check(params[name], try #require(grads1.parameters[name]).values) { values in
                    var p = params
                    p[name] = values
                    return Self.dot(try Reference.liftUpPool1D(s: s, d: d, length: w, p, config), g1)
                }
                #expect(error < 1e-6, "1-D K=\(kernelSize) length \(w) \(name): \(error)")
                worst = max(worst, error)
            }
        }
        print("LiftUpPool reference FD K=\(kernelSize): worst relative error \(worst)")
    }
}
