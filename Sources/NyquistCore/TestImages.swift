import Foundation

/// Built-in, reproducible NCHW inputs for the shift-invariance measures, the demo and the
/// pictures: a zone plate (every frequency up to Nyquist, each at a known place), checkerboards
/// (one frequency), 1/f noise (natural-image-like spectrum) and uniform random values.
///
/// The zone plate and the checkerboard are the same in every batch entry and channel; the noise
/// images draw a fresh plane for each. Every size argument must be positive.
public enum TestImages {
    /// Zone plate cos(pi * r^2 / size) style chirp, values in [0, 1], frequency rising from 0 at
    /// the centre to the input Nyquist limit (0.5 cycles/pixel) at the edge midpoints.
    ///
    /// Our formula: value(i, j) = 0.5 + 0.5 * cos(pi * r^2 / size) with r^2 = (i - c)^2 + (j - c)^2
    /// and centre c = floor(size / 2) (a pixel, so the image is symmetric about it). The phase
    /// pi r^2 / size has radial derivative 2 pi r / size, so the local frequency at radius r is
    /// r / size cycles per pixel: 0 at the centre, 0.5 at r = size / 2 (row 0 or column 0 at
    /// the centre line), and above Nyquist (aliased by construction) only in the corners.
    public static func zonePlate(size: Int, batch: Int = 1, channels: Int = 1) throws -> HostTensor {
        try checkSizes(image: "zone plate", size: size, batch: batch, channels: channels)
        let centre = size / 2
        var plane = [Float](repeating: 0, count: size * size)
        for row in 0..<size {
            for column in 0..<size {
                let dy = Double(row - centre)
                let dx = Double(column - centre)
                plane[row * size + column] = Float(0.5 + 0.5 * cos(Double.pi * (dy * dy + dx * dx) / Double(size)))
            }
        }
        return try repeated(plane: plane, size: size, batch: batch, channels: channels)
    }

    /// A zone plate of any shape in [-1, 1], cos(pi * ((r - H/2)^2 + (c + channel - W/2)^2) / H):
    /// the chirp of ``zonePlate(size:batch:channels:)`` (the same centre pixel on even sizes) on
    /// any H x W, each channel shifted by one more column so that channels differ (the demo's
    /// input).
    public static func zonePlate(n: Int, c: Int, h: Int, w: Int) throws -> HostTensor {
        try HostTensor(shape: [n, c, h, w]) { index in
            let column = index % w
            let row = (index / w) % h
            let channel = (index / (w * h)) % c
            let dr = Double(row) - Double(h) / 2
            let dc = Double(column + channel) - Double(w) / 2
            return Float(cos(Double.pi * (dr * dr + dc * dc) / Double(h)))
        }
    }

    /// Checkerboard with squares of `period` pixels (period 1 = the Nyquist pattern), [0, 1].
    ///
    /// value(i, j) = 1 when floor(i / period) + floor(j / period) is even, else 0: the top-left
    /// square is white, and the pattern repeats every 2 * period pixels along each axis.
    public static func checkerboard(size: Int, period: Int, batch: Int = 1, channels: Int = 1) throws -> HostTensor {
        try checkSizes(image: "checkerboard", size: size, batch: batch, channels: channels)
        guard period > 0 else {
            throw NyquistError(.invalidConfiguration, "checkerboard period \(period) must be a positive number of pixels")
        }
        var plane = [Float](repeating: 0, count: size * size)
        for row in 0..<size {
            for column in 0..<size where (row / period + column / period) % 2 == 0 {
                plane[row * size + column] = 1
            }
        }
        return try repeated(plane: plane, size: size, batch: batch, channels: channels)
    }

    /// Largest `size` that ``pinkNoise(size:seed:batch:channels:)`` accepts: its O(size^3)
    /// inverse DFT already takes about a second per plane there.
    public static let maximumPinkNoiseSize = 1024

    /// 1/f ("pink") noise from a seeded generator (SplitMix64), normalised to [0, 1].
    ///
    /// Our construction, per (batch, channel) plane: the DFT bin at signed frequency (fy, fx)
    /// (cycles/pixel) gets amplitude 1 / sqrt(fy^2 + fx^2) and a phase uniform in [0, 2 pi)
    /// drawn from SplitMix64(seed), in plane order then row-major bin order; the DC bin is 0.
    /// The plane is the real part of the inverse DFT, scaled linearly so its minimum is 0 and
    /// its maximum 1 (a constant plane, size 1, becomes 0.5). Taking the real part keeps the
    /// expected amplitude spectrum proportional to 1/f, a slope of -1 on log-log axes.
    public static func pinkNoise(size: Int, seed: UInt64, batch: Int = 1, channels: Int = 1) throws -> HostTensor {
        try checkSizes(image: "pink noise", size: size, batch: batch, channels: channels)
        guard size <= maximumPinkNoiseSize else {
            throw NyquistError(
                .sizeLimit, "pink noise size \(size) is above \(maximumPinkNoiseSize) (its DFT is O(size^3))")
        }
        var generator = SplitMix64(seed: seed)
        var values: [Float] = []
        values.reserveCapacity(batch * channels * size * size)
        for _ in 0..<(batch * channels) {
            var real = [Double](repeating: 0, count: size * size)
            var imaginary = [Double](repeating: 0, count: size * size)
            for row in 0..<size {
                let fy = FourierTransform.frequency(bin: row, length: size)
                for column in 0..<size {
                    let fx = FourierTransform.frequency(bin: column, length: size)
                    let phase = 2 * Double.pi * Double(generator.uniform(0...1))
                    let radius = (fy * fy + fx * fx).squareRoot()
                    guard radius > 0 else { continue }
                    real[row * size + column] = cos(phase) / radius
                    imaginary[row * size + column] = sin(phase) / radius
                }
            }
            let spectrum = try ComplexPlane(height: size, width: size, real: real, imaginary: imaginary)
            let plane = FourierTransform.inverse(spectrum).real
            let low = plane.min() ?? 0
            let high = plane.max() ?? 0
            let range = high - low
            values.append(contentsOf: plane.map { range > 0 ? Float(($0 - low) / range) : 0.5 })
        }
        return try HostTensor(shape: [batch, channels, size, size], values: values)
    }

    /// Uniform random values in [-1, 1] from SplitMix64(seed).
    ///
    /// The same values as `SplitMix64(seed: seed).tensor(shape)`, drawn in row-major order.
    public static func random(shape: [Int], seed: UInt64) throws -> HostTensor {
        var generator = SplitMix64(seed: seed)
        return try generator.tensor(shape)
    }

    /// Throws a named error for a non-positive size, batch or channel count.
    private static func checkSizes(image: String, size: Int, batch: Int, channels: Int) throws {
        for (name, value) in [("size", size), ("batch", batch), ("channels", channels)] where value <= 0 {
            throw NyquistError(.invalidConfiguration, "\(image) \(name) \(value) must be positive")
        }
        _ = try HostTensor.elementCount(of: [batch, channels, size, size])
    }

    /// `plane` (size x size) copied into every (batch, channel) position.
    private static func repeated(plane: [Float], size: Int, batch: Int, channels: Int) throws -> HostTensor {
        var values: [Float] = []
        values.reserveCapacity(batch * channels * plane.count)
        for _ in 0..<(batch * channels) { values.append(contentsOf: plane) }
        return try HostTensor(shape: [batch, channels, size, size], values: values)
    }
}
