import Foundation
import NyquistCore

/// The yardsticks measured on the device in the same run as the operators.
struct Baselines {
    /// Kernels/copy.cl on the current shape: bytes read + written per second, in GB/s.
    var copyGigabytesPerSecond: Double
    /// Kernels/peak.cl: multiply-adds per second counted as 2 FLOPs, in GFLOP/s (nil: not measured).
    var peakGigaflopsPerSecond: Double?
}

/// One line of the results table.
struct BenchmarkRow {
    let operatorName: String
    let pass: String
    let shape: String
    let dimensions: [Int]
    let milliseconds: Double
    /// Bytes a pass must move at the least: every input read once, every output written once.
    let bytes: Int
    /// Floating-point operations of the pass (a multiply-add counts 2), where counted.
    var flops: Double? = nil
    var copyBandwidth: Double
    var peakGigaflops: Double? = nil
    /// The CPU reference's forward on the same input, host clock.
    var referenceMilliseconds: Double? = nil
    /// Device memory one call allocates beyond what was alive before it (outputs, temporaries).
    var memoryBytes: Int? = nil
    /// Copy baseline rows only: every measurement taken (before and after the shape's rows); the
    /// row's time is the fastest.
    var baselineMilliseconds: [Double]? = nil

    var gigabytesPerSecond: Double { Double(bytes) / (milliseconds * 1e-3) / 1e9 }
    var copyFraction: Double { gigabytesPerSecond / copyBandwidth }
    var gigaflopsPerSecond: Double? { flops.map { $0 / (milliseconds * 1e-3) / 1e9 } }
    var peakFraction: Double? {
        guard let achieved = gigaflopsPerSecond, let peak = peakGigaflops, peak > 0 else { return nil }
        return achieved / peak
    }
    var speedUp: Double? { referenceMilliseconds.map { $0 / milliseconds } }

    static let header = [
        "op", "pass", "shape", "N", "ms", "MB", "GB/s", "of copy", "GFLOP/s", "of peak", "ref ms", "speed-up", "mem MB",
    ]

    var cells: [String] {
        [
            operatorName, pass, shape, "\(dimensions.first ?? 0)", fixed(milliseconds, 3), fixed(Double(bytes) / 1e6, 1),
            fixed(gigabytesPerSecond, 1), fixed(copyFraction * 100, 0) + "%",
            gigaflopsPerSecond.map { fixed($0, 1) } ?? "-", peakFraction.map { fixed($0 * 100, 0) + "%" } ?? "-",
            referenceMilliseconds.map { fixed($0, 1) } ?? "-", speedUp.map { fixed($0, 1) + "x" } ?? "-",
            memoryBytes.map { fixed(Double($0) / 1e6, 1) } ?? "-",
        ]
    }

    var json: String {
        "{\"op\": \(quoted(operatorName)), \"pass\": \(quoted(pass)), \"shape_name\": \(quoted(shape)), "
            + "\"shape\": \(dimensions), \"ms\": \(number(milliseconds)), \"bytes\": \(bytes), "
            + "\"gb_per_s\": \(number(gigabytesPerSecond)), \"copy_fraction\": \(number(copyFraction)), "
            + "\"flops\": \(optional(flops)), \"gflop_per_s\": \(optional(gigaflopsPerSecond)), "
            + "\"peak_fraction\": \(optional(peakFraction)), \"reference_ms\": \(optional(referenceMilliseconds)), "
            + "\"speed_up\": \(optional(speedUp)), \"device_peak_bytes\": \(memoryBytes.map(String.init) ?? "null")"
            + (baselineMilliseconds.map { ", \"measured_ms\": [\($0.map(number).joined(separator: ", "))]" } ?? "") + "}"
    }
}

/// First-call latency of one operator: host clock from opening the device to the first forward's
/// result, once with an empty disk cache and once with the cache that run filled.
struct StartupRow {
    let operatorName: String
    let dimensions: [Int]
    let coldMilliseconds: Double
    let warmMilliseconds: Double
    /// Programs compiled from source during the cold call.
    let coldBuilds: Int
    /// Programs loaded from the disk cache during the warm call (and any compiled anyway).
    let warmDiskHits: Int
    let warmBuilds: Int
    /// Host time of a second forward in the warm context: what remains without any build.
    let steadyMilliseconds: Double

    static let header = ["op", "shape", "cold ms", "warm ms", "steady ms", "cold builds", "warm disk hits", "warm builds"]

    var cells: [String] {
        [
            operatorName, dimensions.map(String.init).joined(separator: "x"), fixed(coldMilliseconds, 1),
            fixed(warmMilliseconds, 1), fixed(steadyMilliseconds, 1), "\(coldBuilds)", "\(warmDiskHits)", "\(warmBuilds)",
        ]
    }

    var json: String {
        "{\"op\": \(quoted(operatorName)), \"shape\": \(dimensions), \"cold_ms\": \(number(coldMilliseconds)), "
            + "\"warm_ms\": \(number(warmMilliseconds)), \"steady_ms\": \(number(steadyMilliseconds)), "
            + "\"cold_builds\": \(coldBuilds), \"warm_disk_hits\": \(warmDiskHits), \"warm_builds\": \(warmBuilds)}"
    }
}

/// Everything one run measured, and its renderings.
struct BenchmarkReport {
    var device: String
    var deviceLine: String
    var settings: String
    var copyRows: [BenchmarkRow] = []
    var peakGigaflops: Double?
    /// Every peak probe of the run (at its start and at its end); `peakGigaflops` is the best.
    var peakMeasurements: [Double] = []
    var peakDetail = ""
    var rows: [BenchmarkRow] = []
    var startup: [StartupRow] = []
    var skipped: [String] = []
    var referenceNote = ""

    var text: String {
        var parts: [String] = []
        if !copyRows.isEmpty || !rows.isEmpty {
            parts.append(alignedTable([BenchmarkRow.header] + (copyRows + rows).map(\.cells)).joined(separator: "\n"))
        }
        if let peakGigaflops {
            parts.append("peak: \(fixed(peakGigaflops, 1)) GFLOP/s multiply-add (\(peakDetail))\(peakRange)")
        }
        if !startup.isEmpty {
            parts.append(
                "start-up (host clock, includes program builds; not kernel time):\n"
                    + alignedTable([StartupRow.header] + startup.map(\.cells)).joined(separator: "\n"))
        }
        if !referenceNote.isEmpty { parts.append(referenceNote) }
        parts += skipped.map { "skipped: \($0)" }
        return parts.joined(separator: "\n") + "\n"
    }

    var json: String {
        "{\"device\": \(quoted(device)), \"device_line\": \(quoted(deviceLine)), \"settings\": \(quoted(settings)),\n"
            + "\"peak_gflop_per_s\": \(optional(peakGigaflops)), "
            + "\"peak_measured_gflop_per_s\": [\(peakMeasurements.map(number).joined(separator: ", "))],\n"
            + "\"copy\": [\n" + copyRows.map { "  " + $0.json }.joined(separator: ",\n") + "\n],\n"
            + "\"rows\": [\n" + rows.map { "  " + $0.json }.joined(separator: ",\n") + "\n],\n"
            + "\"startup\": [\n" + startup.map { "  " + $0.json }.joined(separator: ",\n") + "\n],\n"
            + "\"skipped\": [" + skipped.map(quoted).joined(separator: ", ") + "]}\n"
    }

    /// ", best of a, b GFLOP/s" when the run probed the peak more than once.
    private var peakRange: String {
        peakMeasurements.count > 1
            ? "; best of " + peakMeasurements.map { fixed($0, 1) }.joined(separator: " and ") + " GFLOP/s" : ""
    }

    var markdown: String {
        var text = "# nyquist-bench on \(device)\n\nDevice: \(deviceLine).\nSettings: \(settings).\n"
        if !copyRows.isEmpty || !rows.isEmpty {
            text += """

                Kernel times are the median of the repeats after a warm-up (one run, then more up to 0.1 s of
                kernel time), from OpenCL profiling events. MB and GB/s count every input read once and every
                output written once; "of copy" divides by the bandwidth of Kernels/copy.cl on the same shape in
                the same run, measured before and after the shape's rows (the faster of the two). GFLOP/s
                (adaptive-blur-pool only) counts a multiply-add as 2; "of peak" divides by Kernels/peak.cl's
                multiply-add rate, the better of a probe at the start and one at the end of the run. "ref ms"
                is the CPU reference's forward (host clock), "speed-up" = ref ms / ms. "mem MB" is
                the device memory one call allocates beyond what was alive before it (outputs and temporaries,
                from the context's allocation high-water mark).


                """ + markdownTable([BenchmarkRow.header] + (copyRows + rows).map(\.cells)) + "\n"
        }
        if let peakGigaflops {
            text += "\nMeasured multiply-add peak: **\(fixed(peakGigaflops, 1)) GFLOP/s** (\(peakDetail))\(peakRange).\n"
        }
        if !startup.isEmpty {
            text += """

                ## First-call latency

                Host clock (not profiling events), from building the layer (device context already open,
                input already uploaded) to the first forward's result on the host: program builds or
                disk-cache loads, table uploads and the kernel itself. Cold: a fresh context on an empty
                program cache; warm: a fresh context on the disk cache that the cold call filled; steady:
                a second forward in the warm context.


                """ + markdownTable([StartupRow.header] + startup.map(\.cells)) + "\n"
        }
        if !referenceNote.isEmpty { text += "\n" + referenceNote + "\n" }
        if !skipped.isEmpty { text += "\n" + skipped.map { "- skipped: \($0)" }.joined(separator: "\n") + "\n" }
        return text
    }
}

func alignedTable(_ rows: [[String]]) -> [String] {
    guard let first = rows.first else { return [] }
    var widths = [Int](repeating: 0, count: first.count)
    for row in rows { for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) } }
    return rows.map { row in
        row.enumerated().map { index, cell in
            cell + String(repeating: " ", count: widths[index] - cell.count)
        }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
    }
}

func markdownTable(_ rows: [[String]]) -> String {
    guard let first = rows.first else { return "" }
    var lines = ["| " + first.joined(separator: " | ") + " |", "|" + first.map { _ in "---" }.joined(separator: "|") + "|"]
    lines += rows.dropFirst().map { "| " + $0.joined(separator: " | ") + " |" }
    return lines.joined(separator: "\n")
}

func fixed(_ value: Double, _ digits: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    return String(format: "%.\(digits)f", value)
}

private func number(_ value: Double) -> String {
    value.isFinite ? "\(value)" : "null"
}

private func optional(_ value: Double?) -> String {
    value.map(number) ?? "null"
}

func quoted(_ text: String) -> String {
    var escaped = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": escaped += "\\\""
        case "\\": escaped += "\\\\"
        case "\n": escaped += "\\n"
        case _ where scalar.value < 0x20: escaped += String(format: "\\u%04x", scalar.value)
        default: escaped.unicodeScalars.append(scalar)
        }
    }
    return escaped + "\""
}

/// Overwrites one progress line on stderr (only when stderr is a terminal, so that logs and
/// test harnesses get no escape codes).
func printProgress(_ text: String) {
    if isatty(STDERR_FILENO) != 0 {
        FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
    } else if !text.isEmpty {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}

func writeText(_ text: String, to path: String) throws {
    do {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    } catch {
        throw NyquistError(.io, "cannot write \(path): \(error.localizedDescription)")
    }
}
