import Foundation  // exp and sqrt on Double only
import NyquistCore

extension Reference {
    /// What the AdaptiveBlurPool backward needs: the input and the parameters of the forward.
    /// Backward recomputes the padded input, predictor map and statistics from them.
    public struct AdaptiveSaved<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// The forward's input.
        public let input: Tensor<T>
        /// The parameters the forward used.
        public let parameters: AdaptiveBlurPool2DParameters<T>
        /// True (training forward): BatchNorm used the batch statistics, and backward
        /// differentiates through them. False (inference forward, PyTorch's eval mode with
        /// gradients, e.g. fine-tuning with frozen BatchNorm): the running statistics are
        /// constants and BatchNorm is a per-channel affine map.
        public let batchStatistics: Bool

        /// Bundles a forward's input and parameters.
        public init(input: Tensor<T>, parameters: AdaptiveBlurPool2DParameters<T>, batchStatistics: Bool = true) {
            self.input = input
            self.parameters = parameters
            self.batchStatistics = batchStatistics
        }
    }

    /// Result of the AdaptiveBlurPool training forward.
    public struct AdaptiveTraining<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// The output, N x C x H' x W'.
        public let output: Tensor<T>
        /// The predicted filters at the output positions, N x G*k*k x H' x W' (batch statistics).
        public let filters: Tensor<T>
        /// Batch mean of the predictor over all N x H x W positions (G*k*k).
        public let batchMean: Tensor<T>
        /// Biased batch variance (the one the normalisation divides by), G*k*k.
        public let batchVariance: Tensor<T>
        /// The parameters with the running statistics updated: (1 - m) r + m b with momentum
        /// m = 0.1 and, for the variance, the unbiased batch variance (as PyTorch).
        public let updatedParameters: AdaptiveBlurPool2DParameters<T>
        /// What backward needs.
        public let saved: AdaptiveSaved<T>
    }

    /// Gradients of AdaptiveBlurPool.
    public struct AdaptiveGradients<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// Gradient with respect to the input (through the filter taps and the predictor).
        public let input: Tensor<T>
        /// Gradient with respect to `conv.weight`.
        public let convWeight: Tensor<T>
        /// Gradient with respect to `bn.weight`.
        public let bnWeight: Tensor<T>
        /// Gradient with respect to `bn.bias`.
        public let bnBias: Tensor<T>

        /// The parameter gradients by PyTorch name.
        public var parameters: [String: Tensor<T>] {
            ["conv.weight": convWeight, "bn.weight": bnWeight, "bn.bias": bnBias]
        }
    }

    /// AdaptiveBlurPool inference forward (SPEC.md section 3) with the running statistics; the
    /// predictor is evaluated at output positions only. Returns the output and the filters.
    public static func adaptiveBlurPool2D<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, parameters: AdaptiveBlurPool2DParameters<T>, _ config: AdaptiveBlurPool2DConfiguration
    ) throws -> (output: Tensor<T>, filters: Tensor<T>) {
        let core = try AdaptiveCore(x, parameters, config)
        let p = config.predictorChannels
        let mean = parameters.runningMean.values.map { Double($0) }
        let scale = parameters.runningVar.values.map { 1 / (Double($0) + AdaptiveBlurPool2DConfiguration.epsilon).squareRoot() }
        var output = [Double](repeating: 0, count: core.output.count)
        var filters = [Double](repeating: 0, count: core.output.n * p * core.output.h * core.output.w)
        var z = [Double](repeating: 0, count: p)
        for n in 0..<core.input.n {
            for i in 0..<core.output.h {
                for j in 0..<core.output.w {
                    for o in 0..<p {
                        let a = core.conv(n: n, o: o, row: config.stride * i, col: config.stride * j)
                        z[o] = core.gamma[o] * (a - mean[o]) * scale[o] + core.beta[o]
                    }
                    let w = core.softmax(z)
                    core.filter(n: n, i: i, j: j, weights: w, into: &output)
                    for o in 0..<p { filters[core.filterIndex(n, o, i, j)] = w[o] }
                }
            }
        }
        return (
            try Tensor(shape: core.output.dimensions, values: output.map { T($0) }),
            try Tensor(shape: [core.output.n, p, core.output.h, core.output.w], values: filters.map { T($0) })
        )
    }

    /// AdaptiveBlurPool training forward: BatchNorm statistics of the predictor over all
    /// N x H x W full-resolution positions (biased variance for the normalisation), then the
    /// softmax and filtering at the output positions. Needs N*H*W > 1 (PyTorch's rule).
    public static func adaptiveBlurPool2DTraining<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, parameters: AdaptiveBlurPool2DParameters<T>, _ config: AdaptiveBlurPool2DConfiguration
    ) throws -> AdaptiveTraining<T> {
        let core = try AdaptiveCore(x, parameters, config)
        let stats = try core.batchStatistics()
        let p = config.predictorChannels
        var output = [Double](repeating: 0, count: core.output.count)
        var filters = [Double](repeating: 0, count: core.output.n * p * core.output.h * core.output.w)
        var z = [Double](repeating: 0, count: p)
        for n in 0..<core.input.n {
            for i in 0..<core.output.h {
                for j in 0..<core.output.w {
                    for o in 0..<p {
                        let a = stats.map[core.fullIndex(n, o, config.stride * i, config.stride * j)]
                        z[o] = core.gamma[o] * (a - stats.mean[o]) * stats.inverseStd[o] + core.beta[o]
                    }
                    let w = core.softmax(z)
                    core.filter(n: n, i: i, j: j, weights: w, into: &output)
                    for o in 0..<p { filters[core.filterIndex(n, o, i, j)] = w[o] }
                }
            }
        }
        let m = AdaptiveBlurPool2DConfiguration.momentum
        let count = Double(core.positions)
        var updated = parameters
        updated.runningMean.values = (0..<p).map {
            T((1 - m) * Double(parameters.runningMean.values[$0]) + m * stats.mean[$0])
        }
        updated.runningVar.values = (0..<p).map {
            T((1 - m) * Double(parameters.runningVar.values[$0]) + m * stats.variance[$0] * count / (count - 1))
        }
        return AdaptiveTraining(
            output: try Tensor(shape: core.output.dimensions, values: output.map { T($0) }),
            filters: try Tensor(shape: [core.output.n, p, core.output.h, core.output.w], values: filters.map { T($0) }),
            batchMean: try Tensor(shape: [p], values: stats.mean.map { T($0) }),
            batchVariance: try Tensor(shape: [p], values: stats.variance.map { T($0) }),
            updatedParameters: updated, saved: AdaptiveSaved(input: x, parameters: parameters))
    }

    /// AdaptiveBlurPool backward: gradients to the input (through the taps and through the
    /// predictor: softmax, BatchNorm, conv, padding), to `conv.weight`, `bn.weight` and
    /// `bn.bias`. With `saved.batchStatistics` (training forward) BatchNorm's batch statistics
    /// are differentiated too; without (inference forward) the running statistics are constants.
    public static func adaptiveBlurPool2DBackward<T: BinaryFloatingPoint & Sendable>(
        gradOutput: Tensor<T>, saved: AdaptiveSaved<T>, _ config: AdaptiveBlurPool2DConfiguration
    ) throws -> AdaptiveGradients<T> {
        let core = try AdaptiveCore(saved.input, saved.parameters, config)
        try checkGradOutput(
            gradOutput, expected: core.output, input: core.input, layer: AdaptiveBlurPool2DConfiguration.operatorName)
        let gy = try planes(gradOutput, core.output).values
        let stats = saved.batchStatistics ? try core.batchStatistics() : core.runningStatistics(saved.parameters)
        let p = config.predictorChannels
        let k = config.kernelSize
        let s = config.stride
        let (hp, wp) = (core.paddedHeight, core.paddedWidth)
        let (h, w) = (core.input.h, core.input.w)
        let (oh, ow) = (core.output.h, core.output.w)
        let cpg = config.channelsPerGroup
        var gradPadded = [Double](repeating: 0, count: core.padded.count)
        var gradZ = [Double](repeating: 0, count: stats.map.count)  // non-zero at output positions only
        var gradBias = [Double](repeating: 0, count: p)
        var gradGamma = [Double](repeating: 0, count: p)
        var z = [Double](repeating: 0, count: p)
        var gradW = [Double](repeating: 0, count: p)
        for n in 0..<core.input.n {
            for i in 0..<oh {
                for j in 0..<ow {
                    var xhat = [Double](repeating: 0, count: p)
                    for o in 0..<p {
                        xhat[o] = (stats.map[core.fullIndex(n, o, s * i, s * j)] - stats.mean[o]) * stats.inverseStd[o]
                        z[o] = core.gamma[o] * xhat[o] + core.beta[o]
                    }
                    let weights = core.softmax(z)
                    // Taps: dL/dw and dL/dxpad through the filtering.
                    for o in 0..<p { gradW[o] = 0 }
                    for c in 0..<core.input.c {
                        let g = c / cpg
                        let dy = gy[((n * core.input.c + c) * oh + i) * ow + j]
                        let base = (n * core.input.c + c) * hp * wp
                        for u in 0..<k {
                            for v in 0..<k {
                                let pixel = base + (s * i + u) * wp + (s * j + v)
                                let o = g * k * k + u * k + v
                                gradW[o] += dy * core.padded[pixel]
                                gradPadded[pixel] += dy * weights[o]
                            }
                        }
                    }
                    // Softmax backward over each normalised set.
                    for set in core.softmaxSets {
                        var inner = 0.0
                        for o in set { inner += weights[o] * gradW[o] }
                        for o in set {
                            let gz = weights[o] * (gradW[o] - inner)
                            gradZ[core.fullIndex(n, o, s * i, s * j)] = gz
                            gradBias[o] += gz
                            gradGamma[o] += gz * xhat[o]
                        }
                    }
                }
            }
        }
        // BatchNorm backward with batch statistics: every full-resolution position gets a gradient.
        let count = Double(core.positions)
        var gradA = [Double](repeating: 0, count: stats.map.count)
        for n in 0..<core.input.n {
            for o in 0..<p {
                let factor = core.gamma[o] * stats.inverseStd[o]
                for y in 0..<h {
                    for x in 0..<w {
                        let index = core.fullIndex(n, o, y, x)
                        let xhat = (stats.map[index] - stats.mean[o]) * stats.inverseStd[o]
                        gradA[index] =
                            saved.batchStatistics
                            ? factor * (gradZ[index] - gradBias[o] / count - xhat * gradGamma[o] / count)
                            : factor * gradZ[index]
                    }
                }
            }
        }
        // Conv backward: weight gradient and the predictor path of the input gradient.
        var gradConv = [Double](repeating: 0, count: core.weight.count)
        for n in 0..<core.input.n {
            for o in 0..<p {
                for c in 0..<core.input.c {
                    let base = (n * core.input.c + c) * hp * wp
                    for u in 0..<k {
                        for v in 0..<k {
                            let wIndex = ((o * core.input.c + c) * k + u) * k + v
                            let weight = core.weight[wIndex]
                            var sum = 0.0
                            for y in 0..<h {
                                for x in 0..<w {
                                    let ga = gradA[core.fullIndex(n, o, y, x)]
                                    let pixel = base + (y + u) * wp + (x + v)
                                    sum += ga * core.padded[pixel]
                                    gradPadded[pixel] += ga * weight
                                }
                            }
                            gradConv[wIndex] += sum
                        }
                    }
                }
            }
        }
        // Unpad: padded positions send their gradient to the pixel they copy.
        var gradInput = [Double](repeating: 0, count: core.input.count)
        let planeCount = core.input.n * core.input.c
        gradPadded.withUnsafeBufferPointer { padded in
            gradInput.withUnsafeMutableBufferPointer { input in
                for plane in 0..<planeCount {
                    core.geometry.unpadAdding(
                        UnsafeBufferPointer(rebasing: padded[(plane * hp * wp)..<((plane + 1) * hp * wp)]),
                        into: UnsafeMutableBufferPointer(rebasing: input[(plane * h * w)..<((plane + 1) * h * w)]))
                }
            }
        }
        return AdaptiveGradients(
            input: try Tensor(shape: core.input.dimensions, values: gradInput.map { T($0) }),
            convWeight: try Tensor(shape: saved.parameters.convWeight.shape, values: gradConv.map { T($0) }),
            bnWeight: try Tensor(shape: [p], values: gradGamma.map { T($0) }),
            bnBias: try Tensor(shape: [p], values: gradBias.map { T($0) }))
    }
}

/// The padded input and parameters of one AdaptiveBlurPool call, in `Double`, with the pieces
/// forward and backward share (conv at a position, softmax, filtering).
struct AdaptiveCore {
    let config: AdaptiveBlurPool2DConfiguration
    let input: Shape4D
    let output: Shape4D
    let geometry: PaddedGeometry
    /// N*C padded planes.
    let padded: [Double]
    let weight: [Double]
    let gamma: [Double]
    let beta: [Double]
    /// The index sets each softmax normalises: one set of G*k*k, or G sets of k*k.
    let softmaxSets: [Range<Int>]

    var paddedHeight: Int { geometry.height }
    var paddedWidth: Int { geometry.width }
    /// Positions BatchNorm averages over: N*H*W.
    var positions: Int { input.n * input.h * input.w }

    init<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ parameters: AdaptiveBlurPool2DParameters<T>, _ config: AdaptiveBlurPool2DConfiguration
    ) throws {
        let shape = try Shape4D(x.shape, role: "input")
        output = try config.outputShape(for: shape)
        try parameters.validate(for: config)
        input = shape
        self.config = config
        geometry = try PaddedGeometry(height: shape.h, width: shape.w, pads: .uniform(config.pad), mode: config.padding)
        let planes = try Reference.planes(x, shape)
        let planeSize = shape.h * shape.w
        let paddedSize = geometry.height * geometry.width
        var padded = [Double](repeating: 0, count: planes.count * paddedSize)
        let geometry = geometry
        planes.values.withUnsafeBufferPointer { source in
            padded.withUnsafeMutableBufferPointer { target in
                for plane in 0..<planes.count {
                    geometry.pad(
                        UnsafeBufferPointer(rebasing: source[(plane * planeSize)..<((plane + 1) * planeSize)]), fill: 0,
                        into: UnsafeMutableBufferPointer(rebasing: target[(plane * paddedSize)..<((plane + 1) * paddedSize)]))
                }
            }
        }
        self.padded = padded
        weight = parameters.convWeight.values.map { Double($0) }
        gamma = parameters.bnWeight.values.map { Double($0) }
        beta = parameters.bnBias.values.map { Double($0) }
        switch config.softmax {
        case .joint: softmaxSets = [0..<config.predictorChannels]
        case .perGroup: softmaxSets = (0..<config.groups).map { ($0 * config.taps)..<(($0 + 1) * config.taps) }
        }
    }

    /// The predictor convolution (no bias) of sample `n`, output channel `o`, at input position (row, col).
    func conv(n: Int, o: Int, row: Int, col: Int) -> Double {
        let k = config.kernelSize
        let (hp, wp) = (geometry.height, geometry.width)
        var sum = 0.0
        for c in 0..<input.c {
            let base = (n * input.c + c) * hp * wp
            let weightBase = (o * input.c + c) * k * k
            for u in 0..<k {
                for v in 0..<k {
                    sum += weight[weightBase + u * k + v] * padded[base + (row + u) * wp + (col + v)]
                }
            }
        }
        return sum
    }

    /// Flat index into an N x G*k*k x H x W map.
    func fullIndex(_ n: Int, _ o: Int, _ row: Int, _ col: Int) -> Int {
        ((n * config.predictorChannels + o) * input.h + row) * input.w + col
    }

    /// Flat index into the N x G*k*k x H' x W' filters.
    func filterIndex(_ n: Int, _ o: Int, _ i: Int, _ j: Int) -> Int {
        ((n * config.predictorChannels + o) * output.h + i) * output.w + j
    }

    /// Softmax of `z` over each of ``softmaxSets`` (max subtracted first).
    func softmax(_ z: [Double]) -> [Double] {
        var result = z
        for set in softmaxSets {
            var largest = -Double.infinity
            for o in set { largest = max(largest, z[o]) }
            var total = 0.0
            for o in set {
                result[o] = exp(z[o] - largest)
                total += result[o]
            }
            for o in set { result[o] /= total }
        }
        return result
    }

    /// y[n, c, i, j] for every c with the G*k*k filter `weights`.
    func filter(n: Int, i: Int, j: Int, weights: [Double], into output: inout [Double]) {
        let k = config.kernelSize
        let s = config.stride
        let (hp, wp) = (geometry.height, geometry.width)
        for c in 0..<input.c {
            let g = c / config.channelsPerGroup
            let base = (n * input.c + c) * hp * wp
            var sum = 0.0
            for u in 0..<k {
                for v in 0..<k {
                    sum += weights[g * k * k + u * k + v] * padded[base + (s * i + u) * wp + (s * j + v)]
                }
            }
            output[((n * input.c + c) * self.output.h + i) * self.output.w + j] = sum
        }
    }

    /// The full-resolution predictor map (no BatchNorm).
    func fullMap() -> [Double] {
        let p = config.predictorChannels
        var map = [Double](repeating: 0, count: input.n * p * input.h * input.w)
        for n in 0..<input.n {
            for o in 0..<p {
                for y in 0..<input.h {
                    for x in 0..<input.w { map[fullIndex(n, o, y, x)] = conv(n: n, o: o, row: y, col: x) }
                }
            }
        }
        return map
    }

    /// The full-resolution map with the running statistics in place of batch statistics.
    func runningStatistics<T: BinaryFloatingPoint & Sendable>(_ parameters: AdaptiveBlurPool2DParameters<T>) -> (
        map: [Double], mean: [Double], variance: [Double], inverseStd: [Double]
    ) {
        let mean = parameters.runningMean.values.map { Double($0) }
        let variance = parameters.runningVar.values.map { Double($0) }
        let inverseStd = variance.map { 1 / ($0 + AdaptiveBlurPool2DConfiguration.epsilon).squareRoot() }
        return (fullMap(), mean, variance, inverseStd)
    }

    /// The full-resolution predictor map and its per-channel batch mean, biased variance and
    /// 1/sqrt(variance + eps), two-pass in `Double`.
    func batchStatistics() throws -> (map: [Double], mean: [Double], variance: [Double], inverseStd: [Double]) {
        guard positions > 1 else {
            throw NyquistError(
                .invalidShape,
                "\(AdaptiveBlurPool2DConfiguration.operatorName): training BatchNorm needs more than one value per "
                    + "channel, but N x H x W = \(input.n)x\(input.h)x\(input.w)")
        }
        let p = config.predictorChannels
        let map = fullMap()
        var mean = [Double](repeating: 0, count: p)
        var variance = [Double](repeating: 0, count: p)
        let planeSize = input.h * input.w
        for o in 0..<p {
            var sum = 0.0
            for n in 0..<input.n {
                let base = fullIndex(n, o, 0, 0)
                for q in 0..<planeSize { sum += map[base + q] }
            }
            mean[o] = sum / Double(positions)
            var squares = 0.0
            for n in 0..<input.n {
                let base = fullIndex(n, o, 0, 0)
                for q in 0..<planeSize {
                    let d = map[base + q] - mean[o]
                    squares += d * d
                }
            }
            variance[o] = squares / Double(positions)
        }
        let inverseStd = variance.map { 1 / ($0 + AdaptiveBlurPool2DConfiguration.epsilon).squareRoot() }
        return (map, mean, variance, inverseStd)
    }
}
