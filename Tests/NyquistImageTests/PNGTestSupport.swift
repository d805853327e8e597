import Foundation
import NyquistCore

/// The folder of the committed fixture PNGs (made by Fixtures/make_fixtures.py).
let fixtureDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures", isDirectory: true)

/// Hand-built PNG files for the error tests, written here without NyquistImage or zlib so that
/// a bug in the codec cannot also be in the files that test it.
enum HandPNG {
    /// CRC-32 (polynomial 0xEDB88320, the one PNG and zlib use), bit by bit.
    static func crc(_ bytes: [UInt8]) -> UInt32 {
        var value: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            value ^= UInt32(byte)
            for _ in 0..<8 { value = value & 1 == 1 ? (value >> 1) ^ 0xEDB8_8320 : value >> 1 }
        }
        return ~value
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8),
            UInt8(truncatingIfNeeded: value)]
    }

    /// One chunk with a correct CRC (or `crcDelta` added to it).
    static func chunk(_ type: String, _ data: [UInt8], crcDelta: UInt32 = 0) -> [UInt8] {
        let body = Array(type.utf8) + data
        return bigEndian(UInt32(data.count)) + body + bigEndian(crc(body) &+ crcDelta)
    }

    /// IHDR's 13 bytes.
    static func header(width: UInt32, height: UInt32, depth: UInt8, colour: UInt8, interlace: UInt8 = 0) -> [UInt8] {
        bigEndian(width) + bigEndian(height) + [depth, colour, 0, 0, interlace]
    }

    /// A zlib stream of `raw` in stored (uncompressed) deflate blocks, with its Adler-32.
    static func zlibStored(_ raw: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        var offset = 0
        repeat {
            let count = min(65535, raw.count - offset)
            let final: UInt8 = offset + count == raw.count ? 1 : 0
            out += [final, UInt8(count & 0xFF), UInt8(count >> 8), UInt8(~count & 0xFF), UInt8((~count >> 8) & 0xFF)]
            out += raw[offset..<(offset + count)]
            offset += count
        } while offset < raw.count
        var a: UInt32 = 1
        var b: UInt32 = 0
        for byte in raw {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        return out + bigEndian(b << 16 | a)
    }

    static let signature: [UInt8] = [137, 80, 78, 71, 13, 10, 26, 10]

    /// A whole file: signature, IHDR, `beforeData` chunks, one IDAT of `raw` (filter bytes
    /// included), IEND.
    static func file(
        width: UInt32, height: UInt32, depth: UInt8 = 8, colour: UInt8 = 0, raw: [UInt8], beforeData: [UInt8] = []
    ) -> [UInt8] {
        signature + chunk("IHDR", header(width: width, height: height, depth: depth, colour: colour)) + beforeData
            + chunk("IDAT", zlibStored(raw)) + chunk("IEND", [])
    }
}
