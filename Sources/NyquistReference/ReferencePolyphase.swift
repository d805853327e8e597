import NyquistCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// CPU reference of the polyphase-sampling operators (SPEC.md section 5): APSPool2D, TIPSPool2D
/// and the TIPS losses, written from the equations with plain loops in `Double`.
extension Reference {
    // MARK: APSPool2D

    /// What APS backward needs: the input and the phase chosen for each sample.
    public struct APSSaved<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// The forward's input.
        public let input: Tensor<T>
        /// Phase index (0...3) per sample.
        public let indices: [Int]

        /// Bundles a forward input with its phase indices.
        public init(input: Tensor<T>, indices: [Int]) {
            self.input = input
            self.indices = indices
        }
    }

    /// APS (SPEC.md section 5): optional circular pre-blur, circular pad of odd sizes at the
    /// bottom/right, one phase per sample by the largest norm (ties to the lowest index, the
    /// first NaN norm wins) or the `indices` given (one per sample, 0...3). Returns the output
    /// and the phase indices used.
    public static func apsPool2D<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: APSPool2DConfiguration, indices given: [Int]? = nil
    ) throws -> (output: Tensor<T>, indices: [Int]) {
        let shape = try Shape4D(x.shape, role: "input")
        let outputShape = try config.outputShape(for: shape)
        if let given { try config.validate(indices: given, for: shape) }
        let (padded, geometry) = try apsPadded(try planes(x, shape), shape, config)
        let indices = given ?? apsChoose(padded, n: shape.n, c: shape.c, norm: config.norm)
        var output = Planes(count: shape.n * shape.c, height: outputShape.h, width: outputShape.w)
        for plane in 0..<(shape.n * shape.c) {
            let phase = indices[plane / shape.c]
            let (a, b) = (phase % 2, phase / 2)
            for i in 0..<outputShape.h {
                for j in 0..<outputShape.w {
                    output.values[(plane * outputShape.h + i) * outputShape.w + j] =
                        padded.values[(plane * geometry.height + 2 * i + a) * geometry.width + 2 * j + b]
                }
            }
        }
        return (try tensor(output, expected: outputShape, layer: APSPool2DConfiguration.operatorName), indices)
    }

    /// Training forward of APS: the output, the indices, and what backward needs.
    public static func apsPool2DTraining<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: APSPool2DConfiguration, indices given: [Int]? = nil
    ) throws -> (output: Tensor<T>, indices: [Int], saved: APSSaved<T>) {
        let (output, indices) = try apsPool2D(x, config, indices: given)
        return (output, indices, APSSaved(input: x, indices: indices))
    }

    /// Gradient of APS with respect to its input: each output gradient goes to the position of
    /// the chosen phase it was copied from, through the odd-size pad (a copied row 0 sends its
    /// gradient back to row 0) and the adjoint of the circular blur. The choice itself is
    /// piecewise constant and carries no gradient.
    public static func apsPool2DBackward<T: BinaryFloatingPoint & Sendable>(
        gradOutput: Tensor<T>, saved: APSSaved<T>, _ config: APSPool2DConfiguration
    ) throws -> Tensor<T> {
        let layer = APSPool2DConfiguration.operatorName
        let shape = try Shape4D(saved.input.shape, role: "saved input")
        let outputShape = try config.outputShape(for: shape)
        try config.validate(indices: saved.indices, for: shape)
        try checkGradOutput(gradOutput, expected: outputShape, input: shape, layer: layer)
        let gy = try planes(gradOutput, outputShape)
        let geometry = try apsGeometry(shape)
        let planeCount = shape.n * shape.c
        var gradPadded = Planes(count: planeCount, height: geometry.height, width: geometry.width)
        for plane in 0..<planeCount {
            let phase = saved.indices[plane / shape.c]
            let (a, b) = (phase % 2, phase / 2)
            for i in 0..<outputShape.h {
                for j in 0..<outputShape.w {
                    gradPadded.values[(plane * geometry.height + 2 * i + a) * geometry.width + 2 * j + b] =
                        gy.values[(plane * outputShape.h + i) * outputShape.w + j]
                }
            }
        }
        var gradBlurred = Planes(count: planeCount, height: shape.h, width: shape.w)
        forEachPlane(gradPadded, &gradBlurred, scratchCount: 0) { _, source, target, _ in
            geometry.unpadAdding(source, into: target)
        }
        let gradInput = try config.blur.map {
            try blurAdjoint(gradBlurred, inputHeight: shape.h, inputWidth: shape.w, $0)
        } ?? gradBlurred
        return try tensor(gradInput, expected: shape, layer: layer)
    }

    /// The bottom/right circular parity pad of APS.
    static func apsGeometry(_ shape: Shape4D) throws -> PaddedGeometry {
        try PaddedGeometry(
            height: shape.h, width: shape.w, pads: Padding2D(top: 0, bottom: shape.h % 2, left: 0, right: shape.w % 2),
            mode: .circular)
    }

    /// The blurred (if configured) and parity-padded planes APS samples from.
    static func apsPadded(_ x: Planes, _ shape: Shape4D, _ config: APSPool2DConfiguration) throws -> (
        Planes, PaddedGeometry
    ) {
        let blurred = try config.blur.map { try blur(x, $0) } ?? x
        let geometry = try apsGeometry(shape)
        var padded = Planes(count: x.count, height: geometry.height, width: geometry.width)
        forEachPlane(blurred, &padded, scratchCount: 0) { _, source, target, _ in
            geometry.pad(source, fill: 0, into: target)
        }
        return (padded, geometry)
    }

    /// The four phase norms (l2 as the norm itself, not its square) of each sample of `x`, after
    /// the configured blur and parity pad: `[sample][phase]`. Tests use the gap between the two
    /// largest to stay away from ties.
    public static func apsNorms(_ x: Tensor<Double>, _ config: APSPool2DConfiguration) throws -> [[Double]] {
        let shape = try Shape4D(x.shape, role: "input")
        _ = try config.outputShape(for: shape)
        let (padded, _) = try apsPadded(try planes(x, shape), shape, config)
        return apsPhaseNorms(padded, n: shape.n, c: shape.c, norm: config.norm)
    }

    static func apsPhaseNorms(_ padded: Planes, n: Int, c: Int, norm: PolyphaseNorm) -> [[Double]] {
        (0..<n).map { sample in
            (0..<4).map { phase in
                let (a, b) = (phase % 2, phase / 2)
                var total = 0.0
                for channel in 0..<c {
                    let base = (sample * c + channel) * padded.planeSize
                    for i in stride(from: a, to: padded.height, by: 2) {
                        for j in stride(from: b, to: padded.width, by: 2) {
                            let magnitude = abs(padded.values[base + i * padded.width + j])
                            switch norm {
                            case .l2: total += magnitude * magnitude
                            case .l1: total += magnitude
                            case .linf:
                                if magnitude.isNaN || total.isNaN {
                                    total = .nan
                                } else if magnitude > total {
                                    total = magnitude
                                }
                            }
                        }
                    }
                }
                return norm == .l2 ? total.squareRoot() : total
            }
        }
    }

    /// The argmax phase per sample: strictly larger wins, the first NaN wins, ties keep the lower.
    static func apsChoose(_ padded: Planes, n: Int, c: Int, norm: PolyphaseNorm) -> [Int] {
        apsPhaseNorms(padded, n: n, c: c, norm: norm).map { norms in
            var best = 0
            for k in 1..<4 where norms[k] > norms[best] || (norms[k].isNaN && !norms[best].isNaN) {
                best = k
            }
            return best
        }
    }

    // MARK: TIPSPool2D

    /// The results of a TIPS forward.
    public struct TIPSResult<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// N x C x H'/2 x W'/2.
        public let output: Tensor<T>
        /// psi, N x C x H' x W'.
        public let psi: Tensor<T>
        /// tau, N x C x 4 (softmax weights of p0..p3).
        public let tau: Tensor<T>
    }

    /// What TIPS backward needs: the input, the weights, and the shift of the L_undo target.
    public struct TIPSSaved<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// The forward's input.
        public let input: Tensor<T>
        /// `conv1.weight` and `conv2.weight`.
        public let parameters: [String: Tensor<T>]
        /// The shift of T(x') for L_undo (`nil`: no L_undo).
        public let shift: MapShift?

        /// Bundles the forward's inputs.
        public init(input: Tensor<T>, parameters: [String: Tensor<T>], shift: MapShift?) {
            self.input = input
            self.parameters = parameters
            self.shift = shift
        }
    }

    /// Every intermediate of a TIPS forward, in Double planes.
    struct TIPSState {
        let shape: Shape4D
        let padded: Shape4D
        let xPadded: Planes
        let geometry: PaddedGeometry
        let z: Planes
        let psi: Planes
        let q: [Double]  // (n, c, 4)
        let tau: [Double]  // (n, c, 4)
        let output: Planes
        let w1: [Double]
        let w2: [Double]
    }

    /// The top/left reflect parity pad of TIPS.
    static func tipsGeometry(_ shape: Shape4D) throws -> PaddedGeometry {
        try PaddedGeometry(
            height: shape.h, width: shape.w, pads: Padding2D(top: shape.h % 2, bottom: 0, left: shape.w % 2, right: 0),
            mode: .reflect)
    }

    static func tipsState<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: TIPSPool2DConfiguration, _ parameters: [String: Tensor<T>]
    ) throws -> TIPSState {
        let shape = try Shape4D(x.shape, role: "input")
        let outputShape = try config.outputShape(for: shape)
        try config.validate(parameters: parameters)
        let w1 = (parameters[TIPSPool2DConfiguration.conv1Name]?.values ?? []).map { Double($0) }
        let w2 = (parameters[TIPSPool2DConfiguration.conv2Name]?.values ?? []).map { Double($0) }
        let padded = try config.paddedShape(for: shape)
        let geometry = try tipsGeometry(shape)
        let planeCount = shape.n * shape.c
        var xPadded = Planes(count: planeCount, height: padded.h, width: padded.w)
        forEachPlane(try planes(x, shape), &xPadded, scratchCount: 0) { _, source, target, _ in
            geometry.pad(source, fill: 0, into: target)
        }
        let k = config.kernelSize
        let p = (k - 1) / 2
        let zeroGeometry = try PaddedGeometry(height: padded.h, width: padded.w, pads: .uniform(p), mode: .zero)
        var z = Planes(count: planeCount, height: padded.h, width: padded.w)
        forEachPlane(xPadded, &z, scratchCount: zeroGeometry.height * zeroGeometry.width) { plane, source, target, scratch in
            zeroGeometry.pad(source, fill: 0, into: scratch)
            let channel = plane % shape.c
            for r in 0..<padded.h {
                for s in 0..<padded.w {
                    var sum = 0.0
                    for u in 0..<k {
                        for v in 0..<k {
                            sum += w1[(channel * k + u) * k + v] * scratch[(r + u) * zeroGeometry.width + s + v]
                        }
                    }
                    target[r * padded.w + s] = sum
                }
            }
        }
        var psi = z
        for index in psi.values.indices { psi.values[index] = max(psi.values[index], 0) }
        let (hh, hw) = (padded.h / 2, padded.w / 2)
        var q = [Double](repeating: 0, count: planeCount * 4)
        var tau = q
        var output = Planes(count: planeCount, height: outputShape.h, width: outputShape.w)
        for plane in 0..<planeCount {
            let base = plane * padded.h * padded.w
            for quadrant in 0..<4 {
                let (top, left) = ((quadrant / 2) * hh, (quadrant % 2) * hw)
                var sum = 0.0
                for r in top..<(top + hh) {
                    for s in left..<(left + hw) { sum += psi.values[base + r * padded.w + s] }
                }
                q[plane * 4 + quadrant] = sum / Double(hh * hw)
            }
            let logits = (0..<4).map { q[plane * 4 + $0] * w2[plane % shape.c] }
            let largest = logits.max() ?? 0
            let exps = logits.map { exp($0 - largest) }
            let total = exps.reduce(0, +)
            for phase in 0..<4 { tau[plane * 4 + phase] = exps[phase] / total }
            for i in 0..<hh {
                for j in 0..<hw {
                    var sum = 0.0
                    for phase in 0..<4 {
                        let (a, b) = (phase % 2, phase / 2)
                        sum += tau[plane * 4 + phase] * xPadded.values[base + (2 * i + a) * padded.w + 2 * j + b]
                    }
                    output.values[(plane * hh + i) * hw + j] = sum
                }
            }
        }
        return TIPSState(
            shape: shape, padded: padded, xPadded: xPadded, geometry: geometry, z: z, psi: psi, q: q, tau: tau,
            output: output, w1: w1, w2: w2)
    }

    /// TIPS (SPEC.md section 5) with `parameters` `conv1.weight` (C,1,k,k) and `conv2.weight`
    /// (C,1,1,1): output, psi and tau.
    public static func tipsPool2D<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: TIPSPool2DConfiguration, parameters: [String: Tensor<T>]
    ) throws -> TIPSResult<T> {
        let state = try tipsState(x, config, parameters)
        let layer = TIPSPool2DConfiguration.operatorName
        let tauShape = [state.shape.n, state.shape.c, 4]
        return TIPSResult(
            output: try tensor(state.output, expected: try config.outputShape(for: state.shape), layer: layer),
            psi: try tensor(state.psi, expected: state.padded, layer: layer),
            tau: try Tensor(shape: tauShape, values: state.tau.map { T($0) }))
    }

    /// Training forward of TIPS: the results and what backward needs; `shift` is the L_undo
    /// target's shift (draw it from a seeded ``ShiftGenerator``), `nil` without L_undo.
    public static func tipsPool2DTraining<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: TIPSPool2DConfiguration, parameters: [String: Tensor<T>], shift: MapShift?
    ) throws -> (result: TIPSResult<T>, saved: TIPSSaved<T>) {
        (try tipsPool2D(x, config, parameters: parameters), TIPSSaved(input: x, parameters: parameters, shift: shift))
    }

    /// T(x'): the parity-padded input shifted by `shift` (wrapped or zero-filled), computed from
    /// the literal definition T[r, s] = x'[r - dy, s - dx].
    static func shiftTarget(_ x: Planes, _ shift: MapShift) -> Planes {
        var target = Planes(count: x.count, height: x.height, width: x.width)
        for plane in 0..<x.count {
            for r in 0..<x.height {
                for s in 0..<x.width {
                    var (sr, ss) = (r - shift.dy, s - shift.dx)
                    let inside = sr >= 0 && sr < x.height && ss >= 0 && ss < x.width
                    if !inside {
                        if shift.fill == .zero { continue }
                        sr = ((sr % x.height) + x.height) % x.height
                        ss = ((ss % x.width) + x.width) % x.width
                    }
                    target.values[(plane * x.height + r) * x.width + s] =
                        x.values[(plane * x.height + sr) * x.width + ss]
                }
            }
        }
        return target
    }

    /// T(x') of L_undo for input `x`: the parity-padded input shifted by `shift`, N x C x H' x W'.
    public static func tipsUndoTarget<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: TIPSPool2DConfiguration, shift: MapShift
    ) throws -> Tensor<T> {
        let shape = try Shape4D(x.shape, role: "input")
        _ = try config.outputShape(for: shape)
        let padded = try config.paddedShape(for: shape)
        let geometry = try tipsGeometry(shape)
        var xPadded = Planes(count: shape.n * shape.c, height: padded.h, width: padded.w)
        forEachPlane(try planes(x, shape), &xPadded, scratchCount: 0) { _, source, target, _ in
            geometry.pad(source, fill: 0, into: target)
        }
        return try tensor(shiftTarget(xPadded, shift), expected: padded, layer: TIPSPool2DConfiguration.operatorName)
    }

    /// The TIPS losses of a forward's results: L_FM = mean over (n, c) of (1 - ||tau||_2), and
    /// L_undo = mean((psi - target)^2) over N x C x H' x W' (`nil` without a target).
    public static func tipsLosses<T: BinaryFloatingPoint & Sendable>(result: TIPSResult<T>, target: Tensor<T>?) throws
        -> (fm: Double, undo: Double?)
    {
        let planeCount = result.tau.values.count / 4
        var fm = 0.0
        for plane in 0..<planeCount {
            let norm = (0..<4).reduce(0.0) { $0 + Double(result.tau.values[plane * 4 + $1] * result.tau.values[plane * 4 + $1]) }
            fm += 1 - norm.squareRoot()
        }
        fm /= Double(planeCount)
        guard let target else { return (fm, nil) }
        guard target.shape == result.psi.shape else {
            throw NyquistError(
                .invalidShape, "tips-pool: L_undo target has shape \(target.shape) but psi has \(result.psi.shape)")
        }
        var undo = 0.0
        for (p, t) in zip(result.psi.values, target.values) {
            undo += (Double(p) - Double(t)) * (Double(p) - Double(t))
        }
        return (fm, undo / Double(target.values.count))
    }

    /// The TIPS losses of a training forward (the target drawn from the saved shift).
    public static func tipsLosses<T: BinaryFloatingPoint & Sendable>(
        saved: TIPSSaved<T>, _ config: TIPSPool2DConfiguration
    ) throws -> (fm: Double, undo: Double?) {
        let result = try tipsPool2D(saved.input, config, parameters: saved.parameters)
        let target = try saved.shift.map { try tipsUndoTarget(saved.input, config, shift: $0) }
        return try tipsLosses(result: result, target: target)
    }

    /// Gradient of <output, gradOutput> + <psi, gradPsi> + <tau, gradTau> + weights.fm * L_FM
    /// + weights.undo * L_undo with respect to the input and both weights (by PyTorch name).
    /// `gradPsi` (N x C x H' x W', psi's shape) and `gradTau` (N x C x 4, tau's order) are the
    /// objective's gradients of losses computed outside the operator; nil adds nothing. T(x') is
    /// a constant: no gradient flows through the target. ReLU's derivative at 0 is 0.
    public static func tipsPool2DBackward<T: BinaryFloatingPoint & Sendable>(
        gradOutput: Tensor<T>, saved: TIPSSaved<T>, _ config: TIPSPool2DConfiguration,
        lossWeights: TIPSLossWeights = .none, gradPsi: Tensor<T>? = nil, gradTau: Tensor<T>? = nil
    ) throws -> (input: Tensor<T>, parameters: [String: Tensor<T>]) {
        let layer = TIPSPool2DConfiguration.operatorName
        let state = try tipsState(saved.input, config, saved.parameters)
        let outputShape = try config.outputShape(for: state.shape)
        try checkGradOutput(gradOutput, expected: outputShape, input: state.shape, layer: layer)
        if lossWeights.undo != 0 && saved.shift == nil {
            throw NyquistError(
                .invalidConfiguration, "\(layer) backward: L_undo has weight \(lossWeights.undo) but no target shift was saved")
        }
        let externalPsi = try gradPsi.map { gradient -> [Double] in
            try checkExternal(gradient, expected: state.padded.dimensions, name: "gradPsi (psi's shape)", layer: layer)
            return gradient.values.map { Double($0) }
        }
        let externalTau = try gradTau.map { gradient -> [Double] in
            try checkExternal(
                gradient, expected: [state.shape.n, state.shape.c, 4], name: "gradTau (tau's shape)", layer: layer)
            return gradient.values.map { Double($0) }
        }
        let gy = try planes(gradOutput, outputShape)
        let (n, c) = (state.shape.n, state.shape.c)
        let (hp, wp) = (state.padded.h, state.padded.w)
        let (hh, hw) = (hp / 2, wp / 2)
        let k = config.kernelSize
        let p = (k - 1) / 2
        let planeCount = n * c
        var gradXPadded = Planes(count: planeCount, height: hp, width: wp)
        var psiGradient = Planes(count: planeCount, height: hp, width: wp)
        var gradW2 = [Double](repeating: 0, count: c)
        var gradW1 = [Double](repeating: 0, count: c * k * k)
        let target = saved.shift.map { shiftTarget(state.xPadded, $0) }
        let undoScale = 2 * lossWeights.undo / Double(planeCount * hp * wp)
        for plane in 0..<planeCount {
            let channel = plane % c
            let base = plane * hp * wp
            let tau = (0..<4).map { state.tau[plane * 4 + $0] }
            // Output = sum_k tau_k p_k: gradients to the phases and to tau.
            var tauGradient = [Double](repeating: 0, count: 4)
            for i in 0..<hh {
                for j in 0..<hw {
                    let g = gy.values[(plane * hh + i) * hw + j]
                    for phase in 0..<4 {
                        let position = base + (2 * i + phase % 2) * wp + 2 * j + phase / 2
                        gradXPadded.values[position] += tau[phase] * g
                        tauGradient[phase] += g * state.xPadded.values[position]
                    }
                }
            }
            // L_FM = mean (1 - ||tau||): d/dtau_k = -tau_k / ||tau|| / (N C).
            if lossWeights.fm != 0 {
                let norm = tau.reduce(0) { $0 + $1 * $1 }.squareRoot()
                for phase in 0..<4 { tauGradient[phase] -= lossWeights.fm * tau[phase] / norm / Double(planeCount) }
            }
            if let externalTau {
                for phase in 0..<4 { tauGradient[phase] += externalTau[plane * 4 + phase] }
            }
            // Softmax: d logit_k = tau_k (g_k - sum_l tau_l g_l).
            let inner = (0..<4).reduce(0.0) { $0 + tau[$1] * tauGradient[$1] }
            for phase in 0..<4 {
                let gradLogit = tau[phase] * (tauGradient[phase] - inner)
                gradW2[channel] += gradLogit * state.q[plane * 4 + phase]
                let gradQ = gradLogit * state.w2[channel] / Double(hh * hw)
                let (top, left) = ((phase / 2) * hh, (phase % 2) * hw)
                for r in top..<(top + hh) {
                    for s in left..<(left + hw) { psiGradient.values[base + r * wp + s] += gradQ }
                }
            }
            if let target {
                for index in base..<(base + hp * wp) {
                    psiGradient.values[index] += undoScale * (state.psi.values[index] - target.values[index])
                }
            }
            if let externalPsi {
                for index in base..<(base + hp * wp) { psiGradient.values[index] += externalPsi[index] }
            }
            // ReLU, then the depthwise correlation's adjoints (input and weight).
            for r in 0..<hp {
                for s in 0..<wp {
                    let index = base + r * wp + s
                    let gz = state.z.values[index] > 0 ? psiGradient.values[index] : 0
                    if gz == 0 { continue }
                    for u in 0..<k {
                        let row = r + u - p
                        guard row >= 0 && row < hp else { continue }
                        for v in 0..<k {
                            let column = s + v - p
                            guard column >= 0 && column < wp else { continue }
                            gradW1[(channel * k + u) * k + v] += gz * state.xPadded.values[base + row * wp + column]
                            gradXPadded.values[base + row * wp + column] += gz * state.w1[(channel * k + u) * k + v]
                        }
                    }
                }
            }
        }
        var gradInput = Planes(count: planeCount, height: state.shape.h, width: state.shape.w)
        let geometry = state.geometry
        forEachPlane(gradXPadded, &gradInput, scratchCount: 0) { _, source, target, _ in
            geometry.unpadAdding(source, into: target)
        }
        return (
            try tensor(gradInput, expected: state.shape, layer: layer),
            [
                TIPSPool2DConfiguration.conv1Name: try Tensor(shape: [c, 1, k, k], values: gradW1.map { T($0) }),
                TIPSPool2DConfiguration.conv2Name: try Tensor(shape: [c, 1, 1, 1], values: gradW2.map { T($0) }),
            ]
        )
    }

    /// Checks an external gradient against the shape of the result it belongs to (and its value
    /// count against that shape, as `planes` does: `Tensor.values` is publicly mutable).
    static func checkExternal<T>(_ gradient: Tensor<T>, expected: [Int], name: String, layer: String) throws {
        guard gradient.shape == expected, gradient.values.count == expected.reduce(1, *) else {
            throw NyquistError(
                .invalidShape,
                "\(layer) backward: \(name) has shape \(gradient.shape) and \(gradient.values.count) values, "
                    + "expected \(expected)")
        }
    }
}
