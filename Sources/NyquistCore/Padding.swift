/// How a window operator reads positions outside the input.
///
/// `reflect` mirrors without repeating the edge (index -1 reads 1, index H reads H-2), as
/// PyTorch's `ReflectionPad2d`; it needs every pad amount to be smaller than the axis.
/// `replicate` clamps, `circular` wraps, `zero` reads 0.
public enum PaddingMode: String, Sendable, Hashable, CaseIterable, Codable {
    /// Positions outside the input read 0.
    case zero
    /// Mirror without repeating the edge sample.
    case reflect
    /// Clamp to the nearest edge sample.
    case replicate
    /// Wrap around (periodic extension).
    case circular

    /// The input index that padded index `index` reads along an axis of `size`, or `nil` when it
    /// reads the constant 0 (`zero` mode outside the axis).
    ///
    /// Valid for any `index` in `replicate`, `circular` and `zero`; for `reflect`, `index` must
    /// lie in `-(size-1) ... 2*size-2`, which ``validate(pad:size:axis:layer:)`` guarantees.
    public func sourceIndex(_ index: Int, size: Int) -> Int? {
        if index >= 0 && index < size { return index }
        switch self {
        case .zero:
            return nil
        case .replicate:
            return index < 0 ? 0 : size - 1
        case .circular:
            let wrapped = index % size
            return wrapped < 0 ? wrapped + size : wrapped
        case .reflect:
            if size == 1 { return 0 }
            return index < 0 ? -index : 2 * (size - 1) - index
        }
    }

    /// Throws unless padding an axis of `size` by `pad` on one side is well defined in this mode.
    ///
    /// Only `reflect` has a limit (pad < size, as in PyTorch); the others accept any amount.
    public func validate(pad: Int, size: Int, axis: String, layer: String) throws {
        guard pad >= 0 else {
            throw NyquistError(.invalidConfiguration, "\(layer): negative padding \(pad) on \(axis)")
        }
        if self == .reflect && pad > 0 && pad >= size {
            throw NyquistError(
                .invalidShape,
                "\(layer): reflect padding of \(pad) on \(axis) needs \(axis) > \(pad), but \(axis) = \(size); "
                    + "use a larger input, a smaller filter, or padding replicate/zero/circular")
        }
    }
}

/// Padding amounts of a 2-D window operator, in input samples.
public struct Padding2D: Sendable, Hashable, CustomStringConvertible {
    /// Rows added above the input.
    public var top: Int
    /// Rows added below the input.
    public var bottom: Int
    /// Columns added left of the input.
    public var left: Int
    /// Columns added right of the input.
    public var right: Int

    /// Creates padding amounts (each >= 0).
    public init(top: Int, bottom: Int, left: Int, right: Int) {
        self.top = top
        self.bottom = bottom
        self.left = left
        self.right = right
    }

    /// The same amount on all four sides.
    public static func uniform(_ amount: Int) -> Padding2D {
        Padding2D(top: amount, bottom: amount, left: amount, right: amount)
    }

    public var description: String { "(top \(top), bottom \(bottom), left \(left), right \(right))" }
}

/// Output length of a window operator along one axis:
/// `floor((size + padBefore + padAfter - window) / stride) + 1`.
///
/// Throws when the padded axis is shorter than the window (the result would be < 1). It also
/// checks its own arguments, because it is public and a stride of 0 or a huge pad would
/// otherwise trap instead of producing a typed error.
public func windowOutputSize(
    size: Int, padBefore: Int, padAfter: Int, window: Int, stride: Int, axis: String, layer: String
) throws -> Int {
    guard size >= 1, window >= 1, stride >= 1, padBefore >= 0, padAfter >= 0 else {
        throw NyquistError(
            .invalidConfiguration,
            "\(layer): \(axis) window arithmetic needs size, window, stride >= 1 and pads >= 0; got size \(size), "
                + "pads \(padBefore)+\(padAfter), window \(window), stride \(stride)")
    }
    let (partial, overflow1) = size.addingReportingOverflow(padBefore)
    let (padded, overflow2) = partial.addingReportingOverflow(padAfter)
    guard !overflow1, !overflow2 else {
        throw NyquistError(.sizeLimit, "\(layer): \(axis) = \(size) padded by \(padBefore)+\(padAfter) overflows")
    }
    guard padded >= window else {
        throw NyquistError(
            .invalidShape,
            "\(layer): \(axis) = \(size) padded by \(padBefore)+\(padAfter) is \(padded), smaller than the window \(window)")
    }
    return (padded - window) / stride + 1
}
