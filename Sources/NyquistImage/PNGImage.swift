import NyquistCore

/// A non-interlaced image as PNG stores it: interleaved samples, row-major, top row first.
///
/// Palette images are expanded to RGB (RGBA when the file has a tRNS chunk) by the decoder, so
/// every image is one of four sample layouts at 8 or 16 bits per sample. A tRNS chunk of a gray
/// or RGB image (one colour marked transparent) is ignored: it adds no alpha channel.
public struct PNGImage: Sendable, Equatable {
    /// Which samples make up one pixel, in storage order.
    public enum Layout: Int, Sendable, CaseIterable, CustomStringConvertible {
        /// One gray sample.
        case gray = 1
        /// Gray, then alpha.
        case grayAlpha = 2
        /// Red, green, blue.
        case rgb = 3
        /// Red, green, blue, alpha.
        case rgba = 4

        /// Samples per pixel.
        public var channels: Int { rawValue }

        /// True when the last sample of a pixel is opacity.
        public var hasAlpha: Bool { self == .grayAlpha || self == .rgba }

        /// The PNG colour type byte of IHDR for this layout.
        var colourType: UInt8 {
            switch self {
            case .gray: 0
            case .rgb: 2
            case .grayAlpha: 4
            case .rgba: 6
            }
        }

        public var description: String {
            switch self {
            case .gray: "gray"
            case .grayAlpha: "gray+alpha"
            case .rgb: "RGB"
            case .rgba: "RGBA"
            }
        }
    }

    /// PNG's limit on either side: sizes are unsigned 32-bit numbers below 2^31.
    public static let maximumSide = Int(Int32.max)

    /// Pixels per row.
    public let width: Int
    /// Rows.
    public let height: Int
    /// The samples of one pixel.
    public let layout: Layout
    /// Bits per sample: 8 or 16.
    public let bitDepth: Int
    /// `height * width * layout.channels` samples, each in `0...maximumSample`.
    public let samples: [UInt16]

    /// An image; throws ``NyquistError/Kind/invalidShape`` when a size is not positive, is above
    /// ``maximumSide`` or disagrees with the sample count, and
    /// ``NyquistError/Kind/invalidConfiguration`` for a bit depth other than 8 or 16 or a sample
    /// above the depth's maximum.
    public init(width: Int, height: Int, layout: Layout, bitDepth: Int = 8, samples: [UInt16]) throws {
        guard (1...Self.maximumSide).contains(width), (1...Self.maximumSide).contains(height) else {
            throw NyquistError(
                .invalidShape, "a PNG image is \(width)x\(height); both sides must be in 1...\(Self.maximumSide)")
        }
        guard bitDepth == 8 || bitDepth == 16 else {
            throw NyquistError(.invalidConfiguration, "PNG bit depth \(bitDepth) is not supported; use 8 or 16")
        }
        let count = try Tensor<Float>.elementCount(of: [height, width, layout.channels])
        guard samples.count == count else {
            throw NyquistError(
                .invalidShape,
                "a \(width)x\(height) \(layout) image holds \(count) samples but \(samples.count) were given")
        }
        if bitDepth == 8, let large = samples.first(where: { $0 > 255 }) {
            throw NyquistError(.invalidConfiguration, "sample \(large) does not fit an 8-bit PNG (0...255)")
        }
        self.width = width
        self.height = height
        self.layout = layout
        self.bitDepth = bitDepth
        self.samples = samples
    }

    /// Samples already checked by the decoder.
    init(unchecked width: Int, _ height: Int, _ layout: Layout, _ bitDepth: Int, _ samples: [UInt16]) {
        self.width = width
        self.height = height
        self.layout = layout
        self.bitDepth = bitDepth
        self.samples = samples
    }

    /// The largest sample value at this bit depth (255 or 65535).
    public var maximumSample: Int { (1 << bitDepth) - 1 }

    /// Sample `channel` of the pixel in `row`, `column`.
    public subscript(row: Int, column: Int, channel: Int) -> UInt16 {
        samples[(row * width + column) * layout.channels + channel]
    }
}
