// libFuzzer entry point for the PNG decoder (see Fuzz/README.md).
import NyquistCore
import NyquistImage

/// Budgets far below libFuzzer's 2 GiB RSS limit (see NPYFuzz.swift).
private let limits = HostLimits(memoryBudget: 64 << 20, pngDecodeBudget: 16 << 20)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPNG(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let image = try? PNG.decode(bytes, limits: limits) {
        _ = try? image.tensor(limits: limits)
    }
    return 0
}
