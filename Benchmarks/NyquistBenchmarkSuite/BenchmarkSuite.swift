import ArgumentParser
import Foundation
import Nyquist
import NyquistCL
import NyquistCore

/// The command-line options of the benchmarks, shared by `nyquist-bench` and `nyquist bench`
/// so that both accept exactly the same invocations.
public struct BenchmarkOptions: ParsableArguments {
    /// Device index or name substring.
    @Option(help: "Device index or name substring (default: NYQUIST_DEVICE, else the first GPU, else any).")
    public var device: String?

    /// Timed repeats per measurement.
    @Option(help: "Timed repeats per measurement (the median is reported).")
    public var repeats = 10

    /// Comma-separated batch sizes.
    @Option(help: "Batch sizes, comma-separated (e.g. 8 or 8,32).")
    public var batch = "8,32"

    /// Comma-separated shape sets.
    @Option(
        help: """
            Shape sets, comma-separated: resnet (64x112x112, 256x56x56, 512x28x28, 1024x14x14), \
            odd (64x111x111, 64x7x7), tiny (64x2x2), or all; or explicit shapes NxCxHxW \
            (e.g. 1x64x56x56), which ignore --batch.
            """)
    public var shapes = "all"

    /// Comma-separated operator names.
    @Option(help: "Operators, comma-separated (e.g. max-pool,blur-pool), or all.")
    public var operators = "all"

    /// The CPU reference is timed only on inputs up to this many elements.
    @Option(help: "Time the CPU reference's forward on inputs of at most this many elements (0: never).")
    public var referenceLimit = 1 << 21

    /// First-call latency mode.
    @Flag(help: "Measure first-call latency (host clock, cold and warm disk cache) instead of kernel times.")
    public var startup = false

    /// Host-clock mode.
    @Flag(
        help: """
            Measure the host clock of whole calls (enqueue to clFinish, warm, median of at least 20) \
            for every operator and pass, next to an empty kernel's launch floor, instead of kernel times.
            """)
    public var host = false

    /// Server mode for side-by-side comparisons.
    @Flag(
        help: """
            Serve timing requests: one JSON request per line on stdin, one JSON answer per line on \
            stdout (host clock of whole calls and the last call's kernel-only time; used by \
            Benchmarks/compare_pytorch.py, described in docs/performance.md).
            """)
    public var serve = false

    /// Per-launch breakdown mode.
    @Flag(help: "Also print each measurement's kernel launches (median ms per kernel name) on stderr.")
    public var launches = false

    /// Quick check mode used by tests.
    @Flag(help: "One repeat on small shapes: checks that everything runs (used by tests).")
    public var smoke = false

    @Flag(
        help:
            "Tune the launch parameters of the window, polyphase, LiftPool and AdaptiveBlurPool kernels on this device and save them (docs/kernels.md, Tuning)."
    )
    public var tune = false

    /// JSON output path.
    @Option(help: "Also write the results as JSON to this file.")
    public var json: String?

    /// Markdown output path.
    @Option(help: "Also write a Markdown report to this file, e.g. Benchmarks/results/<device>.md.")
    public var markdown: String?

    /// Creates the options with their defaults (ArgumentParser fills them from the command line).
    public init() {}
}

/// Runs the benchmarks: kernel times of each operator's forward and backward on named shape sets,
/// against copy bandwidth and multiply-add peak measured in the same run, or (`--startup`) the
/// first-call latency with a cold and a warm program cache.
public enum BenchmarkSuite {
    /// On CPU devices AdaptiveBlurPool runs only on shapes with at most this many channels.
    static let adaptiveCPUChannelLimit = 64

    /// The shape sets by name, per batch size.
    static func shapeSet(_ name: String, batch: Int) -> [(name: String, shape: [Int])] {
        switch name {
        case "resnet":
            return [
                ("resnet 64x112x112", [batch, 64, 112, 112]), ("resnet 256x56x56", [batch, 256, 56, 56]),
                ("resnet 512x28x28", [batch, 512, 28, 28]), ("resnet 1024x14x14", [batch, 1024, 14, 14]),
            ]
        case "odd": return [("odd 64x111x111", [batch, 64, 111, 111]), ("odd 64x7x7", [batch, 64, 7, 7])]
        case "tiny": return [("tiny 64x2x2", [batch, 64, 2, 2])]
        default: return []
        }
    }

    static let shapeSetNames = ["resnet", "odd", "tiny"]

    /// Runs what `options` asks for and prints the table on stdout (progress on stderr).
    public static func run(_ options: BenchmarkOptions) throws {
        let selection = try Selection(options)
        let openCLDevice = try OpenCLDevice.select(options.device)
        let device = try Device(openCLDevice)
        if options.serve {
            // stdout carries the protocol alone: no device line, no table.
            guard !options.host, !options.startup, !options.tune, !options.smoke, options.json == nil, options.markdown == nil
            else {
                throw NyquistError(
                    .invalidConfiguration, "--serve takes only --device; the requests choose operators, shapes and repeats")
            }
            ServeBenchmark.run(device: device, write: ServeBenchmark.writeLine)
            return
        }
        if options.tune {
            let (path, measurements) = try KernelTuner.tuneAndSave(
                on: device, repeats: options.smoke ? 1 : max(options.repeats, 1), progress: printProgress)
            printProgress("")
            for row in measurements { print("\(row.key): \(row.knobs): \(fixed(row.seconds * 1e3, 3)) ms") }
            print("saved: \(path)")
            return
        }
        let info = device.info
        let deviceLine =
            "\(info.name) (\(info.typeName), \(info.platformName), driver \(info.driverVersion)), \(info.computeUnits) compute units"
        print("device: \(deviceLine)")
        let startupShape = options.smoke ? [1, 3, 8, 8] : [1, 64, 56, 56]
        let settings =
            options.startup
            ? "start-up latency on \(startupShape.map(String.init).joined(separator: "x")); operators "
                + selection.factories.map(\.name).joined(separator: ",") + "; POCL_KERNEL_CACHE="
                + (ProcessInfo.processInfo.environment["POCL_KERNEL_CACHE"] ?? "unset")
            : selection.description
        var report = BenchmarkReport(device: info.name, deviceLine: deviceLine, settings: settings)
        if options.host {
            if options.markdown != nil {
                throw NyquistError(.invalidConfiguration, "--markdown is not available with --host; use --json")
            }
            let rows = try HostBenchmark.measure(device: device, selection: selection)
            printProgress("")
            let settings = selection.description + "; host clock per call (enqueue to clFinish)"
            print(HostBenchmark.text(rows), terminator: "")
            if let json = options.json {
                try writeText(HostBenchmark.json(rows, device: info.name, settings: settings), to: json)
            }
            return
        }
        if options.startup {
            let shape = startupShape
            let (rows, skipped) = try StartupBenchmark.measure(
                on: openCLDevice, factories: selection.factories, shape: shape, progress: printProgress)
            report.startup = rows
            report.skipped = skipped
        } else {
            try measureKernels(device: device, selection: selection, report: &report)
        }
        printProgress("")
        print(report.text, terminator: "")
        if let markdown = options.markdown { try writeText(report.markdown, to: markdown) }
        if let json = options.json { try writeText(report.json, to: json) }
    }

    private static func measureKernels(device: Device, selection: Selection, report: inout BenchmarkReport) throws {
        let repeats = selection.repeats
        printProgress("peak probe")
        let peak = try PeakProbe.measure(device: device, repeats: repeats, smoke: selection.smoke)
        let total = selection.shapes.count * selection.factories.count * 2
        var done = 0
        var referenceShapes: [String] = []
        for (name, shape) in selection.shapes {
            let host = try HostTensor(shape: shape) { Float(($0 * 7919) % 1000) / 1000 }
            let input = try DeviceTensor(host, on: device)
            let copyBefore = try measureCopy(input, repeats: repeats)
            // Provisional: the rows' copy and peak are replaced below by the better of two
            // measurements each, once the shape's rows (and, for the peak, the run) are done.
            let baselines = Baselines(
                copyGigabytesPerSecond: copyBefore.gigabytesPerSecond, peakGigaflopsPerSecond: peak.gigaflops)
            let firstRow = report.rows.count
            let timeReference = host.count <= selection.referenceLimit
            if timeReference { referenceShapes.append("\(name) N=\(shape[0])") }
            for factory in selection.factories {
                for pass in ["forward", "backward"] {
                    done += 1
                    printProgress("[\(done)/\(total)] \(factory.name) \(pass) \(name) N=\(shape[0])")
                    if factory.name == AdaptiveBlurPool2DConfiguration.operatorName, !device.info.isGPU,
                        shape[1] > adaptiveCPUChannelLimit
                    {
                        report.skipped.append(
                            "\(factory.name) \(pass) \(name) N=\(shape[0]): more than \(adaptiveCPUChannelLimit) channels "
                                + "on a CPU device (a compute-bound conv; minutes per call)")
                        continue
                    }
                    do {
                        report.rows.append(
                            try factory.measure(
                                pass: pass, input: input, shapeName: name, repeats: repeats, baselines: baselines,
                                referenceInput: timeReference ? host : nil, referenceRepeats: min(repeats, 3),
                                launches: selection.launches))
                    } catch let error as NyquistError {
                        // An operator that refuses a shape (reflect padding on a 2x2 map) is
                        // reported, not fatal: the other rows are still worth having.
                        report.skipped.append("\(factory.name) \(pass) \(name) N=\(shape[0]): \(error.message)")
                    }
                }
            }
            // The roofline is what the device sustains at its best: a copy measured while the
            // machine was busy elsewhere (2x slower at times on a shared virtual machine) would
            // flatter every row of the shape, so the copy runs again after the rows and the
            // faster of the two is the yardstick.
            printProgress("copy baseline \(name) N=\(shape[0])")
            let copyAfter = try measureCopy(input, repeats: repeats)
            let copy = copyAfter.milliseconds < copyBefore.milliseconds ? copyAfter : copyBefore
            for index in firstRow..<report.rows.count { report.rows[index].copyBandwidth = copy.gigabytesPerSecond }
            var copyRow = BenchmarkRow(
                operatorName: "copy", pass: "baseline", shape: name, dimensions: shape, milliseconds: copy.milliseconds,
                bytes: input.count * 8, copyBandwidth: copy.gigabytesPerSecond)
            copyRow.baselineMilliseconds = [copyBefore.milliseconds, copyAfter.milliseconds]
            report.copyRows.append(copyRow)
        }
        // The same for the peak: probed at the start and at the end of the run, the better one.
        printProgress("peak probe again")
        let peakAfter = try PeakProbe.measure(device: device, repeats: repeats, smoke: selection.smoke)
        let bestPeak = max(peak.gigaflops, peakAfter.gigaflops)
        report.peakGigaflops = bestPeak
        report.peakMeasurements = [peak.gigaflops, peakAfter.gigaflops]
        report.peakDetail = (peakAfter.gigaflops > peak.gigaflops ? peakAfter : peak).detail
        for index in report.rows.indices where report.rows[index].peakGigaflops != nil {
            report.rows[index].peakGigaflops = bestPeak
        }
        report.referenceNote =
            referenceShapes.isEmpty
            ? "CPU reference not timed (no input of at most \(selection.referenceLimit) elements)."
            : "CPU reference (forward, host clock, median of \(min(repeats, 3))) timed on inputs of at most "
                + "\(selection.referenceLimit) elements: " + referenceShapes.joined(separator: ", ") + "."
    }

    /// The copy kernel's bandwidth in GB/s (bytes read + written) and its time in ms.
    private static func measureCopy(_ input: DeviceTensor, repeats: Int) throws
        -> (gigabytesPerSecond: Double, milliseconds: Double)
    {
        let output = try DeviceTensor(shape: input.shape, on: input.device)
        let seconds = try medianSeconds(device: input.device, repeats: repeats) {
            try input.device.copy(input, into: output)
        }
        return (Double(input.count * 8) / seconds / 1e9, seconds * 1e3)
    }
}

/// The parsed and checked choice of shapes, operators and repeats.
struct Selection: CustomStringConvertible {
    let shapes: [(name: String, shape: [Int])]
    let factories: [BenchmarkOperator.Factory]
    let repeats: Int
    let smoke: Bool
    let launches: Bool
    let referenceLimit: Int
    let batches: [Int]
    let shapeSets: [String]

    init(_ options: BenchmarkOptions) throws {
        smoke = options.smoke
        launches = options.launches
        repeats = options.smoke ? 1 : max(options.repeats, 1)
        referenceLimit = max(options.referenceLimit, 0)
        let known = BenchmarkOperator.all
        let requested = Self.list(options.operators)
        if requested == ["all"] {
            factories = known
        } else {
            factories = try requested.map { name in
                guard let factory = known.first(where: { $0.name == name }) else {
                    throw NyquistError(
                        .invalidConfiguration,
                        "unknown operator \"\(name)\" in --operators; choose from " + known.map(\.name).joined(separator: ", "))
                }
                return factory
            }
        }
        guard !factories.isEmpty else { throw NyquistError(.invalidConfiguration, "--operators names no operator") }
        batches = try Self.list(options.batch).map { text in
            guard let value = Int(text), value > 0, value <= 1024 else {
                throw NyquistError(.invalidConfiguration, "--batch wants positive integers up to 1024, got \"\(text)\"")
            }
            return value
        }
        guard !batches.isEmpty else { throw NyquistError(.invalidConfiguration, "--batch names no batch size") }
        let requestedSets = Self.list(options.shapes)
        shapeSets = requestedSets == ["all"] ? BenchmarkSuite.shapeSetNames : requestedSets
        for set in shapeSets where !BenchmarkSuite.shapeSetNames.contains(set) && Self.explicitShape(set) == nil {
            throw NyquistError(
                .invalidConfiguration,
                "unknown shape set \"\(set)\" in --shapes; choose from " + BenchmarkSuite.shapeSetNames.joined(separator: ", ")
                    + ", all, or a shape NxCxHxW")
        }
        guard !shapeSets.isEmpty else { throw NyquistError(.invalidConfiguration, "--shapes names no shape set") }
        if options.smoke {
            shapes = [("smoke 3x8x8", [1, 3, 8, 8]), ("smoke 3x7x9", [2, 3, 7, 9])]
        } else {
            let sets = shapeSets
            let batchSizes = batches
            shapes = sets.flatMap { set -> [(name: String, shape: [Int])] in
                if let shape = Self.explicitShape(set) { return [(set, shape)] }
                return batchSizes.flatMap { BenchmarkSuite.shapeSet(set, batch: $0) }
            }
        }
    }

    var description: String {
        let shapeText = smoke ? "smoke shapes (1x3x8x8, 2x3x7x9)" : "shape sets \(shapeSets.joined(separator: ",")) at batch \(batches.map(String.init).joined(separator: ","))"
        return "\(shapeText); operators \(factories.map(\.name).joined(separator: ",")); \(repeats) repeat(s)"
    }

    /// "1x64x56x56" as [1, 64, 56, 56]: four sizes of 1 to 4096 each; nil for anything else.
    static func explicitShape(_ text: String) -> [Int]? {
        let sizes = text.split(separator: "x", omittingEmptySubsequences: false).map { Int($0) }
        guard sizes.count == 4, sizes.allSatisfy({ ($0 ?? 0) >= 1 && ($0 ?? 0) <= 4096 }) else { return nil }
        return sizes.compactMap { $0 }
    }

    private static func list(_ text: String) -> [String] {
        text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }.filter { !$0.isEmpty }
    }
}
