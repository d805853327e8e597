// libFuzzer entry point for the NPY decoder (see Fuzz/README.md). Built with swiftc, not SwiftPM.
import NyquistCore

/// A budget far below libFuzzer's 2 GiB RSS limit: a decoder that honours its budget cannot
/// run the fuzzer out of memory, so an out-of-memory report is a real bug.
private let limits = HostLimits(memoryBudget: 64 << 20, pngDecodeBudget: 64 << 20)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNPY(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let tensor = try? NPY.decode(bytes, limits: limits) {
        // What decodes must survive a round trip: encoding is the other half of the format.
        _ = try? NPY.decode(NPY.encode(tensor), limits: limits)
    }
    return 0
}
