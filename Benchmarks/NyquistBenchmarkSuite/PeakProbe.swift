import Nyquist
import NyquistCL
import NyquistKernels

/// Measures the device's multiply-add rate with Kernels/peak.cl, in both vector widths; the
/// better one is the "peak" that compute-bound rows are compared with.
enum PeakProbe {
    /// Best GFLOP/s over the variants and a description of how it was obtained.
    static func measure(device: Device, repeats: Int, smoke: Bool) throws -> (gigaflops: Double, detail: String) {
        let source = try splicedSource("peak.cl")
        let chains = 8
        // Enough work items to fill every compute unit (a GPU needs far more in flight than a
        // CPU thread pool) and enough iterations that launch overhead is noise.
        let workItems = smoke ? 64 : device.info.computeUnits * (device.info.isGPU ? 2048 : 256)
        let iterations = smoke ? 16 : 1024
        let output = try device.context.makeBuffer(byteCount: workItems * 4)
        var best: (gigaflops: Double, width: Int) = (0, 0)
        for width in [4, 8] {
            let program = try device.context.program(
                source: source, options: "-cl-std=CL1.2 -DVECTOR_WIDTH=\(width) -DCHAINS=\(chains)")
            let seconds = try medianSeconds(device: device, repeats: smoke ? 1 : min(max(repeats, 1), 5)) {
                try device.context.dispatch(
                    "peak_multiply_add", in: program,
                    arguments: [.buffer(output), .int(iterations), .float(0.999), .float(0.001)], global: [workItems])
            }
            let flops = 2.0 * Double(width * chains * iterations) * Double(workItems)
            let gigaflops = flops / seconds / 1e9
            if gigaflops > best.gigaflops { best = (gigaflops, width) }
        }
        // Read back so that a kernel that silently did nothing (NaN, zeros) is noticed.
        let values = try device.context.read(output, count: min(workItems, 4))
        guard values.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw OpenCLError(call: "peak_multiply_add", code: 0, detail: "peak probe produced \(values)")
        }
        return (
            best.gigaflops,
            "Kernels/peak.cl, float\(best.width), \(chains) chains, \(workItems) work items x \(iterations) iterations"
        )
    }
}

/// An embedded kernel file with `#include "x"` lines replaced by the included file (what the
/// library does internally for the operators' programs).
func splicedSource(_ file: String) throws -> String {
    guard let text = KernelSources.files[file] else {
        throw OpenCLError(call: "loadKernelSource", code: 0, detail: "no embedded kernel file \(file)")
    }
    var lines: [String] = []
    for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        let trimmed = line.drop { $0 == " " }
        if trimmed.hasPrefix("#include \""), let name = trimmed.split(separator: "\"").dropFirst().first,
            let included = KernelSources.files[String(name)]
        {
            lines.append(included)
        } else {
            lines.append(String(line))
        }
    }
    return lines.joined(separator: "\n")
}
