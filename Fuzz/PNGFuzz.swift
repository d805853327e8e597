// libFuzzer entry point for the PNG decoder (see Fuzz/README.md).
import CZlib
import NyquistCore
import NyquistImage

/// Budgets far below libFuzzer's 2 GiB RSS limit (see NPYFuzz.swift).
private let limits = HostLimits(memoryBudget: 64 << 20, pngDecodeBudget: 16 << 20)

/// `bytes` with every chunk's CRC recomputed. Nearly every mutation breaks a CRC, and the
/// decoder rightly stops there; fixing them up lets mutated chunk contents reach IHDR, PLTE,
/// tRNS and IDAT handling. Half the inputs (by the last byte) are left as they are, so the
/// CRC check itself stays fuzzed.
private func withFixedCRCs(_ input: [UInt8]) -> [UInt8] {
    var bytes = input
    var position = 8
    while bytes.count - position >= 12 {
        let length = Int(bytes[position]) << 24 | Int(bytes[position + 1]) << 16 | Int(bytes[position + 2]) << 8
            | Int(bytes[position + 3])
        guard length <= bytes.count - position - 12 else { break }
        let crc = bytes.withUnsafeBufferPointer { buffer in
            UInt32(truncatingIfNeeded: crc32(0, buffer.baseAddress.map { $0 + position + 4 }, UInt32(length + 4)))
        }
        let end = position + 8 + length
        for index in 0..<4 { bytes[end + index] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * UInt32(index))) }
        position = end + 4
    }
    return bytes
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPNG(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let last = bytes.last, last & 1 == 0 { bytes = withFixedCRCs(bytes) }
    if let image = try? PNG.decode(bytes, limits: limits) {
        _ = try? image.tensor(limits: limits)
    }
    return 0
}
