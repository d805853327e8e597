import Foundation
import NyquistCore

// CPU reference of LiftDownPool / LiftUpPool (SPEC.md section 4), in plain loops over copied
// lines in Double. The device path has its own index code; nothing here is shared with it.

extension Reference {
    /// The bands of a 1-D LiftDownPool, each (N, C, ceil(L/2)), and the pooled output s + d.
    public struct LiftBands1D<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// Pooled output s + d (our choice for the 1-D layer; SPEC fixes the 2-D sum only).
        public let output: Tensor<T>
        /// Approximation (low) band s.
        public let s: Tensor<T>
        /// Detail (high) band d.
        public let d: Tensor<T>
    }

    /// The bands of a 2-D LiftDownPool, each N x C x ceil(H/2) x ceil(W/2), and y = LL+LH+HL+HH.
    /// The first letter is the horizontal band (along W), the second the vertical one.
    public struct LiftBands2D<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// Pooled output LL + LH + HL + HH.
        public let output: Tensor<T>
        /// s of the vertical lifting of s_h.
        public let ll: Tensor<T>
        /// d of the vertical lifting of s_h.
        public let lh: Tensor<T>
        /// s of the vertical lifting of d_h.
        public let hl: Tensor<T>
        /// d of the vertical lifting of d_h.
        public let hh: Tensor<T>
    }

    /// The regularisers of a training forward: c_u and c_p (summed over the liftings of a 2-D
    /// layer) and loss = lambda_u c_u + lambda_p c_p.
    public struct LiftRegularisers<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// sum over liftings of mean((s - x_o)^2).
        public let cu: T
        /// sum over liftings of mean(d^2).
        public let cp: T
        /// lambda_u * cu + lambda_p * cp.
        public let loss: T
    }

    /// Gradients of a LiftDownPool backward: the input's and the parameters' by PyTorch name.
    public struct LiftGradients<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// Gradient with respect to the input.
        public let input: Tensor<T>
        /// Gradients of the eight parameters (`predict.0.weight`, ...), in their PyTorch shapes.
        public let parameters: [String: Tensor<T>]
    }

    /// Gradients of a LiftUpPool backward: one per band, in the order the forward takes them
    /// (1-D: s, d; 2-D: LL, LH, HL, HH), and the parameters' by PyTorch name.
    public struct LiftBandGradients<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// Gradients of the bands.
        public let bands: [Tensor<T>]
        /// Gradients of the eight parameters.
        public let parameters: [String: Tensor<T>]
    }

    // MARK: LiftDownPool1D

    /// LiftDownPool1D on (N, C, L): bands s and d of length ceil(L/2), the output s + d, and the
    /// regularisers.
    public static func liftDownPool1D<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ parameters: LiftPoolParameters<T>, _ config: LiftPoolConfiguration
    ) throws -> (bands: LiftBands1D<T>, regularisers: LiftRegularisers<T>) {
        let shape = try LiftPoolConfiguration.shape1D(x.shape, role: "\(LiftPoolConfiguration.operatorName) input")
        let outputShape = try config.outputShape1D(for: x.shape)
        let lifting = try Lifting(config, parameters)
        let step = lifting.forward(try LiftMap(x, shape), alongWidth: true)
        let output = step.s.adding(step.d)
        return (
            LiftBands1D(
                output: try output.tensor(outputShape), s: try step.s.tensor(outputShape), d: try step.d.tensor(outputShape)),
            regularisers(config, cu: step.cu, cp: step.cp)
        )
    }

    /// Backward of LiftDownPool1D: gradients may arrive on the output, on either band (nil: zero)
    /// and on the regulariser loss (`gradLoss`, 1 when the loss is added to the objective).
    public static func liftDownPool1DBackward<T: BinaryFloatingPoint & Sendable>(
        input x: Tensor<T>, _ parameters: LiftPoolParameters<T>, _ config: LiftPoolConfiguration,
        gradOutput: Tensor<T>?, gradS: Tensor<T>? = nil, gradD: Tensor<T>? = nil, gradLoss: T = 1
    ) throws -> LiftGradients<T> {
        let shape = try LiftPoolConfiguration.shape1D(x.shape, role: "\(LiftPoolConfiguration.operatorName) input")
        let outputShape = try config.outputShape1D(for: x.shape)
        let bandShape = try LiftPoolConfiguration.shape1D(outputShape, role: "band")
        var lifting = try Lifting(config, parameters)
        let gy = try LiftMap(optional: gradOutput, bandShape, role: "gradient of the output", rank3: true)
        let gs = try LiftMap(optional: gradS, bandShape, role: "gradient of s", rank3: true).adding(gy)
        let gd = try LiftMap(optional: gradD, bandShape, role: "gradient of d", rank3: true).adding(gy)
        let gx = lifting.backward(
            try LiftMap(x, shape), alongWidth: true, gs: gs, gd: gd, gradCU: Double(gradLoss) * config.lambdaU,
            gradCP: Double(gradLoss) * config.lambdaP)
        return LiftGradients(input: try gx.tensor(x.shape), parameters: try lifting.gradientTensors())
    }

    // MARK: LiftDownPool2D

    /// LiftDownPool2D on N x C x H x W: horizontal lifting (along W), then vertical lifting (along
    /// H) of both of its bands, all with the same P and U; four bands, y = their sum, and the
    /// regularisers summed over the three liftings.
    public static func liftDownPool2D<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ parameters: LiftPoolParameters<T>, _ config: LiftPoolConfiguration
    ) throws -> (bands: LiftBands2D<T>, regularisers: LiftRegularisers<T>) {
        let shape = try Shape4D(x.shape, role: "\(LiftPoolConfiguration.operatorName) input")
        let outputShape = try config.outputShape(for: shape).dimensions
        let lifting = try Lifting(config, parameters)
        let horizontal = lifting.forward(try LiftMap(x, shape), alongWidth: true)
        let low = lifting.forward(horizontal.s, alongWidth: false)
        let high = lifting.forward(horizontal.d, alongWidth: false)
        let output = low.s.adding(low.d).adding(high.s).adding(high.d)
        return (
            LiftBands2D(
                output: try output.tensor(outputShape), ll: try low.s.tensor(outputShape), lh: try low.d.tensor(outputShape),
                hl: try high.s.tensor(outputShape), hh: try high.d.tensor(outputShape)),
            regularisers(config, cu: horizontal.cu + low.cu + high.cu, cp: horizontal.cp + low.cp + high.cp)
        )
    }

    /// Backward of LiftDownPool2D: gradients may arrive on the output, on any band (nil: zero)
    /// and on the regulariser loss (`gradLoss`).
    public static func liftDownPool2DBackward<T: BinaryFloatingPoint & Sendable>(
        input x: Tensor<T>, _ parameters: LiftPoolParameters<T>, _ config: LiftPoolConfiguration,
        gradOutput: Tensor<T>?, gradLL: Tensor<T>? = nil, gradLH: Tensor<T>? = nil, gradHL: Tensor<T>? = nil,
        gradHH: Tensor<T>? = nil, gradLoss: T = 1
    ) throws -> LiftGradients<T> {
        let shape = try Shape4D(x.shape, role: "\(LiftPoolConfiguration.operatorName) input")
        let bandShape = try config.outputShape(for: shape)
        var lifting = try Lifting(config, parameters)
        let input = try LiftMap(x, shape)
        let horizontal = lifting.forward(input, alongWidth: true)
        let gy = try LiftMap(optional: gradOutput, bandShape, role: "gradient of the output")
        let gradCU = Double(gradLoss) * config.lambdaU
        let gradCP = Double(gradLoss) * config.lambdaP
        let gsh = lifting.backward(
            horizontal.s, alongWidth: false, gs: try LiftMap(optional: gradLL, bandShape, role: "gradient of LL").adding(gy),
            gd: try LiftMap(optional: gradLH, bandShape, role: "gradient of LH").adding(gy), gradCU: gradCU, gradCP: gradCP)
        let gdh = lifting.backward(
            horizontal.d, alongWidth: false, gs: try LiftMap(optional: gradHL, bandShape, role: "gradient of HL").adding(gy),
            gd: try LiftMap(optional: gradHH, bandShape, role: "gradient of HH").adding(gy), gradCU: gradCU, gradCP: gradCP)
        let gx = lifting.backward(input, alongWidth: true, gs: gsh, gd: gdh, gradCU: gradCU, gradCP: gradCP)
        return LiftGradients(input: try gx.tensor(x.shape), parameters: try lifting.gradientTensors())
    }

    // MARK: LiftUpPool

    /// LiftUpPool1D: the exact inverse of LiftDownPool1D's lifting. x_e = s - U(d),
    /// x_o = d + P(x_e), interleaved to length `length` (2M, or 2M - 1 dropping the padded sample).
    public static func liftUpPool1D<T: BinaryFloatingPoint & Sendable>(
        s: Tensor<T>, d: Tensor<T>, length: Int, _ parameters: LiftPoolParameters<T>, _ config: LiftPoolConfiguration
    ) throws -> Tensor<T> {
        let (bandShape, outputShape) = try inverse1DShapes(s: s, d: d, length: length, config)
        let lifting = try Lifting(config, parameters)
        let x = lifting.inverse(
            s: try LiftMap(s, bandShape), d: try LiftMap(d, bandShape), alongWidth: true, length: length)
        return try x.tensor([outputShape.n, outputShape.c, outputShape.w])
    }

    /// Backward of LiftUpPool1D: gradients of s, d and the parameters from the output's.
    public static func liftUpPool1DBackward<T: BinaryFloatingPoint & Sendable>(
        gradOutput: Tensor<T>, s: Tensor<T>, d: Tensor<T>, length: Int, _ parameters: LiftPoolParameters<T>,
        _ config: LiftPoolConfiguration
    ) throws -> LiftBandGradients<T> {
        let (bandShape, outputShape) = try inverse1DShapes(s: s, d: d, length: length, config)
        var lifting = try Lifting(config, parameters)
        let gx = try LiftMap(optional: gradOutput, outputShape, role: "gradient of the output", rank3: true)
        let (gs, gd) = lifting.inverseBackward(
            s: try LiftMap(s, bandShape), d: try LiftMap(d, bandShape), alongWidth: true, gx: gx)
        return LiftBandGradients(
            bands: [try gs.tensor(s.shape), try gd.tensor(d.shape)], parameters: try lifting.gradientTensors())
    }

    /// LiftUpPool2D: inverts the vertical liftings ((LL, LH) -> s_h, (HL, HH) -> d_h) to
    /// `height` rows, then the horizontal one to `width` columns.
    public static func liftUpPool2D<T: BinaryFloatingPoint & Sendable>(
        ll: Tensor<T>, lh: Tensor<T>, hl: Tensor<T>, hh: Tensor<T>, height: Int, width: Int,
        _ parameters: LiftPoolParameters<T>, _ config: LiftPoolConfiguration
    ) throws -> Tensor<T> {
        let (bandShape, outputShape) = try inverse2DShapes([ll, lh, hl, hh], height: height, width: width, config)
        let lifting = try Lifting(config, parameters)
        let sh = lifting.inverse(s: try LiftMap(ll, bandShape), d: try LiftMap(lh, bandShape), alongWidth: false, length: height)
        let dh = lifting.inverse(s: try LiftMap(hl, bandShape), d: try LiftMap(hh, bandShape), alongWidth: false, length: height)
        return try lifting.inverse(s: sh, d: dh, alongWidth: true, length: width).tensor(outputShape.dimensions)
    }

    /// Backward of LiftUpPool2D: gradients of LL, LH, HL, HH and the parameters.
    public static func liftUpPool2DBackward<T: BinaryFloatingPoint & Sendable>(
        gradOutput: Tensor<T>, ll: Tensor<T>, lh: Tensor<T>, hl: Tensor<T>, hh: Tensor<T>, height: Int, width: Int,
        _ parameters: LiftPoolParameters<T>, _ config: LiftPoolConfiguration
    ) throws -> LiftBandGradients<T> {
        let (bandShape, outputShape) = try inverse2DShapes([ll, lh, hl, hh], height: height, width: width, config)
        var lifting = try Lifting(config, parameters)
        let bands = try [ll, lh, hl, hh].map { try LiftMap($0, bandShape) }
        let sh = lifting.inverse(s: bands[0], d: bands[1], alongWidth: false, length: height)
        let dh = lifting.inverse(s: bands[2], d: bands[3], alongWidth: false, length: height)
        let gx = try LiftMap(optional: gradOutput, outputShape, role: "gradient of the output")
        let (gsh, gdh) = lifting.inverseBackward(s: sh, d: dh, alongWidth: true, gx: gx)
        let (gll, glh) = lifting.inverseBackward(s: bands[0], d: bands[1], alongWidth: false, gx: gsh)
        let (ghl, ghh) = lifting.inverseBackward(s: bands[2], d: bands[3], alongWidth: false, gx: gdh)
        return LiftBandGradients(
            bands: try [gll, glh, ghl, ghh].map { try $0.tensor(bandShape.dimensions) },
            parameters: try lifting.gradientTensors())
    }

    // MARK: Pieces

    static func regularisers<T: BinaryFloatingPoint & Sendable>(_ config: LiftPoolConfiguration, cu: Double, cp: Double)
        -> LiftRegularisers<T>
    {
        LiftRegularisers(cu: T(cu), cp: T(cp), loss: T(config.lambdaU * cu + config.lambdaP * cp))
    }

    static func inverse1DShapes<T>(s: Tensor<T>, d: Tensor<T>, length: Int, _ config: LiftPoolConfiguration) throws
        -> (Shape4D, Shape4D)
    {
        let layer = LiftPoolConfiguration.inverseOperatorName
        let bandShape = try LiftPoolConfiguration.shape1D(s.shape, role: "\(layer) band s")
        guard d.shape == s.shape else {
            throw NyquistError(.invalidShape, "\(layer): band d has shape \(d.shape) but s has \(s.shape)")
        }
        return (bandShape, try config.checkInverse(bandShape: bandShape, targetHeight: 1, targetWidth: length))
    }

    static func inverse2DShapes<T>(_ bands: [Tensor<T>], height: Int, width: Int, _ config: LiftPoolConfiguration) throws
        -> (Shape4D, Shape4D)
    {
        let layer = LiftPoolConfiguration.inverseOperatorName
        let bandShape = try Shape4D(bands[0].shape, role: "\(layer) band LL")
        for (name, band) in zip(["LH", "HL", "HH"], bands.dropFirst()) where band.shape != bands[0].shape {
            throw NyquistError(.invalidShape, "\(layer): band \(name) has shape \(band.shape) but LL has \(bands[0].shape)")
        }
        return (bandShape, try config.checkInverse(bandShape: bandShape, targetHeight: height, targetWidth: width))
    }
}

/// N*C planes of height x width in Double; plane p has channel p % C.
struct LiftMap {
    var values: [Double]
    let batch: Int
    let channels: Int
    let height: Int
    let width: Int

    init(zeros batch: Int, _ channels: Int, _ height: Int, _ width: Int) {
        self.batch = batch
        self.channels = channels
        self.height = height
        self.width = width
        values = Array(repeating: 0, count: batch * channels * height * width)
    }

    init<T: BinaryFloatingPoint & Sendable>(_ tensor: Tensor<T>, _ shape: Shape4D) throws {
        let planes = try Reference.planes(tensor, shape)
        values = planes.values
        batch = shape.n
        channels = shape.c
        height = shape.h
        width = shape.w
    }

    /// The tensor's values, or zeros when it is nil; `role` names it when its shape is wrong.
    init<T: BinaryFloatingPoint & Sendable>(optional tensor: Tensor<T>?, _ shape: Shape4D, role: String, rank3: Bool = false) throws {
        guard let tensor else {
            self.init(zeros: shape.n, shape.c, shape.h, shape.w)
            return
        }
        let expected = rank3 ? [shape.n, shape.c, shape.w] : shape.dimensions
        guard tensor.shape == expected else {
            throw NyquistError(
                .invalidShape, "\(LiftPoolConfiguration.operatorName) backward: \(role) has shape \(tensor.shape), expected \(expected)")
        }
        try self.init(tensor, shape)
    }

    var planes: Int { batch * channels }

    func adding(_ other: LiftMap) -> LiftMap {
        var sum = self
        for index in values.indices { sum.values[index] += other.values[index] }
        return sum
    }

    func tensor<T: BinaryFloatingPoint & Sendable>(_ shape: [Int]) throws -> Tensor<T> {
        try Tensor(shape: shape, values: values.map { T($0) })
    }

    /// Number of lines along the chosen axis and their length.
    func lines(alongWidth: Bool) -> (count: Int, length: Int) {
        alongWidth ? (height, width) : (width, height)
    }

    /// Flat index of element `i` of line `line` of plane `plane`.
    func index(plane: Int, line: Int, _ i: Int, alongWidth: Bool) -> Int {
        alongWidth ? (plane * height + line) * width + i : (plane * height + i) * width + line
    }

    func line(plane: Int, line: Int, alongWidth: Bool) -> [Double] {
        let length = lines(alongWidth: alongWidth).length
        return (0..<length).map { values[index(plane: plane, line: line, $0, alongWidth: alongWidth)] }
    }

    mutating func setLine(_ data: [Double], plane: Int, line: Int, alongWidth: Bool) {
        for (i, value) in data.enumerated() { values[index(plane: plane, line: line, i, alongWidth: alongWidth)] = value }
    }

    /// A zero map with the chosen axis resized to `length`.
    func resized(alongWidth: Bool, length: Int) -> LiftMap {
        alongWidth
            ? LiftMap(zeros: batch, channels, height, length) : LiftMap(zeros: batch, channels, length, width)
    }
}

/// One lifting function F(v) = tanh(scale * relu(conv_K(v) + convBias) + shift) for one channel,
/// with its adjoint.
struct LiftFunction {
    let weight: [Double]
    let bias: Double
    let scale: Double
    let shift: Double

    /// conv (zero "same" padding) + bias, the pre-activation a.
    func preActivation(_ v: [Double]) -> [Double] {
        let k = weight.count
        let half = k / 2
        return (0..<v.count).map { m in
            var sum = bias
            for t in 0..<k {
                let j = m + t - half
                if j >= 0 && j < v.count { sum += weight[t] * v[j] }
            }
            return sum
        }
    }

    func callAsFunction(_ v: [Double]) -> [Double] {
        preActivation(v).map { tanh(scale * max($0, 0) + shift) }
    }

    /// Adds the parameter gradients of <F(v), g> to the accumulators and returns the gradient
    /// with respect to v. relu'(0) = 0.
    func adjoint(_ v: [Double], _ g: [Double], weightGrad: inout ArraySlice<Double>, biasGrad: inout Double,
                 scaleGrad: inout Double, shiftGrad: inout Double) -> [Double] {
        let k = weight.count
        let half = k / 2
        let a = preActivation(v)
        var gv = Array(repeating: 0.0, count: v.count)
        let base = weightGrad.startIndex
        for m in 0..<v.count {
            let r = max(a[m], 0)
            let out = tanh(scale * r + shift)
            let gz = g[m] * (1 - out * out)
            scaleGrad += gz * r
            shiftGrad += gz
            let ga = a[m] > 0 ? gz * scale : 0
            biasGrad += ga
            for t in 0..<k {
                let j = m + t - half
                if j >= 0 && j < v.count {
                    weightGrad[base + t] += ga * v[j]
                    gv[j] += ga * weight[t]
                }
            }
        }
        return gv
    }
}

/// The P and U of one layer, with gradient accumulators for both.
struct Lifting {
    let channels: Int
    let kernelSize: Int
    let predict: [LiftFunction]
    let update: [LiftFunction]
    var predictGrad: LiftingFunctionParameters<Double>
    var updateGrad: LiftingFunctionParameters<Double>

    init<T>(_ config: LiftPoolConfiguration, _ parameters: LiftPoolParameters<T>) throws {
        guard parameters.channels == config.channels, parameters.kernelSize == config.kernelSize else {
            throw NyquistError(
                .invalidParameters,
                "\(LiftPoolConfiguration.operatorName): parameters are for C=\(parameters.channels), K=\(parameters.kernelSize) but the layer is C=\(config.channels), K=\(config.kernelSize)")
        }
        let p = try LiftPoolParameters<T>(config, predict: parameters.predict, update: parameters.update)
        let c = config.channels
        let k = config.kernelSize
        func functions(_ f: LiftingFunctionParameters<T>) -> [LiftFunction] {
            (0..<c).map { channel in
                LiftFunction(
                    weight: f.convWeight[(channel * k)..<((channel + 1) * k)].map { Double($0) },
                    bias: Double(f.convBias[channel]), scale: Double(f.scale[channel]), shift: Double(f.shift[channel]))
            }
        }
        channels = c
        kernelSize = k
        predict = functions(p.predict)
        update = functions(p.update)
        predictGrad = LiftingFunctionParameters(zerosFor: c, kernelSize: k)
        updateGrad = predictGrad
    }

    /// Splits a line (replicate-padding an odd one) into even and odd samples.
    static func split(_ x: [Double]) -> (even: [Double], odd: [Double]) {
        var padded = x
        if x.count % 2 == 1, let last = x.last { padded.append(last) }
        let m = padded.count / 2
        return ((0..<m).map { padded[2 * $0] }, (0..<m).map { padded[2 * $0 + 1] })
    }

    /// One 1-D lifting along W (`alongWidth`) or H of every line: bands s, d and the regularisers
    /// c_u = mean((s - x_o)^2), c_p = mean(d^2) over all elements of the bands.
    func forward(_ x: LiftMap, alongWidth: Bool) -> (s: LiftMap, d: LiftMap, cu: Double, cp: Double) {
        let (lineCount, length) = x.lines(alongWidth: alongWidth)
        let bandLength = LiftPoolConfiguration.bandLength(length)
        var s = x.resized(alongWidth: alongWidth, length: bandLength)
        var d = s
        var cu = 0.0
        var cp = 0.0
        for plane in 0..<x.planes {
            let c = plane % channels
            for line in 0..<lineCount {
                let (even, odd) = Self.split(x.line(plane: plane, line: line, alongWidth: alongWidth))
                let p = predict[c](even)
                let detail = (0..<bandLength).map { odd[$0] - p[$0] }
                let u = update[c](detail)
                let approximation = (0..<bandLength).map { even[$0] + u[$0] }
                for m in 0..<bandLength {
                    cu += (approximation[m] - odd[m]) * (approximation[m] - odd[m])
                    cp += detail[m] * detail[m]
                }
                s.setLine(approximation, plane: plane, line: line, alongWidth: alongWidth)
                d.setLine(detail, plane: plane, line: line, alongWidth: alongWidth)
            }
        }
        let count = Double(s.values.count)
        return (s, d, cu / count, cp / count)
    }

    /// Adjoint of ``forward(_:alongWidth:)``: from gradients on s, d, c_u and c_p, the gradient of
    /// x; parameter gradients are added to the accumulators.
    mutating func backward(
        _ x: LiftMap, alongWidth: Bool, gs: LiftMap, gd: LiftMap, gradCU: Double, gradCP: Double
    ) -> LiftMap {
        let (lineCount, length) = x.lines(alongWidth: alongWidth)
        let bandLength = LiftPoolConfiguration.bandLength(length)
        let count = Double(gs.values.count)
        var gx = x.resized(alongWidth: alongWidth, length: length)
        let k = kernelSize
        for plane in 0..<x.planes {
            let c = plane % channels
            for line in 0..<lineCount {
                let (even, odd) = Self.split(x.line(plane: plane, line: line, alongWidth: alongWidth))
                let detail = zip(odd, predict[c](even)).map { $0 - $1 }
                let approximation = zip(even, update[c](detail)).map { $0 + $1 }
                var gApprox = gs.line(plane: plane, line: line, alongWidth: alongWidth)
                var gDetail = gd.line(plane: plane, line: line, alongWidth: alongWidth)
                var gEven = Array(repeating: 0.0, count: bandLength)
                var gOdd = Array(repeating: 0.0, count: bandLength)
                for m in 0..<bandLength {
                    let residual = 2 * (approximation[m] - odd[m]) / count * gradCU
                    gApprox[m] += residual
                    gOdd[m] -= residual
                    gDetail[m] += 2 * detail[m] / count * gradCP
                }
                // s = x_e + U(d)
                for m in 0..<bandLength { gEven[m] += gApprox[m] }
                let gThroughU = update[c].adjoint(
                    detail, gApprox, weightGrad: &updateGrad.convWeight[(c * k)..<((c + 1) * k)],
                    biasGrad: &updateGrad.convBias[c], scaleGrad: &updateGrad.scale[c], shiftGrad: &updateGrad.shift[c])
                for m in 0..<bandLength { gDetail[m] += gThroughU[m] }
                // d = x_o - P(x_e): P's output receives -gDetail.
                for m in 0..<bandLength { gOdd[m] += gDetail[m] }
                let gThroughP = predict[c].adjoint(
                    even, gDetail.map { -$0 }, weightGrad: &predictGrad.convWeight[(c * k)..<((c + 1) * k)],
                    biasGrad: &predictGrad.convBias[c], scaleGrad: &predictGrad.scale[c], shiftGrad: &predictGrad.shift[c])
                for m in 0..<bandLength { gEven[m] += gThroughP[m] }
                var gLine = Array(repeating: 0.0, count: length)
                for m in 0..<bandLength {
                    gLine[2 * m] += gEven[m]
                    // The padded sample of an odd line copies the last one: its gradient goes there.
                    gLine[min(2 * m + 1, length - 1)] += gOdd[m]
                }
                gx.setLine(gLine, plane: plane, line: line, alongWidth: alongWidth)
            }
        }
        return gx
    }

    /// Inverse lifting: x_e = s - U(d), x_o = d + P(x_e), interleaved to `length` samples.
    func inverse(s: LiftMap, d: LiftMap, alongWidth: Bool, length: Int) -> LiftMap {
        let (lineCount, bandLength) = s.lines(alongWidth: alongWidth)
        var x = s.resized(alongWidth: alongWidth, length: length)
        for plane in 0..<s.planes {
            let c = plane % channels
            for line in 0..<lineCount {
                let approximation = s.line(plane: plane, line: line, alongWidth: alongWidth)
                let detail = d.line(plane: plane, line: line, alongWidth: alongWidth)
                let even = zip(approximation, update[c](detail)).map { $0 - $1 }
                let odd = zip(detail, predict[c](even)).map { $0 + $1 }
                var out = Array(repeating: 0.0, count: length)
                for m in 0..<bandLength {
                    out[2 * m] = even[m]
                    if 2 * m + 1 < length { out[2 * m + 1] = odd[m] }
                }
                x.setLine(out, plane: plane, line: line, alongWidth: alongWidth)
            }
        }
        return x
    }

    /// Adjoint of ``inverse(s:d:alongWidth:length:)``: gradients of s and d from that of x (the
    /// dropped padded sample gets none); parameter gradients are added to the accumulators.
    mutating func inverseBackward(s: LiftMap, d: LiftMap, alongWidth: Bool, gx: LiftMap) -> (LiftMap, LiftMap) {
        let (lineCount, bandLength) = s.lines(alongWidth: alongWidth)
        let length = gx.lines(alongWidth: alongWidth).length
        var gs = s.resized(alongWidth: alongWidth, length: bandLength)
        var gd = gs
        let k = kernelSize
        for plane in 0..<s.planes {
            let c = plane % channels
            for line in 0..<lineCount {
                let approximation = s.line(plane: plane, line: line, alongWidth: alongWidth)
                let detail = d.line(plane: plane, line: line, alongWidth: alongWidth)
                let even = zip(approximation, update[c](detail)).map { $0 - $1 }
                let gLine = gx.line(plane: plane, line: line, alongWidth: alongWidth)
                var gEven = (0..<bandLength).map { gLine[2 * $0] }
                let gOdd = (0..<bandLength).map { 2 * $0 + 1 < length ? gLine[2 * $0 + 1] : 0 }
                // x_o = d + P(x_e)
                var gDetail = gOdd
                let gThroughP = predict[c].adjoint(
                    even, gOdd, weightGrad: &predictGrad.convWeight[(c * k)..<((c + 1) * k)],
                    biasGrad: &predictGrad.convBias[c], scaleGrad: &predictGrad.scale[c], shiftGrad: &predictGrad.shift[c])
                for m in 0..<bandLength { gEven[m] += gThroughP[m] }
                // x_e = s - U(d): U's output receives -gEven.
                let gThroughU = update[c].adjoint(
                    detail, gEven.map { -$0 }, weightGrad: &updateGrad.convWeight[(c * k)..<((c + 1) * k)],
                    biasGrad: &updateGrad.convBias[c], scaleGrad: &updateGrad.scale[c], shiftGrad: &updateGrad.shift[c])
                for m in 0..<bandLength { gDetail[m] += gThroughU[m] }
                gs.setLine(gEven, plane: plane, line: line, alongWidth: alongWidth)
                gd.setLine(gDetail, plane: plane, line: line, alongWidth: alongWidth)
            }
        }
        return (gs, gd)
    }

    /// The accumulated parameter gradients by PyTorch name and shape.
    func gradientTensors<T: BinaryFloatingPoint & Sendable>() throws -> [String: Tensor<T>] {
        let config = try LiftPoolConfiguration(channels: channels, kernelSize: kernelSize)
        return try LiftPoolParameters<Double>(config, predict: predictGrad, update: updateGrad).converted(to: T.self)
            .stateDict()
    }
}
