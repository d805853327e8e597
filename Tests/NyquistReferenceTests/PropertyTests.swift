import NyquistCore
import NyquistReference
import PropertyBased
import Testing

/// Random shapes and options from PropertyBased's generators, with fixed seeds.
@Suite("Properties")
struct PropertyTests {
    /// N, C, H, W in 1...9.
    static let shapes = zip(Gen.int(in: 1...9), Gen.int(in: 1...9), Gen.int(in: 1...9), Gen.int(in: 1...9))
    /// Filter size, stride, padding mode, pad offset.
    static let blurOptions = zip(Gen.int(in: 1...7), Gen.int(in: 1...3), Gen<PaddingMode>.case, Gen.int(in: 0...2))

    /// SPEC.md section 0's output size, written out here independently of both implementations.
    static func specOutputSize(_ size: Int, padding: Int, window: Int, stride: Int) -> Int {
        (size + padding - window) / stride + 1
    }

    @Test("BlurPool and MaxBlurPool output shapes equal the configuration's, or both throw the same error")
    func blurOutputShapes() throws {
        try fixedSeedPropertyCheck(count: 300, seed: 2019, input: zip(Self.shapes, Self.blurOptions)) { index, value in
            let ((n, c, h, w), (filterSize, stride, mode, offset)) = value
            let input = try Shape4D(n: n, c: c, h: h, w: w)
            var rng = seededGenerator(UInt64(index))
            let x = try randomTensor(input.dimensions, using: &rng)
            let blur = try BlurPool2DConfiguration(
                channels: c, filterSize: filterSize, stride: stride, padding: mode, padOffset: offset)
            do {
                let expected = try blur.outputShape(for: input)
                let y = try Reference.blurPool2D(x, blur)
                #expect(y.shape == expected.dimensions, "case \(index): \(blur) on \(input)")
                let padding = filterSize - 1 + 2 * offset
                #expect(expected.h == Self.specOutputSize(h, padding: padding, window: filterSize, stride: stride))
                #expect(expected.w == Self.specOutputSize(w, padding: padding, window: filterSize, stride: stride))
                if stride == 2 && offset == 0 {
                    #expect(y.shape == [n, c, (h + 1) / 2, (w + 1) / 2], "SPEC: ceil(H/2) x ceil(W/2)")
                }
            } catch let configError as NyquistError {
                #expect(throws: configError) { try Reference.blurPool2D(x, blur) }
            }

            let maxBlur = try MaxBlurPool2DConfiguration(
                channels: c, filterSize: filterSize, stride: stride, padding: mode, padOffset: offset)
            do {
                let expected = try maxBlur.outputShape(for: input)
                #expect(try Reference.maxBlurPool2D(x, maxBlur).shape == expected.dimensions, "case \(index): \(maxBlur)")
            } catch let configError as NyquistError {
                #expect(throws: configError) { try Reference.maxBlurPool2D(x, maxBlur) }
            }
        }
    }

    @Test("MaxPool and AvgPool output shapes equal the configuration's")
    func windowOutputShapes() throws {
        let options = zip(Gen.int(in: 1...5), Gen.int(in: 1...3), Gen.int(in: 0...2))
        try fixedSeedPropertyCheck(count: 300, seed: 2020, input: zip(Self.shapes, options)) { index, value in
            let ((n, c, h, w), (kernelSize, stride, rawPadding)) = value
            let padding = min(rawPadding, kernelSize / 2)
            let input = try Shape4D(n: n, c: c, h: h, w: w)
            var rng = seededGenerator(UInt64(index))
            let x = try randomTensor(input.dimensions, using: &rng)
            let maxConfig = try MaxPool2DConfiguration(kernelSize: kernelSize, stride: stride, padding: padding)
            let avgConfig = try AvgPool2DConfiguration(kernelSize: kernelSize, stride: stride, padding: padding)
            do {
                let expected = try maxConfig.outputShape(for: input)
                #expect(try Reference.maxPool2D(x, maxConfig).shape == expected.dimensions, "case \(index)")
                #expect(expected.h == Self.specOutputSize(h, padding: 2 * padding, window: kernelSize, stride: stride))
                #expect(expected.w == Self.specOutputSize(w, padding: 2 * padding, window: kernelSize, stride: stride))
            } catch let configError as NyquistError {
                #expect(throws: configError) { try Reference.maxPool2D(x, maxConfig) }
            }
            do {
                let expected = try avgConfig.outputShape(for: input)
                #expect(try Reference.avgPool2D(x, avgConfig).shape == expected.dimensions, "case \(index)")
            } catch let configError as NyquistError {
                #expect(throws: configError) { try Reference.avgPool2D(x, avgConfig) }
            }
        }
    }

    @Test("BlurPool is linear: blur(a x + b y) = a blur(x) + b blur(y)")
    func blurLinearity() throws {
        let coefficients = zip(Gen.double(in: -3...3), Gen.double(in: -3...3))
        try fixedSeedPropertyCheck(
            count: 200, seed: 2021, input: zip(Self.shapes, Self.blurOptions, coefficients)
        ) { index, value in
            let ((n, c, h, w), (filterSize, stride, mode, offset), (a, b)) = value
            let input = try Shape4D(n: n, c: c, h: h, w: w)
            let blur = try BlurPool2DConfiguration(
                channels: c, filterSize: filterSize, stride: stride, padding: mode, padOffset: offset)
            guard (try? blur.outputShape(for: input)) != nil else { return }
            var rng = seededGenerator(UInt64(index) + 1000)
            let x = try randomTensor(input.dimensions, using: &rng)
            let y = try randomTensor(input.dimensions, using: &rng)
            let combined = try Tensor(shape: x.shape, values: zip(x.values, y.values).map { a * $0 + b * $1 })
            let left = try Reference.blurPool2D(combined, blur).values
            let right = zip(try Reference.blurPool2D(x, blur).values, try Reference.blurPool2D(y, blur).values).map {
                a * $0 + b * $1
            }
            // Rounding only: each output is a sum of at most 49 terms of size <= |a| + |b| <= 6.
            #expect(maxAbsDifference(left, right) <= 1e-13, "case \(index): \(blur) on \(input)")
        }
    }

    @Test("Without padding, max pooling is at least average pooling")
    func maxAtLeastAverage() throws {
        let options = zip(Gen.int(in: 1...5), Gen.int(in: 1...3))
        try fixedSeedPropertyCheck(count: 200, seed: 2022, input: zip(Self.shapes, options)) { index, value in
            let ((n, c, h, w), (kernelSize, stride)) = value
            guard h >= kernelSize && w >= kernelSize else { return }
            var rng = seededGenerator(UInt64(index) + 2000)
            let x = try randomTensor([n, c, h, w], using: &rng)
            let maximum = try Reference.maxPool2D(x, MaxPool2DConfiguration(kernelSize: kernelSize, stride: stride))
            let average = try Reference.avgPool2D(x, AvgPool2DConfiguration(kernelSize: kernelSize, stride: stride))
            // The mean of k*k values can round a few ulps above their common maximum when they
            // are (nearly) equal; allow that much.
            let holds = zip(maximum.values, average.values).allSatisfy { $0 >= $1 - 1e-15 * max(1, abs($0)) }
            #expect(holds, "case \(index): k=\(kernelSize) s=\(stride) on \([n, c, h, w])")
        }
    }
}
