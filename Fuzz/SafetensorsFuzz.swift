// libFuzzer entry point for the safetensors decoder (see Fuzz/README.md).
import NyquistCore

/// A budget far below libFuzzer's 2 GiB RSS limit (see NPYFuzz.swift).
private let limits = HostLimits(memoryBudget: 64 << 20, pngDecodeBudget: 64 << 20)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    if let contents = try? Safetensors.decodeContents(bytes, limits: limits) {
        _ = try? contents.parameters(expecting: contents.otherDTypes.keys, layer: "fuzz")
        if let encoded = try? Safetensors.encode(contents.tensors, metadata: contents.metadata) {
            _ = try? Safetensors.decodeContents(encoded, limits: limits)
        }
    }
    return 0
}
