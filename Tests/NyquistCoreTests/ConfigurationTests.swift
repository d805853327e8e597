import NyquistCore
import Testing

/// 2 x 1 x 65536 x 32768 = 2^32 elements: over the 2^31 - 1 device limit, but only a shape, so
/// nothing is allocated.
let oversized = try? Shape4D(n: 2, c: 1, h: 65536, w: 32768)

@Suite("Operator configurations")
struct ConfigurationTests {
    // MARK: Shapes

    @Test func shape4D() throws {
        let shape = try Shape4D([2, 3, 4, 5])
        #expect(shape.dimensions == [2, 3, 4, 5])
        #expect(shape.count == 120)
        #expect(shape.description == "2x3x4x5")
        expectError(.invalidShape, "rank 4", "rank 3") { try Shape4D([2, 3, 4], role: "input") }
        expectError(.invalidShape, "size 0") { try Shape4D(n: 1, c: 0, h: 4, w: 4) }
        expectError(.sizeLimit) { try Shape4D(n: Int.max, c: 2, h: 1, w: 1) }
        #expect(oversized?.count == 1 << 32)
    }

    @Test func tensorChecksItsShape() throws {
        expectError(.invalidShape, "6 values", "5") { try HostTensor(shape: [2, 3], values: [1, 2, 3, 4, 5]) }
        expectError(.invalidShape) { try HostTensor(shape: [2, -1], repeating: 0) }
        #expect(try HostTensor(shape: [2, 2]) { Float($0) }.values == [0, 1, 2, 3])
    }

    // MARK: MaxPool / AvgPool

    @Test func maxPool() throws {
        let pool = try MaxPool2DConfiguration()
        #expect(pool.kernelSize == 2 && pool.stride == 2 && pool.padding == 0)
        #expect(try pool.outputShape(for: Shape4D(n: 1, c: 3, h: 5, w: 4)) == Shape4D(n: 1, c: 3, h: 2, w: 2))
        let resnet = try MaxPool2DConfiguration(kernelSize: 3, stride: 2, padding: 1)
        #expect(try resnet.outputShape(for: Shape4D(n: 8, c: 64, h: 112, w: 112)) == Shape4D(n: 8, c: 64, h: 56, w: 56))
        #expect(try MaxPool2DConfiguration(kernelSize: 3).stride == 3)
        expectError(.invalidConfiguration, "kernel size", "0") { try MaxPool2DConfiguration(kernelSize: 0) }
        expectError(.invalidConfiguration, "stride", "0") { try MaxPool2DConfiguration(kernelSize: 2, stride: 0) }
        expectError(.invalidConfiguration, "padding 2", "0...1") { try MaxPool2DConfiguration(kernelSize: 3, padding: 2) }
        expectError(.invalidConfiguration, "padding -1") { try MaxPool2DConfiguration(kernelSize: 3, padding: -1) }
        expectError(.invalidShape, "max-pool", "H = 2") {
            try MaxPool2DConfiguration(kernelSize: 3, stride: 1).outputShape(for: Shape4D(n: 1, c: 1, h: 2, w: 9))
        }
        let big = try #require(oversized)
        expectError(.sizeLimit, "max-pool", "input", "2^31") { try MaxPool2DConfiguration().outputShape(for: big) }
    }

    @Test func avgPool() throws {
        let pool = try AvgPool2DConfiguration(kernelSize: 2, stride: 1)
        #expect(try pool.outputShape(for: Shape4D(n: 2, c: 1, h: 3, w: 7)) == Shape4D(n: 2, c: 1, h: 2, w: 6))
        #expect(try AvgPool2DConfiguration(kernelSize: 3, padding: 1).outputShape(for: Shape4D(n: 1, c: 1, h: 7, w: 7))
            == Shape4D(n: 1, c: 1, h: 3, w: 3))
        expectError(.invalidConfiguration) { try AvgPool2DConfiguration(kernelSize: -2) }
        expectError(.invalidConfiguration) { try AvgPool2DConfiguration(kernelSize: 2, padding: 2) }
        let big = try #require(oversized)
        expectError(.sizeLimit, "avg-pool") { try AvgPool2DConfiguration().outputShape(for: big) }
    }

    // MARK: BlurPool

    @Test func blurPoolDefaults() throws {
        let blur = try BlurPool2DConfiguration(channels: 8)
        #expect(blur.filterSize == 4 && blur.stride == 2 && blur.padding == .reflect && blur.padOffset == 0)
        #expect(blur.description == "blur-pool C=8 k=4 s=2 reflect offset=0")
        #expect(BlurPool2DConfiguration.operatorName == "blur-pool")
        #expect(try blur == BlurPool2DConfiguration(channels: 8, filterSize: 4))
        #expect(try blur != BlurPool2DConfiguration(channels: 8, filterSize: 3))
    }

    @Test func blurPoolPads() throws {
        // floor((k-1)/2) + offset before, ceil((k-1)/2) + offset after.
        let expected: [Int: (Int, Int)] = [1: (0, 0), 2: (0, 1), 3: (1, 1), 4: (1, 2), 5: (2, 2), 6: (2, 3), 7: (3, 3)]
        for (size, (before, after)) in expected {
            let pads = try BlurPool2DConfiguration(channels: 1, filterSize: size).pads
            #expect(pads == Padding2D(top: before, bottom: after, left: before, right: after))
            let offset = try BlurPool2DConfiguration(channels: 1, filterSize: size, padOffset: 2).pads
            #expect(offset == Padding2D(top: before + 2, bottom: after + 2, left: before + 2, right: after + 2))
        }
    }

    @Test(arguments: PaddingMode.allCases)
    func blurPoolStride2IsCeilHalf(mode: PaddingMode) throws {
        for size in 1...7 {
            let blur = try BlurPool2DConfiguration(channels: 3, filterSize: size, stride: 2, padding: mode)
            let largestPad = size / 2  // ceil((k-1)/2), the bottom/right pad
            for h in 1...12 {
                let input = try Shape4D(n: 2, c: 3, h: h, w: 12)
                if mode == .reflect && largestPad >= h {
                    expectError(.invalidShape, "blur-pool", "H") { try blur.outputShape(for: input) }
                } else {
                    let output = try blur.outputShape(for: input)
                    #expect(output == (try Shape4D(n: 2, c: 3, h: (h + 1) / 2, w: 6)), "k=\(size) H=\(h) \(mode)")
                }
            }
        }
    }

    @Test func blurPoolOtherStrides() throws {
        for size in 1...7 {
            let same = try BlurPool2DConfiguration(channels: 1, filterSize: size, stride: 1, padding: .zero)
            #expect(try same.outputShape(for: Shape4D(n: 1, c: 1, h: 9, w: 4)) == Shape4D(n: 1, c: 1, h: 9, w: 4))
        }
        // k = 1, stride 3 is x[::3, ::3]: ceil(H/3).
        let subsample = try BlurPool2DConfiguration(channels: 1, filterSize: 1, stride: 3)
        #expect(try subsample.outputShape(for: Shape4D(n: 1, c: 1, h: 10, w: 9)) == Shape4D(n: 1, c: 1, h: 4, w: 3))
    }

    @Test func blurPoolErrors() throws {
        for size in [0, 8, -3] {
            expectError(.invalidConfiguration, "filter size \(size)", "1...7") {
                try BlurPool2DConfiguration(channels: 4, filterSize: size)
            }
        }
        expectError(.invalidConfiguration, "channels") { try BlurPool2DConfiguration(channels: 0) }
        expectError(.invalidConfiguration, "stride") { try BlurPool2DConfiguration(channels: 1, stride: 0) }
        expectError(.invalidConfiguration, "pad offset", "-1") { try BlurPool2DConfiguration(channels: 1, padOffset: -1) }
        let blur = try BlurPool2DConfiguration(channels: 4)
        expectError(.invalidShape, "blur-pool", "3 channels", "4") { try blur.outputShape(for: Shape4D(n: 1, c: 3, h: 8, w: 8)) }
        // Reflect with k = 4 pads 2 after: W = 2 is too small, and the message says so.
        expectError(.invalidShape, "W", "2") { try blur.outputShape(for: Shape4D(n: 1, c: 4, h: 8, w: 2)) }
        let big = try #require(oversized)
        expectError(.sizeLimit, "blur-pool", "2^31") { try BlurPool2DConfiguration(channels: 1).outputShape(for: big) }
    }

    // MARK: MaxBlurPool

    @Test(arguments: PaddingMode.allCases)
    func maxBlurPoolIsBlurOfHMinusOne(mode: PaddingMode) throws {
        for size in 1...7 {
            let fused = try MaxBlurPool2DConfiguration(channels: 2, filterSize: size, padding: mode)
            let blur = try BlurPool2DConfiguration(channels: 2, filterSize: size, padding: mode)
            #expect(fused.blur == blur)
            for h in 2...12 {
                for w in [2, 5, 12] {
                    let input = try Shape4D(n: 3, c: 2, h: h, w: w)
                    let maxMap = try Shape4D(n: 3, c: 2, h: h - 1, w: w - 1)
                    #expect(try fused.maxMapShape(for: input) == maxMap)
                    let viaTwoSteps = Result { try blur.outputShape(for: maxMap) }
                    let direct = Result { try fused.outputShape(for: input) }
                    switch (viaTwoSteps, direct) {
                    case (.success(let a), .success(let b)):
                        #expect(a == b)
                        #expect(b.h == h / 2 && b.w == w / 2)  // ceil((H-1)/2)
                    case (.failure(let a as NyquistError), .failure(let b as NyquistError)):
                        #expect(a.kind == .invalidShape && b.kind == .invalidShape)
                        #expect(b.message.hasPrefix("max-blur-pool"))
                    default:
                        Issue.record("k=\(size) \(mode) \(input): two-step \(viaTwoSteps) vs direct \(direct)")
                    }
                }
            }
        }
    }

    @Test func maxBlurPoolErrors() throws {
        let pool = try MaxBlurPool2DConfiguration(channels: 4)
        #expect(pool.channels == 4)
        #expect(pool.description == "max-blur-pool C=4 k=4 s=2 reflect offset=0")
        expectError(.invalidShape, "H, W >= 2", "1x5") { try pool.outputShape(for: Shape4D(n: 1, c: 4, h: 1, w: 5)) }
        expectError(.invalidShape, "5 channels", "4") { try pool.outputShape(for: Shape4D(n: 1, c: 5, h: 8, w: 8)) }
        expectError(.invalidConfiguration, "filter size 8") { try MaxBlurPool2DConfiguration(channels: 4, filterSize: 8) }
        expectError(.invalidConfiguration, "filter size 0") { try MaxBlurPool2DConfiguration(channels: 4, filterSize: 0) }
        let big = try #require(oversized)
        expectError(.sizeLimit, "max-blur-pool") { try MaxBlurPool2DConfiguration(channels: 1).outputShape(for: big) }
    }
}
