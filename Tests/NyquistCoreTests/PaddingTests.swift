import NyquistCore
import Testing

@Suite("Padding and window sizes")
struct PaddingTests {
    /// `(index, expected source)` pairs for one mode and axis size.
    typealias Case = (index: Int, source: Int?)

    func check(_ mode: PaddingMode, size: Int, _ cases: [Case], sourceLocation: SourceLocation = #_sourceLocation) {
        for (index, expected) in cases {
            #expect(mode.sourceIndex(index, size: size) == expected, "\(mode) size \(size) index \(index)",
                sourceLocation: sourceLocation)
        }
    }

    @Test(arguments: PaddingMode.allCases)
    func insideIsIdentity(mode: PaddingMode) {
        for size in 1...9 {
            for index in 0..<size {
                #expect(mode.sourceIndex(index, size: size) == index)
            }
        }
    }

    @Test func reflect() {
        // x = [a b c d]: reflect pads ... d c b | a b c d | c b a ...
        check(.reflect, size: 4, [(-3, 3), (-2, 2), (-1, 1), (4, 2), (5, 1), (6, 0)])
        check(.reflect, size: 2, [(-1, 1), (2, 0)])
        check(.reflect, size: 5, [(-4, 4), (-1, 1), (5, 3), (8, 0)])
        check(.reflect, size: 1, [(0, 0)])
    }

    @Test func reflectMatchesMirrorConstruction() {
        // Build the padded row the way ReflectionPad does it: the p samples after the first one,
        // reversed, then the row, then the p samples before the last one, reversed.
        for size in 2...9 {
            let row = Array(0..<size)
            for pad in 0..<size {
                let left = Array(row[1..<(pad + 1)].reversed())
                let right = Array(row[(size - 1 - pad)..<(size - 1)].reversed())
                let padded = left + row + right
                for (offset, expected) in padded.enumerated() {
                    #expect(PaddingMode.reflect.sourceIndex(offset - pad, size: size) == expected)
                }
            }
        }
    }

    @Test func circular() {
        check(.circular, size: 4, [(-1, 3), (-4, 0), (-5, 3), (-9, 3), (4, 0), (7, 3), (8, 0), (9, 1)])
        check(.circular, size: 1, [(-3, 0), (-1, 0), (1, 0), (5, 0)])
        check(.circular, size: 3, [(-2, 1), (3, 0), (5, 2)])
    }

    @Test func replicate() {
        check(.replicate, size: 4, [(-5, 0), (-1, 0), (4, 3), (100, 3)])
        check(.replicate, size: 1, [(-2, 0), (3, 0)])
    }

    @Test func zero() {
        check(.zero, size: 4, [(-1, nil), (-7, nil), (4, nil), (9, nil), (2, 2)])
        check(.zero, size: 1, [(-1, nil), (1, nil), (0, 0)])
    }

    @Test func reflectValidation() throws {
        try PaddingMode.reflect.validate(pad: 3, size: 4, axis: "H", layer: "blur-pool")
        try PaddingMode.reflect.validate(pad: 0, size: 1, axis: "H", layer: "blur-pool")
        expectError(.invalidShape, "blur-pool", "W", "5", "3") {
            try PaddingMode.reflect.validate(pad: 5, size: 3, axis: "W", layer: "blur-pool")
        }
        expectError(.invalidShape, "max-blur-pool", "H", "4") {
            try PaddingMode.reflect.validate(pad: 4, size: 4, axis: "H", layer: "max-blur-pool")
        }
        expectError(.invalidShape, "H = 1") { try PaddingMode.reflect.validate(pad: 1, size: 1, axis: "H", layer: "l") }
    }

    @Test(arguments: [PaddingMode.zero, .replicate, .circular])
    func otherModesAcceptAnyPad(mode: PaddingMode) throws {
        try mode.validate(pad: 10, size: 1, axis: "H", layer: "l")
        try mode.validate(pad: 0, size: 1, axis: "H", layer: "l")
    }

    @Test(arguments: PaddingMode.allCases)
    func negativePadIsAConfigurationError(mode: PaddingMode) {
        expectError(.invalidConfiguration, "negative padding -1", "H") {
            try mode.validate(pad: -1, size: 4, axis: "H", layer: "l")
        }
    }

    @Test func windowOutputSizeExamples() throws {
        #expect(try windowOutputSize(size: 5, padBefore: 0, padAfter: 0, window: 2, stride: 2, axis: "H", layer: "l") == 2)
        #expect(try windowOutputSize(size: 224, padBefore: 1, padAfter: 1, window: 3, stride: 2, axis: "H", layer: "l") == 112)
        #expect(try windowOutputSize(size: 7, padBefore: 1, padAfter: 2, window: 4, stride: 2, axis: "H", layer: "l") == 4)
        #expect(try windowOutputSize(size: 1, padBefore: 0, padAfter: 0, window: 1, stride: 1, axis: "H", layer: "l") == 1)
        #expect(try windowOutputSize(size: 2, padBefore: 0, padAfter: 1, window: 3, stride: 5, axis: "H", layer: "l") == 1)
        expectError(.invalidShape, "pool", "W = 2", "smaller than the window 3") {
            try windowOutputSize(size: 2, padBefore: 0, padAfter: 0, window: 3, stride: 1, axis: "W", layer: "pool")
        }
    }

    @Test func windowOutputSizeRejectsBadArguments() {
        for (size, before, after, window, stride) in [(4, 0, 0, 2, 0), (4, 0, 0, 0, 1), (0, 1, 1, 1, 1), (4, -1, 0, 2, 1),
                                                      (4, 0, -1, 2, 1), (4, 0, 0, 2, -2)]
        {
            expectError(.invalidConfiguration, "pool", "H") {
                try windowOutputSize(
                    size: size, padBefore: before, padAfter: after, window: window, stride: stride, axis: "H", layer: "pool")
            }
        }
        expectError(.sizeLimit, "overflows") {
            try windowOutputSize(size: Int.max, padBefore: 1, padAfter: 0, window: 1, stride: 1, axis: "H", layer: "pool")
        }
    }

    @Test func windowOutputSizeCountsWindowPositions() throws {
        // The number of window starts 0, s, 2s, ... that keep the window inside the padded axis.
        for size in 1...10 {
            for pad in 0...2 {
                for window in 1...5 {
                    for stride in 1...3 where size + 2 * pad >= window {
                        let starts = Array(Swift.stride(from: 0, through: size + 2 * pad - window, by: stride))
                        let computed = try windowOutputSize(
                            size: size, padBefore: pad, padAfter: pad, window: window, stride: stride, axis: "H", layer: "l")
                        #expect(computed == starts.count)
                    }
                }
            }
        }
    }
}
