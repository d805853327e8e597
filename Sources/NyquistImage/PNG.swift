import CZlib
import Foundation
import NyquistCore

/// PNG files (ISO/IEC 15948): a writer for 8- and 16-bit gray, gray+alpha, RGB and RGBA images,
/// and a reader for every non-interlaced image at bit depth 8 or 16 plus 8-bit palette images.
///
/// Every failure is a ``NyquistError`` whose message names the file: `.invalidFile` for data
/// that breaks the format (bad signature, CRC, chunk order, compressed stream, filter type),
/// `.unsupported` for valid files this reader does not handle (Adam7 interlacing, 1/2/4-bit
/// samples, unknown critical chunks).
public enum PNG {
    /// The eight bytes every PNG file starts with.
    public static let signature: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]

    /// IDAT payloads are split at this size; small chunks cost 12 bytes each, and a split stream
    /// exercises every reader's multi-IDAT path.
    static let idatChunkSize = 1 << 16

    /// deflate cannot expand data by more than about 1032:1 (a 258-byte match costs at least
    /// 2 bits), so a file whose declared pixel data exceeds this multiple of its compressed
    /// bytes is truncated or lying, and is refused before any buffer of that size is allocated.
    static let maximumInflateRatio = 1032

    // MARK: Writing

    /// The PNG file of `image`: signature, IHDR, IDAT (zlib level 9 after per-row filtering),
    /// IEND. Each row takes the filter whose output has the smallest sum of absolute values
    /// (read as signed bytes), the heuristic the PNG specification recommends.
    public static func encode(_ image: PNGImage) throws -> [UInt8] {
        let bytesPerSample = image.bitDepth / 8
        let bytesPerPixel = image.layout.channels * bytesPerSample
        let rowBytes = image.width * bytesPerPixel
        var raw = [UInt8]()
        raw.reserveCapacity(image.height * (rowBytes + 1))
        var previous = [UInt8](repeating: 0, count: rowBytes)
        var current = [UInt8](repeating: 0, count: rowBytes)
        var candidate = [UInt8](repeating: 0, count: rowBytes)
        var best = [UInt8](repeating: 0, count: rowBytes)
        let samplesPerRow = image.width * image.layout.channels
        for row in 0..<image.height {
            let base = row * samplesPerRow
            for index in 0..<samplesPerRow {
                let sample = image.samples[base + index]
                if bytesPerSample == 1 {
                    current[index] = UInt8(truncatingIfNeeded: sample)
                } else {
                    current[2 * index] = UInt8(truncatingIfNeeded: sample >> 8)
                    current[2 * index + 1] = UInt8(truncatingIfNeeded: sample)
                }
            }
            var bestFilter: UInt8 = 0
            var bestCost = Int.max
            for filter in UInt8(0)...4 {
                applyFilter(filter, current, previous, bytesPerPixel, into: &candidate)
                var cost = 0
                for byte in candidate { cost += abs(Int(Int8(bitPattern: byte))) }
                if cost < bestCost {
                    bestCost = cost
                    bestFilter = filter
                    swap(&best, &candidate)
                }
            }
            raw.append(bestFilter)
            raw.append(contentsOf: best)
            swap(&previous, &current)
        }
        let compressed = try deflate(raw)

        var file = signature
        var header = [UInt8]()
        appendBigEndian(UInt32(image.width), to: &header)
        appendBigEndian(UInt32(image.height), to: &header)
        header += [UInt8(image.bitDepth), image.layout.colourType, 0, 0, 0]
        appendChunk("IHDR", header, to: &file)
        var offset = 0
        repeat {
            let end = min(offset + idatChunkSize, compressed.count)
            appendChunk("IDAT", Array(compressed[offset..<end]), to: &file)
            offset = end
        } while offset < compressed.count
        appendChunk("IEND", [], to: &file)
        return file
    }

    /// Writes `image` to `url` atomically (the old file or the whole new one, never a part).
    public static func write(_ image: PNGImage, to url: URL) throws {
        try FileIO.writeAtomically(encode(image), to: url)
    }

    /// `raw` with filter `type` applied (`previous` is the row above, zeros for the first row).
    private static func applyFilter(
        _ type: UInt8, _ raw: [UInt8], _ previous: [UInt8], _ bytesPerPixel: Int, into output: inout [UInt8]
    ) {
        for index in raw.indices {
            let left = index >= bytesPerPixel ? raw[index - bytesPerPixel] : 0
            let up = previous[index]
            let upLeft = index >= bytesPerPixel ? previous[index - bytesPerPixel] : 0
            let predictor: UInt8
            switch type {
            case 0: predictor = 0
            case 1: predictor = left
            case 2: predictor = up
            case 3: predictor = UInt8((Int(left) + Int(up)) / 2)
            default: predictor = paeth(left, up, upLeft)
            }
            output[index] = raw[index] &- predictor
        }
    }

    /// The Paeth predictor: whichever of left, up, upper-left is closest to left + up - upLeft
    /// (ties in that order).
    @inline(__always)
    private static func paeth(_ left: UInt8, _ up: UInt8, _ upLeft: UInt8) -> UInt8 {
        let estimate = Int(left) + Int(up) - Int(upLeft)
        let distanceLeft = abs(estimate - Int(left))
        let distanceUp = abs(estimate - Int(up))
        let distanceUpLeft = abs(estimate - Int(upLeft))
        if distanceLeft <= distanceUp && distanceLeft <= distanceUpLeft { return left }
        return distanceUp <= distanceUpLeft ? up : upLeft
    }

    private static func appendBigEndian(_ value: UInt32, to bytes: inout [UInt8]) {
        bytes += [UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
            UInt8(truncatingIfNeeded: value)]
    }

    private static func appendChunk(_ type: String, _ data: [UInt8], to file: inout [UInt8]) {
        appendBigEndian(UInt32(data.count), to: &file)
        let typeAndData = Array(type.utf8) + data
        file += typeAndData
        appendBigEndian(crc(typeAndData[...]), to: &file)
    }

    /// zlib's CRC-32 (the one PNG specifies) of `bytes`.
    static func crc(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        // Chunks are below 2^31 bytes, so one call with a 32-bit length covers any chunk.
        bytes.withUnsafeBufferPointer { buffer in
            UInt32(truncatingIfNeeded: crc32(crc32(0, nil, 0), buffer.baseAddress, UInt32(buffer.count)))
        }
    }

    /// A zlib stream of `bytes` at the highest compression level.
    private static func deflate(_ bytes: [UInt8]) throws -> [UInt8] {
        var capacity = compressBound(uLong(bytes.count))
        var output = [UInt8](repeating: 0, count: Int(capacity))
        let status = output.withUnsafeMutableBufferPointer { destination in
            bytes.withUnsafeBufferPointer { source in
                compress2(destination.baseAddress, &capacity, source.baseAddress, uLong(source.count), 9)
            }
        }
        guard status == Z_OK else {
            throw NyquistError(.io, "zlib could not compress \(bytes.count) bytes of PNG image data (status \(status))")
        }
        output.removeSubrange(Int(capacity)...)
        return output
    }

    // MARK: Reading

    /// Reads the PNG file at `url`; errors name its path. Only a regular file is opened (see
    /// ``FileIO/RegularFile/open(_:)``); the budgets are those of ``decode(_:name:limits:)``.
    public static func read(contentsOf url: URL, limits: HostLimits = .current) throws -> PNGImage {
        try decode(FileIO.readBytes(contentsOf: url, limits: limits), name: url.path, limits: limits)
    }

    /// Decodes a PNG file held in `bytes`; `name` (a path) is used in error messages.
    ///
    /// As soon as IHDR is read, the bytes the decoder would produce (the inflated rows plus the
    /// 16-bit sample array) are checked against `limits.pngDecodeBudget`, and an image over it
    /// is refused with ``NyquistError/Kind/sizeLimit`` before anything else is read; inflating
    /// stops as soon as the stream produces more than IHDR's size needs.
    public static func decode(_ bytes: [UInt8], name: String = "PNG data", limits: HostLimits = .current) throws -> PNGImage {
        func invalid(_ reason: String) -> NyquistError { NyquistError(.invalidFile, "PNG \(name): \(reason)") }
        guard bytes.count >= signature.count, Array(bytes[0..<signature.count]) == signature else {
            throw invalid("not a PNG file (the 8-byte PNG signature is missing)")
        }
        var header: Header?
        var palette: [UInt8]?
        var transparency: [UInt8]?
        var compressed: [UInt8] = []
        var sawIDAT = false
        var finished = false
        var position = signature.count
        while !finished {
            guard bytes.count - position >= 12 else {
                throw invalid("the file is truncated (it ends at byte \(bytes.count) without an IEND chunk)")
            }
            let length = Int(bigEndian32(bytes, position))
            let typeBytes = bytes[(position + 4)..<(position + 8)]
            let type = String(decoding: typeBytes, as: UTF8.self)
            guard length <= Int(Int32.max) else {
                throw invalid("chunk '\(type)' at byte \(position) declares \(length) bytes (the limit is 2^31-1)")
            }
            guard typeBytes.allSatisfy({ (65...90).contains($0) || (97...122).contains($0) }) else {
                throw invalid("bytes \(position + 4)..<\(position + 8) are not a chunk type (corrupt or not PNG)")
            }
            guard bytes.count - position - 12 >= length else {
                throw invalid("the file is truncated inside chunk '\(type)' (\(length) bytes declared at byte \(position))")
            }
            let dataStart = position + 8
            let data = bytes[dataStart..<(dataStart + length)]
            let storedCRC = bigEndian32(bytes, dataStart + length)
            let computedCRC = crc(bytes[(position + 4)..<(dataStart + length)])
            guard storedCRC == computedCRC else {
                throw invalid(
                    "CRC mismatch in chunk '\(type)' at byte \(position) (stored \(hex(storedCRC)), computed \(hex(computedCRC)))")
            }
            position = dataStart + length + 4

            if header == nil && type != "IHDR" {
                throw invalid("the first chunk is '\(type)', not IHDR")
            }
            switch type {
            case "IHDR":
                guard header == nil else { throw invalid("more than one IHDR chunk") }
                let declared = try Header(data, invalid: invalid, unsupported: { reason in
                    NyquistError(.unsupported, "PNG \(name): \(reason)")
                })
                try declared.checkBudget(limits.pngDecodeBudget, name: name)
                header = declared
            case "PLTE":
                guard data.count % 3 == 0, (3...768).contains(data.count) else {
                    throw invalid("PLTE has \(data.count) bytes; it must hold 1...256 RGB entries (3 bytes each)")
                }
                guard !sawIDAT else { throw invalid("PLTE comes after IDAT") }
                palette = Array(data)
            case "tRNS":
                transparency = Array(data)
            case "IDAT":
                compressed.append(contentsOf: data)
                sawIDAT = true
            case "IEND":
                finished = true
            default:
                // Bit 5 of the first type byte clear (upper case) marks a chunk a reader must
                // understand; ancillary chunks (text, gamma, ...) are skipped.
                if typeBytes.first.map({ $0 & 0x20 == 0 }) == true {
                    throw NyquistError(.unsupported, "PNG \(name): critical chunk '\(type)' is not supported")
                }
            }
        }
        guard let header else { throw invalid("no IHDR chunk") }
        guard sawIDAT, !compressed.isEmpty else { throw invalid("no image data (no IDAT chunk or only empty ones)") }

        let expansion: Expansion
        if header.colourType == 3 {
            guard let palette else { throw invalid("a palette image without a PLTE chunk") }
            expansion = .palette(rgb: palette, alpha: transparency ?? [])
        } else {
            expansion = .direct
        }
        // Overflow-checked sizes; the ratio check comes before the only large allocation.
        let bytesPerSample = header.bitDepth / 8
        let storedChannels = header.storedChannels
        let (rowBytes, rowOverflow) = header.width.multipliedReportingOverflow(by: storedChannels * bytesPerSample)
        let (rawCount, rawOverflow) = header.height.multipliedReportingOverflow(by: rowBytes + 1)
        guard !rowOverflow, !rawOverflow, rawCount / maximumInflateRatio <= compressed.count else {
            throw invalid(
                "IHDR declares \(header.width)x\(header.height) pixels, more than the \(compressed.count) compressed "
                    + "bytes can hold (deflate expands at most \(maximumInflateRatio):1): truncated or corrupt")
        }
        let outputLayout = header.outputLayout(hasTransparency: transparency != nil)
        let (sampleCount, sampleOverflow) = (header.width * header.height).multipliedReportingOverflow(
            by: outputLayout.channels)
        guard !sampleOverflow, sampleCount <= maximumDeviceElementCount else {
            throw NyquistError(
                .sizeLimit,
                "PNG \(name): \(header.width)x\(header.height) \(outputLayout) holds more than 2^31 samples")
        }

        var raw = try inflate(compressed, expectedCount: rawCount, invalid: invalid)
        try unfilter(&raw, rows: header.height, rowBytes: rowBytes, bytesPerPixel: storedChannels * bytesPerSample, invalid: invalid)

        var samples = [UInt16](repeating: 0, count: sampleCount)
        switch expansion {
        case .direct:
            for row in 0..<header.height {
                let source = row * (rowBytes + 1) + 1
                let target = row * header.width * storedChannels
                if bytesPerSample == 1 {
                    for index in 0..<rowBytes { samples[target + index] = UInt16(raw[source + index]) }
                } else {
                    for index in 0..<(rowBytes / 2) {
                        samples[target + index] = UInt16(raw[source + 2 * index]) << 8 | UInt16(raw[source + 2 * index + 1])
                    }
                }
            }
        case .palette(let rgb, let alpha):
            let entries = rgb.count / 3
            let channels = outputLayout.channels
            for row in 0..<header.height {
                let source = row * (rowBytes + 1) + 1
                for column in 0..<header.width {
                    let entry = Int(raw[source + column])
                    guard entry < entries else {
                        throw invalid("pixel (\(row), \(column)) uses palette entry \(entry) but PLTE has \(entries)")
                    }
                    let target = (row * header.width + column) * channels
                    for channel in 0..<3 { samples[target + channel] = UInt16(rgb[3 * entry + channel]) }
                    if channels == 4 { samples[target + 3] = entry < alpha.count ? UInt16(alpha[entry]) : 255 }
                }
            }
        }
        return PNGImage(unchecked: header.width, header.height, outputLayout, header.bitDepth, samples)
    }

    /// How stored samples become output samples.
    private enum Expansion {
        case direct
        case palette(rgb: [UInt8], alpha: [UInt8])
    }

    /// The fields of IHDR, validated.
    private struct Header {
        let width: Int
        let height: Int
        let bitDepth: Int
        let colourType: UInt8

        init(
            _ data: ArraySlice<UInt8>, invalid: (String) -> NyquistError, unsupported: (String) -> NyquistError
        ) throws {
            guard data.count == 13 else { throw invalid("IHDR has \(data.count) bytes instead of 13") }
            let start = data.startIndex
            let bytes = Array(data)
            width = Int(PNG.bigEndian32(bytes, 0))
            height = Int(PNG.bigEndian32(bytes, 4))
            bitDepth = Int(data[start + 8])
            colourType = data[start + 9]
            guard (1...PNGImage.maximumSide).contains(width), (1...PNGImage.maximumSide).contains(height) else {
                throw invalid("IHDR declares \(width)x\(height) pixels; both sides must be in 1...2^31-1")
            }
            let allowed: [UInt8: [Int]] = [0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]]
            guard let depths = allowed[colourType] else {
                throw invalid("IHDR has colour type \(colourType); PNG defines 0, 2, 3, 4 and 6")
            }
            guard depths.contains(bitDepth) else {
                throw invalid("bit depth \(bitDepth) is not allowed with colour type \(colourType) (allowed: \(depths))")
            }
            guard data[start + 10] == 0 else { throw invalid("unknown compression method \(data[start + 10])") }
            guard data[start + 11] == 0 else { throw invalid("unknown filter method \(data[start + 11])") }
            switch data[start + 12] {
            case 0: break
            case 1: throw unsupported("Adam7 interlaced images are not supported (re-save it without interlacing)")
            default: throw invalid("unknown interlace method \(data[start + 12])")
            }
            guard bitDepth >= 8 else {
                throw unsupported("bit depth \(bitDepth) is not supported (only 8 and 16, and 8 for palette images)")
            }
        }

        /// Samples per pixel in the file (1 for palette indices).
        var storedChannels: Int {
            switch colourType {
            case 2: 3
            case 4: 2
            case 6: 4
            default: 1
            }
        }

        /// Throws `.sizeLimit` when decoding this image would produce more than `budget` bytes:
        /// the inflated rows (a filter byte and the stored samples per row) plus the decoded
        /// samples (2 bytes each, for the widest layout the file may turn out to have).
        func checkBudget(_ budget: Int, name: String) throws {
            let bytesPerSample = bitDepth / 8
            let channels = colourType == 3 ? 4 : storedChannels
            let (rowBytes, overflow1) = width.multipliedReportingOverflow(by: storedChannels * bytesPerSample)
            let (inflated, overflow2) = height.multipliedReportingOverflow(by: rowBytes + 1)
            let (pixels, overflow3) = width.multipliedReportingOverflow(by: height)
            let (samples, overflow4) = pixels.multipliedReportingOverflow(by: channels * 2)
            let (total, overflow5) = inflated.addingReportingOverflow(samples)
            let overflow = overflow1 || overflow2 || overflow3 || overflow4 || overflow5
            guard !overflow, total <= budget else {
                let needs = overflow ? "more bytes than can be counted" : HostLimits.format(bytes: total)
                throw NyquistError(
                    .sizeLimit,
                    "PNG \(name): IHDR declares \(width)x\(height) pixels (colour type \(colourType), \(bitDepth) bits); "
                        + "decoding needs \(needs), more than the PNG decode budget of \(HostLimits.format(bytes: budget)) "
                        + "(set NYQUIST_PNG_DECODE_BUDGET to change it)")
            }
        }

        /// The layout after palette expansion.
        func outputLayout(hasTransparency: Bool) -> PNGImage.Layout {
            switch colourType {
            case 2: .rgb
            case 3: hasTransparency ? .rgba : .rgb
            case 4: .grayAlpha
            case 6: .rgba
            default: .gray
            }
        }
    }

    /// Inflates the zlib stream `compressed`, which must produce exactly `expectedCount` bytes.
    ///
    /// The output grows as the stream produces it (a lying IHDR over a tiny stream never gets
    /// its declared buffer) and inflating stops at the first byte beyond `expectedCount`.
    private static func inflate(
        _ compressed: [UInt8], expectedCount: Int, invalid: (String) -> NyquistError
    ) throws -> [UInt8] {
        var stream = z_stream()
        let initialised = nyquist_inflate_init(&stream)
        guard initialised == Z_OK else {
            throw NyquistError(.io, "zlib could not start decompressing (status \(initialised))")
        }
        defer { inflateEnd(&stream) }
        var output: [UInt8] = []
        // Deflate rarely beats 8:1 on images; past that the array doubles as usual.
        output.reserveCapacity(min(expectedCount, max(compressed.count * 8, 1 << 16)))
        // One byte more than can be accepted, so that overlong data is seen in the last chunk.
        let chunkSize = min(expectedCount + 1, 1 << 18)
        var chunk = [UInt8](repeating: 0, count: chunkSize)
        // zlib counts input in 32-bit units, so feed it at most 1 GiB at a time.
        let step = 1 << 30
        var consumed = 0
        var status: Int32 = Z_OK
        try compressed.withUnsafeBufferPointer { source in
            try chunk.withUnsafeMutableBufferPointer { destination in
                while true {
                    if stream.avail_in == 0 && consumed < source.count {
                        let inputChunk = min(source.count - consumed, step)
                        stream.next_in = source.baseAddress.map { UnsafeMutablePointer(mutating: $0 + consumed) }
                        stream.avail_in = UInt32(inputChunk)
                        consumed += inputChunk
                    }
                    stream.next_out = destination.baseAddress
                    stream.avail_out = UInt32(chunkSize)
                    status = CZlib.inflate(&stream, Z_NO_FLUSH)
                    let produced = chunkSize - Int(stream.avail_out)
                    guard produced <= expectedCount - output.count else {
                        throw invalid("the image data holds more than the \(expectedCount) bytes IHDR's size needs")
                    }
                    output.append(contentsOf: UnsafeBufferPointer(rebasing: destination[0..<produced]))
                    if status != Z_OK { return }
                }
            }
        }
        switch status {
        case Z_STREAM_END:
            guard output.count == expectedCount else {
                throw invalid("the image data holds \(output.count) bytes but IHDR's size needs \(expectedCount)")
            }
        case Z_BUF_ERROR:
            throw invalid("the compressed image data ends early (truncated IDAT)")
        case Z_MEM_ERROR:
            throw NyquistError(.io, "PNG decompression ran out of memory")
        default:
            let detail = stream.msg.map { String(cString: $0) } ?? "status \(status)"
            throw invalid("corrupt compressed image data (zlib: \(detail))")
        }
        return output
    }

    /// Undoes the per-row filters in place; the filter-type bytes stay where they are.
    private static func unfilter(
        _ raw: inout [UInt8], rows: Int, rowBytes: Int, bytesPerPixel: Int, invalid: (String) -> NyquistError
    ) throws {
        var badRow: (row: Int, type: UInt8)?
        raw.withUnsafeMutableBufferPointer { data in
            for row in 0..<rows {
                let start = row * (rowBytes + 1)
                let type = data[start]
                let current = start + 1
                let above = current - (rowBytes + 1)
                for index in 0..<rowBytes {
                    let left = index >= bytesPerPixel ? data[current + index - bytesPerPixel] : 0
                    let up = row > 0 ? data[above + index] : 0
                    let upLeft = row > 0 && index >= bytesPerPixel ? data[above + index - bytesPerPixel] : 0
                    let predictor: UInt8
                    switch type {
                    case 0: predictor = 0
                    case 1: predictor = left
                    case 2: predictor = up
                    case 3: predictor = UInt8((Int(left) + Int(up)) / 2)
                    case 4: predictor = paeth(left, up, upLeft)
                    default:
                        badRow = (row, type)
                        return
                    }
                    data[current + index] &+= predictor
                }
            }
        }
        if let badRow {
            throw invalid("row \(badRow.row) has filter type \(badRow.type); PNG defines 0...4")
        }
    }

    fileprivate static func bigEndian32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8
            | UInt32(bytes[offset + 3])
    }

    private static func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16, uppercase: true) }
}
