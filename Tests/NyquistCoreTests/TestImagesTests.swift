import Foundation
import NyquistCore
import Testing

@Suite("Fourier transform")
struct FourierTransformTests {
    @Test func twoByTwoByHand() throws {
        // X[u, v] = sum x[i, j] (-1)^(u i + v j) for a 2x2 plane.
        let plane = try ComplexPlane(height: 2, width: 2, real: [1, 2, 3, 4])
        let spectrum = FourierTransform.forward(plane)
        let expected: [Double] = [10, -2, -4, 0]
        for index in 0..<4 {
            #expect(abs(spectrum.real[index] - expected[index]) < 1e-12)
            #expect(abs(spectrum.imaginary[index]) < 1e-12)
        }
    }

    @Test func threePointByHand() throws {
        // 1 + 2 w + 3 w^2 with w = e^(-2 pi i / 3) = -1/2 - i sqrt(3)/2 gives -3/2 + i sqrt(3)/2.
        let spectrum = FourierTransform.forward(try ComplexPlane(height: 1, width: 3, real: [1, 2, 3]))
        let root3 = 3.0.squareRoot()
        let expectedReal: [Double] = [6, -1.5, -1.5]
        let expectedImaginary: [Double] = [0, root3 / 2, -root3 / 2]
        for index in 0..<3 {
            #expect(abs(spectrum.real[index] - expectedReal[index]) < 1e-12)
            #expect(abs(spectrum.imaginary[index] - expectedImaginary[index]) < 1e-12)
        }
    }

    @Test func shiftedImpulseAlongColumns() throws {
        // A unit impulse at row 1 of a 4x1 plane: X[u] = e^(-2 pi i u / 4) = 1, -i, -1, i.
        let spectrum = FourierTransform.forward(try ComplexPlane(height: 4, width: 1, real: [0, 1, 0, 0]))
        let expectedReal: [Double] = [1, 0, -1, 0]
        let expectedImaginary: [Double] = [0, -1, 0, 1]
        for index in 0..<4 {
            #expect(abs(spectrum.real[index] - expectedReal[index]) < 1e-12)
            #expect(abs(spectrum.imaginary[index] - expectedImaginary[index]) < 1e-12)
        }
    }

    @Test func inverseUndoesForward() throws {
        var generator = SplitMix64(seed: 5)
        let real = (0..<(6 * 10)).map { _ in Double(generator.uniform()) }
        let imaginary = (0..<(6 * 10)).map { _ in Double(generator.uniform()) }
        let plane = try ComplexPlane(height: 6, width: 10, real: real, imaginary: imaginary)
        let back = FourierTransform.inverse(FourierTransform.forward(plane))
        for index in real.indices {
            #expect(abs(back.real[index] - real[index]) < 1e-12)
            #expect(abs(back.imaginary[index] - imaginary[index]) < 1e-12)
        }
    }

    @Test func signedFrequencies() {
        #expect((0..<4).map { FourierTransform.frequency(bin: $0, length: 4) } == [0, 0.25, 0.5, -0.25])
        #expect((0..<5).map { FourierTransform.frequency(bin: $0, length: 5) } == [0, 0.2, 0.4, -0.4, -0.2])
    }

    @Test func mismatchedPartsAreRefused() {
        expectError(.invalidShape, "2x2") { try ComplexPlane(height: 2, width: 2, real: [1, 2, 3]) }
    }
}

@Suite("Test images")
struct TestImagesTests {
    /// Row `row` of plane 0 of `image`.
    static func row(_ image: HostTensor, _ row: Int) -> [Float] {
        let width = image.shape[3]
        return Array(image.values[(row * width)..<((row + 1) * width)])
    }

    /// Number of sign changes of value - 0.5 between consecutive samples of `samples`.
    static func halfCrossings(_ samples: ArraySlice<Float>) -> Int {
        zip(samples.dropLast(), samples.dropFirst()).filter { ($0 - 0.5) * ($1 - 0.5) < 0 }.count
    }

    @Test func zonePlateLocalFrequencyIsRadiusOverSize() throws {
        let size = 256
        let image = try TestImages.zonePlate(size: size)
        let centreRow = Self.row(image, size / 2)
        // Around radius 64 the local frequency should be 64 / 256 = 0.25 cycles/pixel: over the
        // 32 pixels from radius 48 to 80 that is 8 cycles, 16 crossings of the mid level.
        let crossings = Self.halfCrossings(centreRow[(size / 2 + 48)...(size / 2 + 80)])
        #expect((15...17).contains(crossings), "crossings \(crossings)")
        // Near the centre the frequency is close to 0: no crossing within radius 8 (phase pi 64 / 256 < pi / 2).
        #expect(Self.halfCrossings(centreRow[(size / 2)...(size / 2 + 8)]) == 0)
        // At the edge midpoint (radius size / 2) it reaches Nyquist: consecutive samples alternate.
        let edge = centreRow[0..<5]
        #expect(zip(edge.dropLast(), edge.dropFirst()).allSatisfy { ($0 - 0.5) * ($1 - 0.5) < 0 }, "\(Array(edge))")
        #expect(image.values[(size / 2) * size + size / 2] == 1)
        #expect(image.values.allSatisfy { (0...1).contains($0) })
    }

    @Test func zonePlateIsSymmetricAndRepeatedOverPlanes() throws {
        let size = 64
        let image = try TestImages.zonePlate(size: size, batch: 2, channels: 3)
        #expect(image.shape == [2, 3, size, size])
        let plane = Array(image.values[0..<(size * size)])
        for index in 1..<6 {
            #expect(Array(image.values[(index * size * size)..<((index + 1) * size * size)]) == plane)
        }
        // Mirror about the centre pixel (size / 2): offsets +d and -d have the same radius.
        let centre = size / 2
        for d in 1..<centre {
            #expect(plane[centre * size + centre + d] == plane[centre * size + centre - d])
            #expect(plane[(centre + d) * size + centre] == plane[(centre - d) * size + centre])
        }
    }

    @Test(arguments: [1, 2, 3, 5])
    func checkerboardPeriod(period: Int) throws {
        let size = 30
        let image = try TestImages.checkerboard(size: size, period: period)
        let plane = image.values
        #expect(plane[0] == 1)
        for row in 0..<size {
            for column in 0..<size {
                let value = plane[row * size + column]
                #expect(value == 0 || value == 1)
                if column + period < size { #expect(plane[row * size + column + period] == 1 - value) }
                if row + period < size { #expect(plane[(row + period) * size + column] == 1 - value) }
                // Constant inside each period x period square.
                if column % period != 0 { #expect(plane[row * size + column - 1] == value) }
                if row % period != 0 { #expect(plane[(row - 1) * size + column] == value) }
            }
        }
    }

    @Test func checkerboardPeriodOneIsTheNyquistPattern() throws {
        let image = try TestImages.checkerboard(size: 4, period: 1)
        #expect(image.values == [1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1])
    }

    /// Least-squares slope of log(mean amplitude) against log(radial frequency) over the
    /// integer radial bins 2...size*0.45, averaged over every plane of `image`.
    static func spectralSlope(_ image: HostTensor) throws -> Double {
        let size = image.shape[3]
        let planes = image.count / (size * size)
        let maximumBin = Int(Double(size) * 0.45)
        var sums = [Double](repeating: 0, count: maximumBin + 1)
        var counts = [Int](repeating: 0, count: maximumBin + 1)
        for plane in 0..<planes {
            let values = image.values[(plane * size * size)..<((plane + 1) * size * size)].map(Double.init)
            let spectrum = FourierTransform.forward(try ComplexPlane(height: size, width: size, real: values))
            for row in 0..<size {
                for column in 0..<size {
                    let fy = FourierTransform.frequency(bin: row, length: size) * Double(size)
                    let fx = FourierTransform.frequency(bin: column, length: size) * Double(size)
                    let bin = Int((fy * fy + fx * fx).squareRoot().rounded())
                    guard bin >= 2, bin <= maximumBin else { continue }
                    let index = row * size + column
                    sums[bin] += (spectrum.real[index] * spectrum.real[index]
                        + spectrum.imaginary[index] * spectrum.imaginary[index]).squareRoot()
                    counts[bin] += 1
                }
            }
        }
        let points = (2...maximumBin).map { (log(Double($0)), log(sums[$0] / Double(counts[$0]))) }
        let meanX = points.map(\.0).reduce(0, +) / Double(points.count)
        let meanY = points.map(\.1).reduce(0, +) / Double(points.count)
        let covariance = points.map { ($0.0 - meanX) * ($0.1 - meanY) }.reduce(0, +)
        let variance = points.map { ($0.0 - meanX) * ($0.0 - meanX) }.reduce(0, +)
        return covariance / variance
    }

    @Test func pinkNoiseHasAmplitudeSlopeMinusOne() throws {
        let image = try TestImages.pinkNoise(size: 64, seed: 11, channels: 3)
        let slope = try Self.spectralSlope(image)
        #expect(abs(slope + 1) < 0.15, "slope \(slope)")
        // The control: uniform white noise measured the same way is flat.
        let white = try TestImages.random(shape: [1, 3, 64, 64], seed: 11)
        let whiteSlope = try Self.spectralSlope(white)
        #expect(abs(whiteSlope) < 0.15, "white slope \(whiteSlope)")
    }

    @Test func pinkNoiseIsSeededAndNormalised() throws {
        let first = try TestImages.pinkNoise(size: 24, seed: 3, batch: 2, channels: 2)
        let again = try TestImages.pinkNoise(size: 24, seed: 3, batch: 2, channels: 2)
        let other = try TestImages.pinkNoise(size: 24, seed: 4, batch: 2, channels: 2)
        #expect(first.shape == [2, 2, 24, 24])
        #expect(first == again)
        #expect(first != other)
        for plane in 0..<4 {
            let values = first.values[(plane * 576)..<((plane + 1) * 576)]
            #expect(values.min() == 0)
            #expect(values.max() == 1)
        }
        // Each plane is its own draw.
        #expect(first.values[0..<576] != first.values[576..<1152])
    }

    @Test func randomMatchesSplitMix64() throws {
        let image = try TestImages.random(shape: [2, 3, 5, 7], seed: 99)
        var generator = SplitMix64(seed: 99)
        #expect(image == (try generator.tensor([2, 3, 5, 7])))
        #expect(image.values.allSatisfy { (-1...1).contains($0) })
    }

    @Test func badSizesAreRefused() {
        expectError(.invalidConfiguration, "zone plate", "size") { try TestImages.zonePlate(size: 0) }
        expectError(.invalidConfiguration, "channels") { try TestImages.zonePlate(size: 8, channels: -1) }
        expectError(.invalidConfiguration, "period") { try TestImages.checkerboard(size: 8, period: 0) }
        expectError(.invalidConfiguration, "batch") { try TestImages.pinkNoise(size: 8, seed: 1, batch: 0) }
        expectError(.sizeLimit, "pink noise") { try TestImages.pinkNoise(size: 5000, seed: 1) }
        expectError(.invalidShape) { try TestImages.random(shape: [2, 0], seed: 1) }
    }
}
