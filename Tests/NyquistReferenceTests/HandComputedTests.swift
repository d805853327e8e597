import NyquistCore
import NyquistReference
import Testing

/// Small cases whose expected values are worked out by hand from SPEC.md, so they check the
/// definition itself rather than agreement with another implementation.
@Suite("Hand-computed cases")
struct HandComputedTests {
    /// A 1x1xHxW Double tensor from rows.
    func map(_ rows: [[Double]]) throws -> Tensor<Double> {
        try Tensor(shape: [1, 1, rows.count, rows[0].count], values: rows.flatMap { $0 })
    }

    @Test("BlurPool k=3 reflect on a 4x4 ramp")
    func blurRampReflect() throws {
        // x[i][j] = 4i + j. k = 3: h = [1, 2, 1] / 4, pads 1 on every side, stride 2, so the
        // windows are centred on input rows/columns 0 and 2.
        let x = try map((0..<4).map { i in (0..<4).map { j in Double(4 * i + j) } })
        let config = try BlurPool2DConfiguration(channels: 1, filterSize: 3, stride: 2, padding: .reflect)
        // The filter is separable with taps summing to 1 and x is affine in (i, j), so
        // y = 4 * (filtered row index) + (filtered column index).
        // Centre 0 reads indices -1, 0, 1; reflect maps -1 -> 1: (1*1 + 2*0 + 1*1) / 4 = 0.5.
        // Centre 2 reads indices 1, 2, 3 (no padding): (1 + 4 + 3) / 4 = 2.
        let filtered = [0.5, 2.0]
        let expected = try map(filtered.map { r in filtered.map { c in 4 * r + c } })
        #expect(expected.values == [2.5, 4, 8.5, 10])
        #expect(try Reference.blurPool2D(x, config) == expected)
    }

    @Test("BlurPool k=2 zero padding, stride 1: asymmetric pad at the bottom and right")
    func blurAsymmetricZero() throws {
        // k = 2: h = [1, 1] / 2, filter 1/4 everywhere, pads top/left 0 and bottom/right 1.
        // Padded map [[1, 2, 0], [3, 4, 0], [0, 0, 0]].
        let x = try map([[1, 2], [3, 4]])
        let config = try BlurPool2DConfiguration(channels: 1, filterSize: 2, stride: 1, padding: .zero)
        let expected = try map([
            [(1 + 2 + 3 + 4) / 4, (2 + 0 + 4 + 0) / 4],
            [(3 + 4 + 0 + 0) / 4, (4 + 0 + 0 + 0) / 4],
        ])
        #expect(try Reference.blurPool2D(x, config) == expected)
    }

    @Test("BlurPool k=3 stride 1 on one row: circular and replicate borders")
    func blurRowBorders() throws {
        // H = 1, so the vertical pass sees the same row three times (weights sum to 1) and only
        // the horizontal pass [1, 2, 1] / 4 matters.
        let x = try map([[1, 2, 3, 4]])
        let circular = try BlurPool2DConfiguration(channels: 1, filterSize: 3, stride: 1, padding: .circular)
        // Wrapped row: 4 | 1 2 3 4 | 1.
        let wrapped: [Double] = [(4 + 2 + 2) / 4, (1 + 4 + 3) / 4, (2 + 6 + 4) / 4, (3 + 8 + 1) / 4]
        #expect(try Reference.blurPool2D(x, circular) == map([wrapped]))
        let replicate = try BlurPool2DConfiguration(channels: 1, filterSize: 3, stride: 1, padding: .replicate)
        // Clamped row: 1 | 1 2 3 4 | 4.
        let clamped: [Double] = [(1 + 2 + 2) / 4, (1 + 4 + 3) / 4, (2 + 6 + 4) / 4, (3 + 8 + 4) / 4]
        #expect(try Reference.blurPool2D(x, replicate) == map([clamped]))
    }

    @Test("BlurPool k=1 is plain subsampling x[::s, ::s]", arguments: 1...3, PaddingMode.allCases)
    func blurSizeOneSubsamples(stride: Int, mode: PaddingMode) throws {
        var rng = seededGenerator(11)
        let x = try randomTensor([2, 3, 7, 8], using: &rng)
        let config = try BlurPool2DConfiguration(channels: 3, filterSize: 1, stride: stride, padding: mode)
        let y = try Reference.blurPool2D(x, config)
        var expected: [Double] = []
        for plane in 0..<6 {
            for i in Swift.stride(from: 0, to: 7, by: stride) {
                for j in Swift.stride(from: 0, to: 8, by: stride) { expected.append(x.values[plane * 56 + i * 8 + j]) }
            }
        }
        #expect(y.values == expected)
        #expect(y.shape == [2, 3, (7 + stride - 1) / stride, (8 + stride - 1) / stride])
    }

    @Test("BlurPool k=2 stride 2 on even sizes is 2x2 average pooling", arguments: PaddingMode.allCases)
    func blurSizeTwoIsAveragePool(mode: PaddingMode) throws {
        // The bottom/right pad row of k = 2 is never read when H and W are even.
        var rng = seededGenerator(12)
        let x = try randomTensor([2, 2, 6, 10], using: &rng)
        let blur = try Reference.blurPool2D(
            x, BlurPool2DConfiguration(channels: 2, filterSize: 2, stride: 2, padding: mode))
        let average = try Reference.avgPool2D(x, AvgPool2DConfiguration(kernelSize: 2, stride: 2))
        #expect(blur.shape == average.shape)
        #expect(maxAbsDifference(blur.values, average.values) <= 1e-15)
    }

    @Test("Blur of a constant map is that constant, except with zero padding", arguments: 1...7, PaddingMode.allCases)
    func blurConstant(filterSize: Int, mode: PaddingMode) throws {
        let x = try Tensor<Double>(shape: [1, 2, 21, 21], repeating: 3.25)
        let config = try BlurPool2DConfiguration(channels: 2, filterSize: filterSize, stride: 2, padding: mode)
        let y = try Reference.blurPool2D(x, config)
        if mode == .zero && filterSize > 1 {
            // The zeros pulled in at the border darken it (the last window of an odd-sized
            // axis always reads bottom/right padding); the centre window sees no padding.
            #expect(y.values.contains { $0 < 3.25 - 0.1 })
            let (height, width) = (y.shape[2], y.shape[3])
            #expect(abs(y.values[(height / 2) * width + width / 2] - 3.25) <= 1e-15)
        } else {
            #expect(y.values.allSatisfy { abs($0 - 3.25) <= 1e-15 })
        }
    }

    @Test("AvgPool on a 3x3 map, with and without padding")
    func averagePoolSmall() throws {
        let x = try map([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
        // k = 2, s = 1: the four 2x2 blocks.
        #expect(
            try Reference.avgPool2D(x, AvgPool2DConfiguration(kernelSize: 2, stride: 1))
                == map([[(1 + 2 + 4 + 5) / 4, (2 + 3 + 5 + 6) / 4], [(4 + 5 + 7 + 8) / 4, (5 + 6 + 8 + 9) / 4]]))
        // k = 3, s = 2, p = 1: windows centred on the corners; each holds 4 pixels and 5 padded
        // zeros, and the divisor stays 9 (count_include_pad).
        let y = try Reference.avgPool2D(x, AvgPool2DConfiguration(kernelSize: 3, stride: 2, padding: 1))
        let expected: [Double] = [(1 + 2 + 4 + 5) / 9, (2 + 3 + 5 + 6) / 9, (4 + 5 + 7 + 8) / 9, (5 + 6 + 8 + 9) / 9]
        #expect(y.shape == [1, 1, 2, 2])
        #expect(maxAbsDifference(y.values, expected) <= 1e-15)
    }

    @Test("MaxPool on small maps; the padding is -inf, not 0")
    func maxPoolSmall() throws {
        let x = try map([[1, 5, 2, 0], [3, 4, 8, 7], [9, 0, 1, 1], [2, 6, 1, 3]])
        #expect(try Reference.maxPool2D(x, MaxPool2DConfiguration(kernelSize: 2)) == map([[5, 8], [9, 3]]))
        // All values negative: zero padding would give 0 in every window.
        let negative = try map([[-1, -2, -3], [-4, -5, -6], [-7, -8, -9]])
        let y = try Reference.maxPool2D(negative, MaxPool2DConfiguration(kernelSize: 3, stride: 2, padding: 1))
        #expect(y == (try map([[-1, -2], [-4, -5]])))
    }

    @Test("MaxPool: NaN in a window gives NaN there and nowhere else")
    func maxPoolNaN() throws {
        let x = try map([[1, .nan, 2, 3], [100, 4, 5, 6], [.infinity, 0, -.infinity, 1], [2, 3, 4, 5]])
        let y = try Reference.maxPool2D(x, MaxPool2DConfiguration(kernelSize: 2))
        #expect(y.values[0].isNaN)  // the NaN wins over 100, which comes after it
        #expect(y.values[1] == 6)
        #expect(y.values[2] == .infinity)
        #expect(y.values[3] == 5)
        // Overlapping windows: every window containing the NaN is NaN.
        let overlapping = try Reference.maxPool2D(x, MaxPool2DConfiguration(kernelSize: 2, stride: 1))
        #expect(overlapping.values.map(\.isNaN) == [true, true, false, false, false, false, false, false, false])
        // Float behaves the same.
        let single: Tensor<Float> = x.converted()
        #expect(try Reference.maxPool2D(single, MaxPool2DConfiguration(kernelSize: 2)).values[0].isNaN)
    }

    @Test("MaxPool backward: ties go to the first maximum, NaN first, overlaps add")
    func maxPoolRouting() throws {
        let config = try MaxPool2DConfiguration(kernelSize: 2)
        // Window 0: all equal -> top-left. Window 1: tie between (0,3) and (1,2) -> (0,3).
        // Window 2: tie on the second row only -> (3,0). Window 3: NaN after a larger value -> NaN.
        let x = try map([[7, 7, 1, 9], [7, 7, 9, 2], [0, 1, 50, 3], [4, 4, .nan, .nan]])
        let g = try map([[1, 2], [3, 4]])
        let grad = try Reference.maxPool2DBackward(gradOutput: g, saved: .init(input: x), config)
        #expect(grad == (try map([[1, 0, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0], [3, 0, 4, 0]])))

        // k = 3, s = 1 on 4x4: all four windows contain (1, 1), so its gradient is the sum.
        let peak = try map([[0, 1, 2, 3], [4, 99, 5, 6], [7, 8, 9, 10], [11, 12, 13, 14]])
        let overlapping = try MaxPool2DConfiguration(kernelSize: 3, stride: 1)
        let gradOverlap = try Reference.maxPool2DBackward(
            gradOutput: map([[1, 2], [3, 4]]), saved: .init(input: peak), overlapping)
        #expect(gradOverlap == (try map([[0, 0, 0, 0], [0, 1 + 2 + 3 + 4, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])))

        // Two NaNs in one window: the first one gets the gradient.
        let twoNaNs = try map([[1, .nan], [.nan, 5]])
        let gradNaN = try Reference.maxPool2DBackward(gradOutput: map([[3]]), saved: .init(input: twoNaNs), config)
        #expect(gradNaN == (try map([[0, 3], [0, 0]])))
    }

    @Test("MaxPool backward: a window of -inf next to the padding routes to its first input pixel")
    func maxPoolMinusInfinity() throws {
        let x = try map([[-.infinity, -.infinity], [-.infinity, -.infinity]])
        let config = try MaxPool2DConfiguration(kernelSize: 2, stride: 1, padding: 1)
        let y = try Reference.maxPool2D(x, config)
        #expect(y.values.allSatisfy { $0 == -.infinity })
        // Window (0,0) covers padded rows -1...0, cols -1...0: its only pixel is (0,0), and so on.
        let grad = try Reference.maxPool2DBackward(
            gradOutput: map([[1, 2, 4], [8, 16, 32], [64, 128, 256]]), saved: .init(input: x), config)
        // (0,0) gets windows (0,0), (0,1), (1,0), (1,1); (0,1) gets (0,2), (1,2); (1,0) gets
        // (2,0), (2,1); (1,1) gets (2,2).
        #expect(grad == (try map([[1 + 2 + 8 + 16, 4 + 32], [64 + 128, 256]])))
    }

    @Test("MaxBlurPool is BlurPool of the 2x2 stride-1 max map, forward and backward")
    func maxBlurComposition() throws {
        var rng = seededGenerator(13)
        let options: [(Int, Int, PaddingMode, Int)] = [
            (4, 2, .reflect, 0), (3, 1, .zero, 1), (5, 3, .circular, 0), (2, 2, .replicate, 1), (1, 2, .reflect, 0),
        ]
        for (filterSize, stride, mode, offset) in options {
            let x = try randomTensor([2, 3, 9, 8], using: &rng)
            let config = try MaxBlurPool2DConfiguration(
                channels: 3, filterSize: filterSize, stride: stride, padding: mode, padOffset: offset)
            let maxConfig = try MaxPool2DConfiguration(kernelSize: 2, stride: 1, padding: 0)
            let maxMap = try Reference.maxPool2D(x, maxConfig)
            #expect(maxMap.shape == [2, 3, 8, 7])
            let composed = try Reference.blurPool2D(maxMap, config.blur)
            let fused = try Reference.maxBlurPool2D(x, config)
            #expect(fused == composed, "\(config)")

            let g = try randomTensor(fused.shape, using: &rng)
            let gradMap = try Reference.blurPool2DBackward(gradOutput: g, saved: .init(input: maxMap), config.blur)
            let gradComposed = try Reference.maxPool2DBackward(gradOutput: gradMap, saved: .init(input: x), maxConfig)
            #expect(try Reference.maxBlurPool2DBackward(gradOutput: g, saved: .init(input: x), config) == gradComposed)
        }
    }

    @Test("MaxBlurPool: a NaN reaches exactly the outputs whose blur window reads its max-map cells")
    func maxBlurNaN() throws {
        // k = 1, stride 1: the output is the max map itself, so the NaN at (1, 1) makes the four
        // 2x2 windows that contain it NaN and nothing else; its gradient goes to the NaN pixel.
        var x = try Tensor<Double>(shape: [1, 1, 4, 4], generator: { Double($0) })
        x.values[5] = .nan
        let config = try MaxBlurPool2DConfiguration(channels: 1, filterSize: 1, stride: 1)
        let y = try Reference.maxBlurPool2D(x, config)
        #expect(y.values.map(\.isNaN) == [true, true, false, true, true, false, false, false, false])
        let g = try Tensor<Double>(shape: [1, 1, 3, 3], repeating: 1)
        let grad = try Reference.maxBlurPool2DBackward(gradOutput: g, saved: .init(input: x), config)
        // The other five windows route to their bottom-right pixel (the ramp's maximum).
        #expect(grad == (try map([[0, 0, 0, 0], [0, 4, 0, 1], [0, 0, 0, 1], [0, 1, 1, 1]])))
    }

    @Test("Training forward returns the inference output and saves the input")
    func trainingForward() throws {
        var rng = seededGenerator(14)
        let x = try randomTensor([1, 2, 6, 7], using: &rng)
        let blur = try BlurPool2DConfiguration(channels: 2)
        let (y, saved) = try Reference.blurPool2DTraining(x, blur)
        #expect(y == (try Reference.blurPool2D(x, blur)))
        #expect(saved.input == x)
        let maxBlur = try MaxBlurPool2DConfiguration(channels: 2)
        #expect(try Reference.maxBlurPool2DTraining(x, maxBlur).output == Reference.maxBlurPool2D(x, maxBlur))
        let maxPool = try MaxPool2DConfiguration(kernelSize: 3, stride: 2, padding: 1)
        #expect(try Reference.maxPool2DTraining(x, maxPool).output == Reference.maxPool2D(x, maxPool))
        let avgPool = try AvgPool2DConfiguration(kernelSize: 3, stride: 2, padding: 1)
        #expect(try Reference.avgPool2DTraining(x, avgPool).saved.input == x)
    }

    @Test("Float tensors are computed in Double and rounded once")
    func floatRoundsOnce() throws {
        // Rounding intermediate sums to Float would make the result differ from the Double
        // computation rounded once, in the last bit, for some of these values.
        var rng = seededGenerator(15)
        let xDouble = try randomTensor([1, 1, 9, 9], using: &rng)
        let xFloat: Tensor<Float> = xDouble.converted()
        let config = try BlurPool2DConfiguration(channels: 1, filterSize: 7, stride: 2, padding: .reflect)
        let viaDouble = try Reference.blurPool2D(xFloat.converted(to: Double.self), config)
        #expect(try Reference.blurPool2D(xFloat, config) == viaDouble.converted(to: Float.self))
    }
}
