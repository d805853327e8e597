import Foundation

/// A complex 2-D array of `height` x `width` values in row-major order, split into real and
/// imaginary parts (the layout the separable transform below walks most simply).
public struct ComplexPlane: Sendable, Equatable {
    /// Rows.
    public let height: Int
    /// Columns.
    public let width: Int
    /// Real parts, `height * width` of them, row-major.
    public var real: [Double]
    /// Imaginary parts, `height * width` of them, row-major.
    public var imaginary: [Double]

    /// A plane from its parts; throws if either part does not hold `height * width` values.
    public init(height: Int, width: Int, real: [Double], imaginary: [Double]) throws {
        let count = try Tensor<Double>.elementCount(of: [height, width])
        guard real.count == count, imaginary.count == count else {
            throw NyquistError(
                .invalidShape,
                "a \(height)x\(width) complex plane needs \(count) real and imaginary values, "
                    + "got \(real.count) and \(imaginary.count)")
        }
        self.height = height
        self.width = width
        self.real = real
        self.imaginary = imaginary
    }

    /// A plane holding the real values `real` (imaginary parts zero).
    public init(height: Int, width: Int, real: [Double]) throws {
        try self.init(height: height, width: width, real: real, imaginary: Array(repeating: 0, count: real.count))
    }

    /// |value|^2 at each position.
    public var squaredMagnitudes: [Double] {
        zip(real, imaginary).map { $0 * $0 + $1 * $1 }
    }
}

/// The discrete Fourier transform in two dimensions, X[u, v] = sum x[i, j] e^(-2 pi i (u i / H + v j / W)),
/// computed as 1-D transforms of every row then every column.
///
/// Plain O(n^2) per 1-D transform with a table of twiddle factors: the shift-invariance
/// measures and the pink-noise generator use planes of a few hundred pixels at most, where this
/// takes milliseconds, and it works for every size (a radix-2 FFT would need powers of two).
/// Accumulates in `Double`. The inverse carries the 1 / (H W) factor, so inverse(forward(x)) = x.
public enum FourierTransform {
    /// The forward 2-D transform of `plane`.
    public static func forward(_ plane: ComplexPlane) -> ComplexPlane {
        transform(plane, sign: -1)
    }

    /// The inverse 2-D transform of `plane`, including the 1 / (height * width) normalisation.
    public static func inverse(_ plane: ComplexPlane) -> ComplexPlane {
        var result = transform(plane, sign: 1)
        let scale = 1 / Double(plane.height * plane.width)
        for index in result.real.indices {
            result.real[index] *= scale
            result.imaginary[index] *= scale
        }
        return result
    }

    /// The signed frequency, in cycles per sample, of DFT bin `index` of a length-`length`
    /// transform: bins above length / 2 are the negative frequencies.
    public static func frequency(bin index: Int, length: Int) -> Double {
        let signed = index <= length / 2 ? index : index - length
        return Double(signed) / Double(length)
    }

    /// Unnormalised transform with exponent sign `sign` (-1 forward, +1 inverse).
    private static func transform(_ plane: ComplexPlane, sign: Double) -> ComplexPlane {
        var result = plane
        let rowTable = Twiddles(length: plane.width, sign: sign)
        var lineReal = [Double](repeating: 0, count: plane.width)
        var lineImaginary = [Double](repeating: 0, count: plane.width)
        for row in 0..<plane.height {
            let base = row * plane.width
            for column in 0..<plane.width {
                lineReal[column] = result.real[base + column]
                lineImaginary[column] = result.imaginary[base + column]
            }
            let (outReal, outImaginary) = rowTable.apply(real: lineReal, imaginary: lineImaginary)
            for column in 0..<plane.width {
                result.real[base + column] = outReal[column]
                result.imaginary[base + column] = outImaginary[column]
            }
        }
        let columnTable = Twiddles(length: plane.height, sign: sign)
        lineReal = [Double](repeating: 0, count: plane.height)
        lineImaginary = [Double](repeating: 0, count: plane.height)
        for column in 0..<plane.width {
            for row in 0..<plane.height {
                lineReal[row] = result.real[row * plane.width + column]
                lineImaginary[row] = result.imaginary[row * plane.width + column]
            }
            let (outReal, outImaginary) = columnTable.apply(real: lineReal, imaginary: lineImaginary)
            for row in 0..<plane.height {
                result.real[row * plane.width + column] = outReal[row]
                result.imaginary[row * plane.width + column] = outImaginary[row]
            }
        }
        return result
    }

    /// cos and sin of 2 pi m / n for every m < n: exponent products are reduced mod n, so one
    /// table serves every (frequency, sample) pair without recomputing a transcendental.
    private struct Twiddles {
        let length: Int
        let cosines: [Double]
        let sines: [Double]

        init(length: Int, sign: Double) {
            self.length = length
            let step = 2 * Double.pi / Double(length)
            cosines = (0..<length).map { cos(step * Double($0)) }
            sines = (0..<length).map { sign * sin(step * Double($0)) }
        }

        func apply(real: [Double], imaginary: [Double]) -> ([Double], [Double]) {
            var outReal = [Double](repeating: 0, count: length)
            var outImaginary = [Double](repeating: 0, count: length)
            for frequency in 0..<length {
                var sumReal = 0.0
                var sumImaginary = 0.0
                var phase = 0
                for sample in 0..<length {
                    let cosine = cosines[phase]
                    let sine = sines[phase]
                    sumReal += real[sample] * cosine - imaginary[sample] * sine
                    sumImaginary += real[sample] * sine + imaginary[sample] * cosine
                    phase += frequency
                    if phase >= length { phase -= length }
                }
                outReal[frequency] = sumReal
                outImaginary[frequency] = sumImaginary
            }
            return (outReal, outImaginary)
        }
    }
}
