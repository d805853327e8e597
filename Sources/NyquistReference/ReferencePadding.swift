import NyquistCore

/// Padding written directly from SPEC.md section 0, one small function per mode.
///
/// The device path computes "which input index does padded index i read" with arithmetic
/// (`PaddingMode.sourceIndex`). The reference must not share that code, so here the padded axis
/// is built literally: the samples are laid out and the border is filled by mirroring, clamping
/// or wrapping the laid-out samples. The functions are generic over the element so that the same
/// code pads values and pads index arrays; padding `[0, 1, ..., n-1]` gives, for every padded
/// position, the input position it came from, which is what the adjoint (backward) needs to send
/// gradients from padded positions back to their source pixels.
enum ReferencePadding {
    /// `zero` (constant) padding: `before` copies of `fill`, the samples, `after` copies of `fill`.
    static func constantPad<E>(_ samples: [E], before: Int, after: Int, fill: E) -> [E] {
        Array(repeating: fill, count: before) + samples + Array(repeating: fill, count: after)
    }

    /// `reflect`: mirror about the first and last sample without repeating it, so the sample `d`
    /// steps outside reads the sample `d` steps inside (index -1 reads 1, index n reads n-2).
    ///
    /// A mirror is only defined while the pad is shorter than the axis; callers validate that
    /// through the configuration, and this function throws rather than read out of bounds.
    static func reflectPad<E>(_ samples: [E], before: Int, after: Int) throws -> [E] {
        let n = samples.count
        guard (before == 0 || before < n) && (after == 0 || after < n) else {
            throw NyquistError(
                .invalidShape,
                "reference: reflect padding of \(before) before and \(after) after needs an axis longer than both, "
                    + "but the axis has \(n) samples")
        }
        var padded: [E] = []
        padded.reserveCapacity(before + n + after)
        for distance in stride(from: before, through: 1, by: -1) {
            padded.append(samples[distance])
        }
        padded += samples
        for distance in stride(from: 1, through: after, by: 1) {
            padded.append(samples[n - 1 - distance])
        }
        return padded
    }

    /// `replicate`: the first sample repeated before, the last after (clamping).
    static func replicatePad<E>(_ samples: [E], before: Int, after: Int) -> [E] {
        guard let first = samples.first, let last = samples.last else { return samples }
        return Array(repeating: first, count: before) + samples + Array(repeating: last, count: after)
    }

    /// `circular`: the axis is one period of a periodic signal and the border continues it.
    /// Pads longer than the axis wrap more than once, which is still well defined.
    static func circularPad<E>(_ samples: [E], before: Int, after: Int) -> [E] {
        let n = samples.count
        guard n > 0 else { return samples }
        var padded: [E] = []
        padded.reserveCapacity(before + n + after)
        // The sample `d` steps before the start is the one `d` steps before the end of the period.
        for distance in stride(from: before, through: 1, by: -1) {
            padded.append(samples[(n - distance % n) % n])
        }
        padded += samples
        for distance in 0..<after {
            padded.append(samples[distance % n])
        }
        return padded
    }

    /// Pads one axis in `mode`; `zero` mode uses `fill`.
    static func pad<E>(_ samples: [E], before: Int, after: Int, mode: PaddingMode, fill: E) throws -> [E] {
        switch mode {
        case .zero: return constantPad(samples, before: before, after: after, fill: fill)
        case .reflect: return try reflectPad(samples, before: before, after: after)
        case .replicate: return replicatePad(samples, before: before, after: after)
        case .circular: return circularPad(samples, before: before, after: after)
        }
    }

    /// For every position of an axis of `size` padded in `mode`, the input position it reads, or
    /// `nil` where it reads the constant (zero mode's 0, max pooling's -inf).
    static func sourcePositions(size: Int, before: Int, after: Int, mode: PaddingMode) throws -> [Int?] {
        let positions: [Int?] = Array(0..<size)
        return try pad(positions, before: before, after: after, mode: mode, fill: nil)
    }
}

/// One plane (H x W map) padded on all four sides, with the provenance of every padded position.
///
/// Every mode here pads each axis independently (a corner of a reflected map is the reflection
/// of the reflection), so the padded map is the outer product of the two padded axes.
struct PaddedGeometry {
    /// Padded height.
    let height: Int
    /// Padded width.
    let width: Int
    /// For each padded position (row-major), the flat index of the input pixel it copies within
    /// its plane, or -1 where it holds the constant. A flat array rather than optionals because
    /// the operators read it in their innermost loops, and debug builds must stay usable on
    /// ImageNet-sized maps.
    let source: [Int]

    /// Geometry of a `height` x `width` plane padded by `pads` in `mode`.
    init(height: Int, width: Int, pads: Padding2D, mode: PaddingMode) throws {
        let rows = try ReferencePadding.sourcePositions(size: height, before: pads.top, after: pads.bottom, mode: mode)
        let columns = try ReferencePadding.sourcePositions(
            size: width, before: pads.left, after: pads.right, mode: mode)
        var source: [Int] = []
        source.reserveCapacity(rows.count * columns.count)
        for row in rows {
            for column in columns {
                if let row, let column {
                    source.append(row * width + column)
                } else {
                    source.append(-1)
                }
            }
        }
        self.height = rows.count
        self.width = columns.count
        self.source = source
    }

    /// Writes the padded copy of `input` (one plane) into `padded`; constant positions get `fill`.
    func pad(_ input: UnsafeBufferPointer<Double>, fill: Double, into padded: UnsafeMutableBufferPointer<Double>) {
        source.withUnsafeBufferPointer { source in
            for position in 0..<source.count {
                let pixel = source[position]
                padded[position] = pixel >= 0 ? input[pixel] : fill
            }
        }
    }

    /// The adjoint of ``pad(_:fill:into:)``: adds every padded position's gradient to the input
    /// pixel it was copied from (several padded positions can copy the same pixel), and drops
    /// the gradient of constant positions, which depend on no input.
    func unpadAdding(_ paddedGradient: UnsafeBufferPointer<Double>, into gradient: UnsafeMutableBufferPointer<Double>) {
        source.withUnsafeBufferPointer { source in
            for position in 0..<source.count where source[position] >= 0 {
                gradient[source[position]] += paddedGradient[position]
            }
        }
    }
}
