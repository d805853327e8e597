import Foundation
import NyquistCore
import NyquistImage
import Testing

/// Runs `body`, expects a ``NyquistError`` of `kind` whose one-line message contains each of
/// `fragments`.
func expectError<T>(
    _ kind: NyquistError.Kind, _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> T
) {
    do {
        let value = try body()
        Issue.record("expected a \(kind) error but got \(value)", sourceLocation: sourceLocation)
    } catch let error as NyquistError {
        #expect(error.kind == kind, "message: \(error.message)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error.message.contains(fragment), "message: \(error.message)", sourceLocation: sourceLocation)
        }
        #expect(!error.message.contains("\n"), "message is not one line: \(error.message)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a NyquistError but got \(error)", sourceLocation: sourceLocation)
    }
}

/// A random image; `smooth` images (gradients plus small noise) make the encoder pick the
/// predicting filters, random ones mostly filter 0.
func randomImage(
    width: Int, height: Int, layout: PNGImage.Layout, bitDepth: Int, seed: UInt64, smooth: Bool
) throws -> PNGImage {
    var generator = SplitMix64(seed: seed)
    let maximum = UInt64((1 << bitDepth) - 1)
    var samples: [UInt16] = []
    for row in 0..<height {
        for column in 0..<width {
            for channel in 0..<layout.channels {
                if smooth {
                    let base = UInt64(row * 3 + column * 5 + channel * 40) * (maximum / 255)
                    samples.append(UInt16((base + generator.next() % 3) % (maximum + 1)))
                } else {
                    samples.append(UInt16(generator.next() % (maximum + 1)))
                }
            }
        }
    }
    return try PNGImage(width: width, height: height, layout: layout, bitDepth: bitDepth, samples: samples)
}

/// The chunk types of a PNG file in order (no checks: the files come from the encoder).
func chunkTypes(_ bytes: [UInt8]) -> [String] {
    var types: [String] = []
    var position = 8
    while position + 12 <= bytes.count {
        let length = Int(bytes[position]) << 24 | Int(bytes[position + 1]) << 16 | Int(bytes[position + 2]) << 8
            | Int(bytes[position + 3])
        types.append(String(decoding: bytes[(position + 4)..<(position + 8)], as: UTF8.self))
        position += 12 + length
    }
    return types
}

@Suite("PNG encoder and decoder")
struct PNGTests {
    // MARK: Round trip

    @Test(arguments: PNGImage.Layout.allCases, [8, 16])
    func roundTripIsExact(layout: PNGImage.Layout, bitDepth: Int) throws {
        var seed: UInt64 = 1
        for (width, height) in [(1, 1), (1, 9), (9, 1), (7, 3), (33, 17)] {
            for smooth in [false, true] {
                let image = try randomImage(
                    width: width, height: height, layout: layout, bitDepth: bitDepth, seed: seed, smooth: smooth)
                seed += 1
                let decoded = try PNG.decode(PNG.encode(image))
                #expect(decoded == image, "\(layout) \(bitDepth)-bit \(width)x\(height) smooth=\(smooth)")
            }
        }
    }

    @Test func fileLayoutFollowsTheSpecification() throws {
        let image = try PNGImage(width: 3, height: 2, layout: .rgb, samples: [UInt16](repeating: 7, count: 18))
        let bytes = try PNG.encode(image)
        #expect(Array(bytes[0..<8]) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        // IHDR: length 13, "IHDR", width 3, height 2, depth 8, colour type 2, 0, 0, 0.
        #expect(Array(bytes[8..<29]) == [0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 3, 0, 0, 0, 2, 8, 2, 0, 0, 0])
        // IEND with its well-known CRC AE 42 60 82.
        #expect(Array(bytes.suffix(12)) == [0, 0, 0, 0, 73, 69, 78, 68, 0xAE, 0x42, 0x60, 0x82])
        #expect(chunkTypes(bytes) == ["IHDR", "IDAT", "IEND"])
        // Each chunk's CRC agrees with an independent CRC-32.
        var position = 8
        while position < bytes.count {
            let length = Int(bytes[position + 3]) | Int(bytes[position + 2]) << 8
            let body = Array(bytes[(position + 4)..<(position + 8 + length)])
            #expect(Array(bytes[(position + 8 + length)..<(position + 12 + length)]) == HandPNG.bigEndian(HandPNG.crc(body)))
            position += 12 + length
        }
    }

    @Test func largeImagesSpanSeveralIDATChunks() throws {
        let image = try randomImage(width: 100, height: 100, layout: .rgba, bitDepth: 16, seed: 9, smooth: false)
        let bytes = try PNG.encode(image)
        #expect(chunkTypes(bytes).filter { $0 == "IDAT" }.count >= 2)
        #expect(try PNG.decode(bytes) == image)
    }

    @Test func fileRoundTripAndReadErrors() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("nyquist-png-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let url = directory.appendingPathComponent("image.png")
        let image = try randomImage(width: 5, height: 4, layout: .gray, bitDepth: 8, seed: 3, smooth: true)
        try PNG.write(image, to: url)
        #expect(try PNG.read(contentsOf: url) == image)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["image.png"])
        expectError(.io, "missing.png") { try PNG.read(contentsOf: directory.appendingPathComponent("missing.png")) }
        try Data("not a png".utf8).write(to: directory.appendingPathComponent("text.png"))
        expectError(.invalidFile, "text.png", "signature") {
            try PNG.read(contentsOf: directory.appendingPathComponent("text.png"))
        }
    }

    @Test func imageInitialiserRefusesBadValues() {
        expectError(.invalidShape, "0x2") { try PNGImage(width: 0, height: 2, layout: .gray, samples: []) }
        expectError(.invalidShape, "12 samples but 4") { try PNGImage(width: 2, height: 2, layout: .rgb, samples: [1, 2, 3, 4]) }
        expectError(.invalidConfiguration, "bit depth 4") {
            try PNGImage(width: 1, height: 1, layout: .gray, bitDepth: 4, samples: [1])
        }
        expectError(.invalidConfiguration, "256") { try PNGImage(width: 1, height: 1, layout: .gray, samples: [256]) }
    }

    // MARK: Fixtures from another encoder (Python zlib + struct, Fixtures/make_fixtures.py)

    @Test func rgbFixtureWithAllFiveFilters() throws {
        let image = try PNG.read(contentsOf: fixtureDirectory.appendingPathComponent("rgb8-filters.png"))
        #expect(image.width == 5 && image.height == 5 && image.layout == .rgb && image.bitDepth == 8)
        for row in 0..<5 {
            for column in 0..<5 {
                let expected = [(row * 50 + column * 3) % 256, (255 - row * 40 - column * 7 + 256) % 256, (row * column * 11) % 256]
                let actual = (0..<3).map { Int(image[row, column, $0]) }
                #expect(actual == expected, "pixel (\(row), \(column))")
            }
        }
    }

    @Test func gray16Fixture() throws {
        let image = try PNG.read(contentsOf: fixtureDirectory.appendingPathComponent("gray16.png"))
        #expect(image.width == 3 && image.height == 2 && image.layout == .gray && image.bitDepth == 16)
        #expect(image.samples == [0, 1, 256, 65535, 4660, 43981])
        let tensor = try image.tensor()
        #expect(tensor.shape == [1, 1, 2, 3])
        #expect(tensor.values[3] == 1 && tensor.values[0] == 0 && tensor.values[2] == Float(256) / 65535)
    }

    @Test func paletteFixtureWithTransparency() throws {
        let image = try PNG.read(contentsOf: fixtureDirectory.appendingPathComponent("palette-trns.png"))
        #expect(image.width == 4 && image.height == 2 && image.layout == .rgba && image.bitDepth == 8)
        let red: [UInt16] = [255, 0, 0, 0]
        let green: [UInt16] = [0, 255, 0, 128]
        let blue: [UInt16] = [0, 0, 255, 255]
        #expect(image.samples == red + green + blue + green + blue + blue + red + green)
        let tensor = try image.tensor()
        #expect(tensor.shape == [1, 3, 2, 4], "alpha is dropped")
        #expect(Array(tensor.values[0..<8]) == [1, 0, 0, 0, 0, 0, 1, 0])
    }

    @Test func grayAlphaAndRGBA16Fixtures() throws {
        let grayAlpha = try PNG.read(contentsOf: fixtureDirectory.appendingPathComponent("gray-alpha8.png"))
        #expect(grayAlpha.width == 2 && grayAlpha.height == 2 && grayAlpha.layout == .grayAlpha)
        #expect(grayAlpha.samples == [0, 255, 64, 128, 128, 64, 255, 0])
        #expect(try grayAlpha.tensor().values == [0, Float(64) / 255, Float(128) / 255, 1])
        let rgba = try PNG.read(contentsOf: fixtureDirectory.appendingPathComponent("rgba16.png"))
        #expect(rgba.width == 2 && rgba.height == 1 && rgba.layout == .rgba && rgba.bitDepth == 16)
        #expect(rgba.samples == [1, 2, 3, 65535, 65534, 32768, 0, 0])
    }

    @Test func interlacedFixtureIsRefusedByName() {
        expectError(.unsupported, "interlaced.png", "interlaced") {
            try PNG.read(contentsOf: fixtureDirectory.appendingPathComponent("interlaced.png"))
        }
    }

    // MARK: Bad files: a typed error, never a crash

    /// A valid 3x2 gray file whose rows use filters 1 and 4.
    private var validFile: [UInt8] { HandPNG.file(width: 3, height: 2, raw: [1, 10, 5, 5, 4, 20, 1, 1]) }

    @Test func handBuiltFileDecodes() throws {
        let image = try PNG.decode(validFile)
        // Sub: 10, 15, 20. Paeth against the row above: 30, 31, 32.
        #expect(image.samples == [10, 15, 20, 30, 31, 32])
    }

    @Test func everyTruncationIsAnError() {
        let bytes = validFile
        for length in 0..<bytes.count {
            expectError(.invalidFile, "cut.png") { try PNG.decode(Array(bytes[0..<length]), name: "cut.png") }
        }
    }

    @Test func badCRCIsAnError() {
        let file = HandPNG.signature + HandPNG.chunk("IHDR", HandPNG.header(width: 1, height: 1, depth: 8, colour: 0))
            + HandPNG.chunk("IDAT", HandPNG.zlibStored([0, 0]), crcDelta: 1) + HandPNG.chunk("IEND", [])
        expectError(.invalidFile, "CRC", "IDAT", "bad.png") { try PNG.decode(file, name: "bad.png") }
    }

    @Test func everyByteFlipGivesAnErrorOrAnImage() {
        // With correct CRCs recomputed after the flip, so the damage reaches IHDR, zlib and the
        // filters instead of stopping at the CRC check.
        let raw: [UInt8] = [1, 10, 5, 5, 4, 20, 1, 1]
        let idat = HandPNG.zlibStored(raw)
        let ihdr = HandPNG.header(width: 3, height: 2, depth: 8, colour: 0)
        for (which, payload) in [("IHDR", ihdr), ("IDAT", idat)] {
            for index in payload.indices {
                for flip: UInt8 in [0x01, 0x80, 0xFF] {
                    var damaged = payload
                    damaged[index] ^= flip
                    let file = HandPNG.signature + HandPNG.chunk("IHDR", which == "IHDR" ? damaged : ihdr)
                        + HandPNG.chunk("IDAT", which == "IDAT" ? damaged : idat) + HandPNG.chunk("IEND", [])
                    do {
                        let image = try PNG.decode(file)
                        #expect(image.samples.count == image.width * image.height * image.layout.channels)
                    } catch let error as NyquistError {
                        #expect(!error.message.isEmpty)
                    } catch {
                        Issue.record("not a NyquistError: \(error)")
                    }
                }
            }
        }
    }

    @Test func garbageAndEmptyInput() {
        expectError(.invalidFile, "signature") { try PNG.decode([]) }
        var generator = SplitMix64(seed: 11)
        for length in [1, 8, 100, 5000] {
            let garbage = (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            expectError(.invalidFile, "junk.bin") { try PNG.decode(garbage, name: "junk.bin") }
            // Garbage after a valid signature.
            expectError(.invalidFile, "junk.bin") { try PNG.decode(HandPNG.signature + garbage, name: "junk.bin") }
        }
    }

    @Test func zeroAndHugeDeclaredSizes() {
        expectError(.invalidFile, "0x1") { try PNG.decode(HandPNG.file(width: 0, height: 1, raw: [0])) }
        expectError(.invalidFile, "1x0") { try PNG.decode(HandPNG.file(width: 1, height: 0, raw: [0])) }
        expectError(.invalidFile, "2^31") {
            try PNG.decode(HandPNG.file(width: 0x8000_0000, height: 1, raw: [0, 0]))
        }
        // Declared beyond the decode budget: refused as soon as IHDR is read.
        for (width, height) in [(0x7FFF_FFFF, 0x7FFF_FFFF), (100_000, 100_000)] as [(UInt32, UInt32)] {
            expectError(.sizeLimit, "\(width)x\(height)", "PNG decode budget") {
                try PNG.decode(HandPNG.file(width: width, height: height, colour: 6, raw: [0, 1, 2, 3, 4]))
            }
        }
        // Within the budget but far beyond what the data can inflate to: refused before allocating.
        for (width, height) in [(65_536, 4)] as [(UInt32, UInt32)] {
            expectError(.invalidFile, "\(width)x\(height)", "compressed") {
                try PNG.decode(HandPNG.file(width: width, height: height, colour: 6, raw: [0, 1, 2, 3, 4]))
            }
        }
    }

    @Test func dataOfTheWrongLength() {
        expectError(.invalidFile, "more than") { try PNG.decode(HandPNG.file(width: 2, height: 1, raw: [0, 1, 2, 3])) }
        expectError(.invalidFile, "needs 6") { try PNG.decode(HandPNG.file(width: 2, height: 2, raw: [0, 1, 2, 0])) }
        // A deflate stream that stops in the middle (its final block promised more bytes).
        var stream = HandPNG.zlibStored([0, 1, 2, 0, 3, 4])
        stream.removeLast(7)
        let cut = HandPNG.signature + HandPNG.chunk("IHDR", HandPNG.header(width: 2, height: 2, depth: 8, colour: 0))
            + HandPNG.chunk("IDAT", stream) + HandPNG.chunk("IEND", [])
        expectError(.invalidFile, "ends early") { try PNG.decode(cut) }
        let corrupt = HandPNG.signature + HandPNG.chunk("IHDR", HandPNG.header(width: 1, height: 1, depth: 8, colour: 0))
            + HandPNG.chunk("IDAT", [0x78, 0x01, 0xFF, 0xFF, 0xFF, 0xFF]) + HandPNG.chunk("IEND", [])
        expectError(.invalidFile, "corrupt") { try PNG.decode(corrupt) }
    }

    @Test func structuralErrors() {
        expectError(.invalidFile, "filter type 5") { try PNG.decode(HandPNG.file(width: 1, height: 1, raw: [5, 0])) }
        expectError(.unsupported, "bit depth 4") { try PNG.decode(HandPNG.file(width: 2, height: 1, depth: 4, raw: [0, 0])) }
        expectError(.invalidFile, "bit depth 4", "colour type 2") {
            try PNG.decode(HandPNG.file(width: 1, height: 1, depth: 4, colour: 2, raw: [0, 0]))
        }
        expectError(.invalidFile, "colour type 5") { try PNG.decode(HandPNG.file(width: 1, height: 1, colour: 5, raw: [0, 0])) }
        expectError(.invalidFile, "PLTE") { try PNG.decode(HandPNG.file(width: 1, height: 1, colour: 3, raw: [0, 0])) }
        let palette = HandPNG.chunk("PLTE", [1, 2, 3, 4, 5, 6])
        expectError(.invalidFile, "palette entry 2") {
            try PNG.decode(HandPNG.file(width: 2, height: 1, colour: 3, raw: [0, 1, 2], beforeData: palette))
        }
        #expect((try? PNG.decode(HandPNG.file(width: 2, height: 1, colour: 3, raw: [0, 1, 0], beforeData: palette)))?.samples
            == [4, 5, 6, 1, 2, 3])
        expectError(.unsupported, "critical chunk 'ABCD'") {
            try PNG.decode(HandPNG.file(width: 1, height: 1, raw: [0, 0], beforeData: HandPNG.chunk("ABCD", [])))
        }
        let ignored = HandPNG.chunk("abCD", [1, 2, 3])
        #expect((try? PNG.decode(HandPNG.file(width: 1, height: 1, raw: [0, 9], beforeData: ignored)))?.samples == [9])
        let headerFirst = HandPNG.signature + HandPNG.chunk("IDAT", HandPNG.zlibStored([0, 0]))
        expectError(.invalidFile, "not IHDR") { try PNG.decode(headerFirst) }
        let noData = HandPNG.signature + HandPNG.chunk("IHDR", HandPNG.header(width: 1, height: 1, depth: 8, colour: 0))
            + HandPNG.chunk("IEND", [])
        expectError(.invalidFile, "no image data") { try PNG.decode(noData) }
        let interlaced = HandPNG.signature
            + HandPNG.chunk("IHDR", HandPNG.header(width: 1, height: 1, depth: 8, colour: 0, interlace: 1))
        expectError(.unsupported, "interlaced") { try PNG.decode(interlaced) }
    }

    // MARK: Tensors

    @Test func tensorConversion() throws {
        let rgb = try PNGImage(width: 2, height: 1, layout: .rgb, samples: [0, 51, 255, 255, 102, 0])
        let tensor = try rgb.tensor()
        #expect(tensor.shape == [1, 3, 1, 2])
        #expect(tensor.values == [0, 1, 0.2, 0.4, 1, 0])
        #expect(try PNGImage(tensor: tensor) == rgb)

        let values: [Float] = [-0.5, 0, 0.5, 1.2, .nan, .infinity, -.infinity, 0.25]
        let gray = try PNGImage(tensor: HostTensor(shape: [1, 1, 2, 4], values: values))
        #expect(gray.layout == .gray && gray.width == 4 && gray.height == 2)
        // round(255 * clamp(v, 0, 1)); 127.5 and 63.75 round half away from zero / to nearest.
        #expect(gray.samples == [0, 0, 128, 255, 0, 255, 0, 64])

        expectError(.unsupported, "N = 2", "y.png") { try PNGImage(tensor: HostTensor(shape: [2, 1, 2, 2]), role: "y.png") }
        expectError(.unsupported, "C = 2") { try PNGImage(tensor: HostTensor(shape: [1, 2, 2, 2])) }
        expectError(.invalidShape, "[1, 2, 2]") { try PNGImage(tensor: HostTensor(shape: [1, 2, 2])) }
    }
}
