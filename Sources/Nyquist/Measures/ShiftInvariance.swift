import NyquistCore

/// How an integer shift treats the samples that leave one edge of the map.
public enum ShiftMode: String, Sendable, CaseIterable, Codable {
    /// They re-enter at the opposite edge (the map is a torus).
    case circular
    /// They are dropped; the vacated samples become 0.
    case zeroFilled = "zero-filled"
}

/// An integer translation of a map: content at (i, j) moves to (i + dy, j + dx).
public struct InputShift: Sendable, Hashable, Codable, CustomStringConvertible {
    /// Rows down (negative: up).
    public let dy: Int
    /// Columns right (negative: left).
    public let dx: Int

    /// The shift by `dy` rows and `dx` columns.
    public init(dy: Int, dx: Int) {
        self.dy = dy
        self.dx = dx
    }

    /// The shifts that `ShiftInvariance` averages for a shift size `d` (our choice): along the
    /// rows (d, 0), along the columns (0, d) and diagonal (d, d), so that an operator that is
    /// anisotropic, or that is equivariant per axis but not jointly, shows it.
    public static func directions(size d: Int) -> [InputShift] {
        [InputShift(dy: d, dx: 0), InputShift(dy: 0, dx: d), InputShift(dy: d, dx: d)]
    }

    public var description: String { "(\(dy), \(dx))" }
}

/// The operator-level shift-invariance measures of SPEC.md section 6, for any operator given as
/// a function from an NCHW input to its (downsampled) NCHW output, so the OpenCL layers and the
/// CPU reference are measured by the same code.
///
/// The choices below are ours (SPEC.md leaves them open); docs/shift-invariance.md explains them.
public enum ShiftInvariance {
    /// An operator under test: NCHW input to NCHW output, with a fixed stride.
    public typealias Operator = (HostTensor) throws -> HostTensor

    /// Output rows and columns left out at every edge for zero-filled shifts (our choice, in
    /// output pixels): covers the footprint of the operators' own border handling (padding,
    /// LiftPool's two K = 5 convolutions), so the zero-filled error measures the shift and not
    /// the border. It cannot cover operators with global context (TIPS' quadrant means).
    public static let defaultBorderMargin = 6

    /// Relative tolerance of "equal to the window maximum" in ``maximumSamplingBias(input:output:stride:)``.
    public static let samplingTolerance = 1e-6

    /// `x` (rank 4) shifted by `shift` over its last two axes: y[n, c, i, j] = x[n, c, i - dy, j - dx],
    /// wrapped (`circular`) or 0 where i - dy or j - dx falls outside (`zeroFilled`).
    public static func shifted(_ x: HostTensor, by shift: InputShift, mode: ShiftMode) throws -> HostTensor {
        let shape = try Shape4D(x.shape, role: "shifted map")
        var values = [Float](repeating: 0, count: x.count)
        for plane in 0..<(shape.n * shape.c) {
            let base = plane * shape.h * shape.w
            for row in 0..<shape.h {
                guard let sourceRow = sourceIndex(row - shift.dy, shape.h, mode) else { continue }
                for column in 0..<shape.w {
                    guard let sourceColumn = sourceIndex(column - shift.dx, shape.w, mode) else { continue }
                    values[base + row * shape.w + column] = x.values[base + sourceRow * shape.w + sourceColumn]
                }
            }
        }
        return try HostTensor(shape: x.shape, values: values)
    }

    /// Output shifts consistent with an input shift of `d` samples along one axis of a stride-s
    /// operator: floor(d / s) and ceil(d / s) (one value when s divides d).
    public static func outputShiftCandidates(inputShift d: Int, stride s: Int) -> [Int] {
        let low = Int((Double(d) / Double(s)).rounded(.down))
        let high = Int((Double(d) / Double(s)).rounded(.up))
        return low == high ? [low] : [low, high]
    }

    /// The equivariance error of `D` for `shift` in `mode` on `x`:
    /// ||D(shift(x)) - align(D(x))|| / ||D(x)||.
    ///
    /// Our choices: `align` is chosen per batch entry (APS picks its phase per sample, so two
    /// samples of one batch may legitimately need different output shifts), over all channels
    /// jointly, as the candidate pair from ``outputShiftCandidates(inputShift:stride:)`` with the
    /// smallest squared difference; the norms are then summed over the batch. A circular shift
    /// compares every output sample, aligned by a circular output shift. A zero-filled shift
    /// compares only output positions i with both i and i - ey (and likewise j, j - ex) at least
    /// `borderMargin` from every edge, and the denominator is ||D(x)|| over the same positions.
    /// `outputOfInput` lets a caller that measures many shifts compute D(x) once.
    public static func equivarianceError(
        of operator: Operator, input x: HostTensor, shift: InputShift, mode: ShiftMode, stride: Int = 2,
        borderMargin: Int = defaultBorderMargin, outputOfInput: HostTensor? = nil
    ) throws -> Double {
        guard stride > 0 else {
            throw NyquistError(.invalidConfiguration, "equivariance stride \(stride) must be positive")
        }
        let reference = try outputOfInput ?? `operator`(x)
        let moved = try `operator`(shifted(x, by: shift, mode: mode))
        guard moved.shape == reference.shape else {
            throw NyquistError(
                .invalidShape,
                "the operator gave shape \(moved.shape) for the shifted input but \(reference.shape) for the input")
        }
        let shape = try Shape4D(reference.shape, role: "operator output")
        let margin = mode == .circular ? 0 : max(borderMargin, 0)
        let largestRowShift = outputShiftCandidates(inputShift: shift.dy, stride: stride).map(abs).max() ?? 0
        let largestColumnShift = outputShiftCandidates(inputShift: shift.dx, stride: stride).map(abs).max() ?? 0
        guard shape.h > 2 * margin + largestRowShift, shape.w > 2 * margin + largestColumnShift else {
            throw NyquistError(
                .invalidShape,
                "output \(shape) is too small to compare a zero-filled shift \(shift) with a border margin of \(margin)")
        }
        var differenceSum = 0.0
        var referenceSum = 0.0
        for sample in 0..<shape.n {
            var best = (difference: Double.infinity, reference: 0.0)
            for ey in outputShiftCandidates(inputShift: shift.dy, stride: stride) {
                for ex in outputShiftCandidates(inputShift: shift.dx, stride: stride) {
                    let sums = alignedSquaredSums(
                        moved, reference, shape: shape, sample: sample, ey: ey, ex: ex, margin: margin, mode: mode)
                    // `<=` with the infinite start keeps NaN sums (NaN inputs) from leaving it unset.
                    if sums.difference <= best.difference || best.difference == .infinity { best = sums }
                }
            }
            differenceSum += best.difference
            referenceSum += best.reference
        }
        if referenceSum > 0 { return (differenceSum / referenceSum).squareRoot() }
        return differenceSum == 0 ? 0 : .infinity
    }

    /// Maximum-sampling bias (SPEC.md's definition, ours): the fraction of output values that
    /// equal, to ``samplingTolerance`` relative, the maximum of their stride x stride input
    /// window, which for output (i, j) is rows s i ..< s i + s and columns s j ..< s j + s of the
    /// same (n, c) plane. Our choice for every operator, padding offsets included: the window an
    /// output is centred on for the stride-s operators here (BlurPool's even filter starts one
    /// sample before s i and ends one after s i + 1). Windows are cut at the input's edge;
    /// outputs whose window is empty are not counted. Max pool k2 s2 gives exactly 1.
    public static func maximumSamplingBias(input x: HostTensor, output y: HostTensor, stride s: Int) throws -> Double {
        guard s > 0 else { throw NyquistError(.invalidConfiguration, "sampling bias stride \(s) must be positive") }
        let inputShape = try Shape4D(x.shape, role: "input")
        let outputShape = try Shape4D(y.shape, role: "operator output")
        guard inputShape.n == outputShape.n, inputShape.c == outputShape.c else {
            throw NyquistError(
                .invalidShape, "output \(outputShape) does not keep the batch and channels of input \(inputShape)")
        }
        var counted = 0
        var atMaximum = 0
        for plane in 0..<(outputShape.n * outputShape.c) {
            let inputBase = plane * inputShape.h * inputShape.w
            let outputBase = plane * outputShape.h * outputShape.w
            for i in 0..<outputShape.h where s * i < inputShape.h {
                for j in 0..<outputShape.w where s * j < inputShape.w {
                    var maximum = -Float.infinity
                    for row in (s * i)..<min(s * i + s, inputShape.h) {
                        for column in (s * j)..<min(s * j + s, inputShape.w) {
                            maximum = max(maximum, x.values[inputBase + row * inputShape.w + column])
                        }
                    }
                    let value = Double(y.values[outputBase + i * outputShape.w + j])
                    counted += 1
                    if abs(value - Double(maximum)) <= samplingTolerance * abs(Double(maximum)) { atMaximum += 1 }
                }
            }
        }
        return counted > 0 ? Double(atMaximum) / Double(counted) : 0
    }

    /// ``maximumSamplingBias(input:output:stride:)`` of `operator` applied to `x`.
    public static func maximumSamplingBias(of operator: Operator, input x: HostTensor, stride: Int = 2) throws -> Double {
        try maximumSamplingBias(input: x, output: `operator`(x), stride: stride)
    }

    /// `x` split by an ideal DFT low-pass at `cutoff` cycles/sample into (low, high), low + high = x.
    ///
    /// A DFT bin is low when |fy| < cutoff and |fx| < cutoff (a square pass band: subsampling
    /// folds each axis separately). A bin exactly at the cutoff is high: at the output Nyquist
    /// limit, +f and -f land on the same output bin, so it cannot pass unambiguously.
    public static func lowPassSplit(_ x: HostTensor, cutoff: Double) throws -> (low: HostTensor, high: HostTensor) {
        let shape = try Shape4D(x.shape, role: "low-pass input")
        let planeSize = shape.h * shape.w
        var low = [Float](repeating: 0, count: x.count)
        var high = [Float](repeating: 0, count: x.count)
        for plane in 0..<(shape.n * shape.c) {
            let base = plane * planeSize
            let values = x.values[base..<(base + planeSize)].map(Double.init)
            var spectrum = FourierTransform.forward(try ComplexPlane(height: shape.h, width: shape.w, real: values))
            for row in 0..<shape.h {
                let fy = abs(FourierTransform.frequency(bin: row, length: shape.h))
                for column in 0..<shape.w {
                    let fx = abs(FourierTransform.frequency(bin: column, length: shape.w))
                    if fy >= cutoff || fx >= cutoff {
                        spectrum.real[row * shape.w + column] = 0
                        spectrum.imaginary[row * shape.w + column] = 0
                    }
                }
            }
            let lowPlane = FourierTransform.inverse(spectrum).real
            for index in 0..<planeSize {
                low[base + index] = Float(lowPlane[index])
                high[base + index] = Float(values[index] - lowPlane[index])
            }
        }
        return (try HostTensor(shape: x.shape, values: low), try HostTensor(shape: x.shape, values: high))
    }

    /// The aliased-energy fraction of a stride-s operator on `x` (meant for a zone plate):
    /// ||D(x) - D(x_low)||^2 / ||D(x)||^2, where x_low is ``lowPassSplit(_:cutoff:)`` of x at the
    /// output Nyquist limit 1 / (2 s) cycles per input sample.
    ///
    /// Our method. For a linear operator D(x) - D(x_low) = D(x_high) exactly: the output energy
    /// that comes from input frequencies above the output Nyquist limit, which subsampling folds
    /// onto lower frequencies. For a nonlinear operator it is an attribution (what changes when
    /// those frequencies are removed). Both energies leave out each output plane's mean (its DC
    /// bin): the zone plate's mean of 0.5 would otherwise dominate the denominator and shrink
    /// every fraction. The result can exceed 1 for a nonlinear operator.
    public static func aliasedEnergyFraction(of operator: Operator, input x: HostTensor, stride s: Int = 2) throws -> Double {
        guard s > 0 else { throw NyquistError(.invalidConfiguration, "aliasing stride \(s) must be positive") }
        let full = try `operator`(x)
        let lowOutput = try `operator`(lowPassSplit(x, cutoff: 0.5 / Double(s)).low)
        guard full.shape == lowOutput.shape else {
            throw NyquistError(.invalidShape, "the operator gave shapes \(full.shape) and \(lowOutput.shape) for one input size")
        }
        let shape = try Shape4D(full.shape, role: "operator output")
        let planeSize = shape.h * shape.w
        var aliased = 0.0
        var total = 0.0
        for plane in 0..<(shape.n * shape.c) {
            let base = plane * planeSize
            let output = full.values[base..<(base + planeSize)].map(Double.init)
            let difference = (0..<planeSize).map { output[$0] - Double(lowOutput.values[base + $0]) }
            total += energyWithoutMean(output)
            aliased += energyWithoutMean(difference)
        }
        return total > 0 ? aliased / total : 0
    }

    /// sum (v - mean)^2: the energy of every DFT bin but DC (Parseval).
    private static func energyWithoutMean(_ values: [Double]) -> Double {
        let mean = values.reduce(0, +) / Double(values.count)
        return values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
    }

    /// The source index of `index` along an axis of `length`: wrapped, or nil outside for zero fill.
    private static func sourceIndex(_ index: Int, _ length: Int, _ mode: ShiftMode) -> Int? {
        switch mode {
        case .circular: return ((index % length) + length) % length
        case .zeroFilled: return index >= 0 && index < length ? index : nil
        }
    }

    /// Squared sums of moved - shift(reference, ey, ex) and of the aligned reference, over the
    /// compared positions of one sample.
    private static func alignedSquaredSums(
        _ moved: HostTensor, _ reference: HostTensor, shape: Shape4D, sample: Int, ey: Int, ex: Int, margin: Int,
        mode: ShiftMode
    ) -> (difference: Double, reference: Double) {
        var difference = 0.0
        var referenceEnergy = 0.0
        for channel in 0..<shape.c {
            let base = (sample * shape.c + channel) * shape.h * shape.w
            for i in margin..<max(margin, shape.h - margin) {
                guard let sourceRow = alignedIndex(i - ey, shape.h, margin, mode) else { continue }
                for j in margin..<max(margin, shape.w - margin) {
                    guard let sourceColumn = alignedIndex(j - ex, shape.w, margin, mode) else { continue }
                    let expected = Double(reference.values[base + sourceRow * shape.w + sourceColumn])
                    let actual = Double(moved.values[base + i * shape.w + j])
                    difference += (actual - expected) * (actual - expected)
                    referenceEnergy += expected * expected
                }
            }
        }
        return (difference, referenceEnergy)
    }

    /// Where output position `index` of the shifted result reads the unshifted one: wrapped
    /// (circular) or, for zero fill, only inside the margin-trimmed interior.
    private static func alignedIndex(_ index: Int, _ length: Int, _ margin: Int, _ mode: ShiftMode) -> Int? {
        switch mode {
        case .circular: return ((index % length) + length) % length
        case .zeroFilled: return index >= margin && index < length - margin ? index : nil
        }
    }
}
