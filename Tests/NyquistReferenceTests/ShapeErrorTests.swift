import NyquistCore
import NyquistReference
import Testing

/// Inputs that do not fit must throw a typed error naming the sizes, never crash.
@Suite("Shape errors")
struct ShapeErrorTests {
    /// The error thrown by `body`, which must be a ``NyquistError``.
    func error(_ body: () throws -> Void) throws -> NyquistError {
        do {
            try body()
        } catch let error as NyquistError {
            return error
        }
        throw NyquistError(.unsupported, "expected a NyquistError, but nothing was thrown")
    }

    @Test("Reflect padding on a map too small throws .invalidShape naming layer, axis, size and pad")
    func reflectTooSmall() throws {
        // k = 4 pads 1 above and 2 below; H = 2 cannot be mirrored by 2.
        let x = try Tensor<Double>(shape: [1, 1, 2, 5], repeating: 1)
        let config = try BlurPool2DConfiguration(channels: 1, filterSize: 4, stride: 2, padding: .reflect)
        let thrown = try error { _ = try Reference.blurPool2D(x, config) }
        #expect(thrown.kind == .invalidShape)
        #expect(thrown.message.contains("blur-pool"))
        #expect(thrown.message.contains("reflect padding of 2 on H"))
        #expect(thrown.message.contains("H = 2"))
        // The same map works with the modes that have no limit.
        for mode in [PaddingMode.zero, .replicate, .circular] {
            let fits = try BlurPool2DConfiguration(channels: 1, filterSize: 4, stride: 2, padding: mode)
            #expect(try Reference.blurPool2D(x, fits).shape == [1, 1, 1, 3])
        }
        // Backward validates the saved input the same way.
        let backward = try error {
            _ = try Reference.blurPool2DBackward(
                gradOutput: Tensor<Double>(shape: [1, 1, 1, 3], repeating: 0), saved: .init(input: x), config)
        }
        #expect(backward.kind == .invalidShape)
    }

    @Test("MaxBlurPool checks the max map: H = 1 and a max map too small to reflect")
    func maxBlurTooSmall() throws {
        let config = try MaxBlurPool2DConfiguration(channels: 1)
        let oneRow = try error { _ = try Reference.maxBlurPool2D(Tensor<Double>(shape: [1, 1, 1, 6], repeating: 0), config) }
        #expect(oneRow.kind == .invalidShape)
        #expect(oneRow.message.contains("1x6"))
        // H = 3 gives a 2-row max map; k = 4 reflect needs more than 2 rows.
        let small = try error { _ = try Reference.maxBlurPool2D(Tensor<Double>(shape: [1, 1, 3, 6], repeating: 0), config) }
        #expect(small.kind == .invalidShape)
        #expect(small.message.contains("H = 2"))
    }

    @Test("Channel mismatch throws .invalidShape naming both counts")
    func channelMismatch() throws {
        let x = try Tensor<Float>(shape: [1, 2, 8, 8], repeating: 0)
        for thrown in [
            try error { _ = try Reference.blurPool2D(x, BlurPool2DConfiguration(channels: 3)) },
            try error { _ = try Reference.maxBlurPool2D(x, MaxBlurPool2DConfiguration(channels: 3)) },
        ] {
            #expect(thrown.kind == .invalidShape)
            #expect(thrown.message.contains("2 channels"))
            #expect(thrown.message.contains("3"))
        }
    }

    @Test("Rank other than 4 throws .invalidShape")
    func wrongRank() throws {
        let x = try Tensor<Double>(shape: [2, 8, 8], repeating: 0)
        let thrown = try error { _ = try Reference.maxPool2D(x, MaxPool2DConfiguration()) }
        #expect(thrown.kind == .invalidShape)
        #expect(thrown.message.contains("rank 4"))
    }

    @Test("A tensor whose values were resized after construction throws instead of being read out of bounds")
    func resizedValues() throws {
        var x = try Tensor<Double>(shape: [1, 1, 4, 4], repeating: 0)
        x.values.removeLast()
        let thrown = try error { _ = try Reference.avgPool2D(x, AvgPool2DConfiguration()) }
        #expect(thrown.kind == .invalidShape)
        #expect(thrown.message.contains("15"))
    }

    @Test("A gradOutput of the wrong shape throws .invalidShape naming both shapes")
    func gradOutputMismatch() throws {
        let x = try Tensor<Double>(shape: [2, 3, 8, 8], repeating: 0)
        let wrong = try Tensor<Double>(shape: [2, 3, 5, 4], repeating: 0)
        let saved = Reference.Saved(input: x)
        let backwards: [() throws -> Void] = [
            { _ = try Reference.maxPool2DBackward(gradOutput: wrong, saved: saved, MaxPool2DConfiguration()) },
            { _ = try Reference.avgPool2DBackward(gradOutput: wrong, saved: saved, AvgPool2DConfiguration()) },
            {
                _ = try Reference.blurPool2DBackward(
                    gradOutput: wrong, saved: saved, BlurPool2DConfiguration(channels: 3))
            },
            {
                _ = try Reference.maxBlurPool2DBackward(
                    gradOutput: wrong, saved: saved, MaxBlurPool2DConfiguration(channels: 3))
            },
        ]
        // Every default configuration maps 8x8 to 4x4.
        for body in backwards {
            let thrown = try error(body)
            #expect(thrown.kind == .invalidShape)
            #expect(thrown.message.contains("2x3x5x4"), "\(thrown.message)")
            #expect(thrown.message.contains("2x3x4x4"), "\(thrown.message)")
            #expect(thrown.message.contains("2x3x8x8"), "\(thrown.message)")
        }
    }
}
