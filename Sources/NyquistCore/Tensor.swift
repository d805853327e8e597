/// A dense, row-major (C order) tensor in host memory.
///
/// Operators use NCHW (rank 4). The element type is generic so that the CPU reference can run
/// the same code in `Double` for finite-difference gradient checks; the device path and file
/// formats use `Float` (see ``HostTensor``).
public struct Tensor<Scalar: BinaryFloatingPoint & Sendable>: Sendable, Equatable {
    /// Sizes of each axis, outermost first.
    public let shape: [Int]
    /// `shape.reduce(1, *)` values in row-major order.
    public var values: [Scalar]

    /// Wraps `values` with `shape`; throws if the counts disagree or a size is not positive.
    public init(shape: [Int], values: [Scalar]) throws {
        let count = try Tensor.elementCount(of: shape)
        guard values.count == count else {
            throw NyquistError(
                .invalidShape, "shape \(shape) holds \(count) values but \(values.count) were given")
        }
        self.shape = shape
        self.values = values
    }

    /// A tensor of `shape` filled with `value`.
    public init(shape: [Int], repeating value: Scalar = 0) throws {
        let count = try Tensor.elementCount(of: shape)
        self.shape = shape
        self.values = Array(repeating: value, count: count)
    }

    /// A tensor of `shape` whose values come from `generator(flatIndex)`.
    public init(shape: [Int], generator: (Int) -> Scalar) throws {
        let count = try Tensor.elementCount(of: shape)
        self.shape = shape
        self.values = (0..<count).map(generator)
    }

    /// Number of elements.
    public var count: Int { values.count }

    /// Rank (number of axes).
    public var rank: Int { shape.count }

    /// The same values converted to another scalar type.
    public func converted<Other: BinaryFloatingPoint & Sendable>(to: Other.Type = Other.self) -> Tensor<Other> {
        Tensor<Other>(unchecked: shape, values.map { Other($0) })
    }

    /// Internal initialiser for shapes already validated.
    init(unchecked shape: [Int], _ values: [Scalar]) {
        self.shape = shape
        self.values = values
    }

    /// Product of `shape`, checking that every size is positive and the product fits an `Int`.
    public static func elementCount(of shape: [Int]) throws -> Int {
        switch ShapeCount(shape) {
        case .count(let count): return count
        case .nonPositive(let size):
            throw NyquistError(.invalidShape, "shape \(shape) has a size \(size); every size must be positive")
        case .overflow:
            throw NyquistError(.sizeLimit, "shape \(shape) has more elements than an Int can count")
        }
    }
}

/// The `Float` tensor used by the device path, the CLI and the file formats.
public typealias HostTensor = Tensor<Float>

/// An NCHW shape with named axes, validated once.
public struct Shape4D: Sendable, Hashable, CustomStringConvertible {
    /// Batch size.
    public let n: Int
    /// Channels.
    public let c: Int
    /// Height (rows).
    public let h: Int
    /// Width (columns).
    public let w: Int

    /// Creates a shape; every size must be positive.
    public init(n: Int, c: Int, h: Int, w: Int) throws {
        _ = try Tensor<Float>.elementCount(of: [n, c, h, w])
        self.n = n
        self.c = c
        self.h = h
        self.w = w
    }

    /// Reads an NCHW shape from a rank-4 array; `role` names the tensor in errors ("input").
    public init(_ shape: [Int], role: String = "input") throws {
        guard shape.count == 4 else {
            throw NyquistError(
                .invalidShape, "\(role) must have rank 4 (N, C, H, W) but has shape \(shape) (rank \(shape.count))")
        }
        try self.init(n: shape[0], c: shape[1], h: shape[2], w: shape[3])
    }

    /// `[n, c, h, w]`.
    public var dimensions: [Int] { [n, c, h, w] }

    /// Number of elements.
    public var count: Int { n * c * h * w }

    public var description: String { "\(n)x\(c)x\(h)x\(w)" }
}

/// Largest element count that 32-bit kernel index arithmetic can address.
public let maximumDeviceElementCount = Int(Int32.max)

/// The element count of a shape, or the rule it breaks: what every reader of a shape (tensors,
/// NPY and safetensors headers) checks before it trusts the shape, each with its own message.
enum ShapeCount: Equatable {
    /// Every size is positive and the product fits an `Int`.
    case count(Int)
    /// The first size below 1.
    case nonPositive(Int)
    /// The product does not fit an `Int`.
    case overflow

    init(_ shape: [Int]) {
        var count = 1
        for size in shape {
            guard size > 0 else {
                self = .nonPositive(size)
                return
            }
            let (product, overflow) = count.multipliedReportingOverflow(by: size)
            guard !overflow else {
                self = .overflow
                return
            }
            count = product
        }
        self = .count(count)
    }
}

extension Tensor {
    /// How far these values are from `expected`: max |self - expected| / max |expected| (the
    /// absolute error when `expected` is all zero); NaN when the two disagree on where NaNs are,
    /// infinite when the shapes differ (the error column of `nyquist demo`).
    public func maxRelativeError(from expected: Tensor) -> Double {
        guard shape == expected.shape else { return .infinity }
        var largestDifference = 0.0
        var largestMagnitude = 0.0
        for (a, e) in zip(values, expected.values) {
            let difference = abs(Double(a) - Double(e))
            if difference.isNaN && !(a.isNaN && e.isNaN) { return .nan }
            if difference > largestDifference { largestDifference = difference }
            largestMagnitude = max(largestMagnitude, abs(Double(e)))
        }
        return largestMagnitude > 0 ? largestDifference / largestMagnitude : largestDifference
    }
}
