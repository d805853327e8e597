import ArgumentParser
import Nyquist
import NyquistCore

/// Kernel microbenchmarks: each operator's forward and backward on named shapes, timed with
/// OpenCL profiling events (median of repeats after a warm-up), reported as GB/s and as a
/// fraction of a copy kernel's bandwidth measured on the same device in the same run.
@main
struct NyquistBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nyquist-bench",
        abstract: "Microbenchmarks of Nyquist's OpenCL kernels against the device's copy bandwidth.")

    @Option(help: "Device index or name substring (default: NYQUIST_DEVICE, else the first GPU, else any).")
    var device: String?

    @Option(help: "Timed repeats per measurement (the median is reported).")
    var repeats = 10

    @Option(help: "Batch size of the ResNet-like shapes.")
    var batch = 8

    @Flag(help: "One repeat on small shapes: checks that everything runs (used by tests).")
    var smoke = false

    @Option(help: "Also write the rows as JSON to this file.")
    var json: String?

    @Option(help: "Also write a Markdown report (device, settings, table) to this file, e.g. Benchmarks/results/<device>.md.")
    var markdown: String?

    @Flag(help: "Tune the window kernels' launch parameters on this device and save them (docs/kernels.md, Tuning).")
    var tune = false

    /// On CPU devices AdaptiveBlurPool runs only on shapes with at most this many channels.
    static let adaptiveCPUChannelLimit = 64

    func run() throws {
        let device = try device.map { try Device(named: $0) } ?? Device.default()
        let repeats = smoke ? 1 : max(repeats, 1)
        if tune {
            let (path, measurements) = try WindowTuning.tuneAndSave(on: device, repeats: repeats) { printProgress($0) }
            printProgress("")
            for row in measurements { print("\(row.key): \(row.parameters): \(fixed(row.seconds * 1e3, 3)) ms") }
            print("saved: \(path)")
            return
        }
        let shapes: [(name: String, shape: [Int])] =
            smoke
            ? [("tiny", [1, 3, 8, 8]), ("odd", [2, 3, 7, 9])]
            : [
                ("stem 64x112x112", [batch, 64, 112, 112]), ("stage 256x56x56", [batch, 256, 56, 56]),
                ("stage 512x28x28", [batch, 512, 28, 28]), ("stage 1024x14x14", [batch, 1024, 14, 14]),
                ("odd 64x111x111", [batch, 64, 111, 111]), ("tiny 64x2x2", [batch, 64, 2, 2]),
            ]
        print("device: \(device.info.name) (\(device.info.typeName), \(device.info.platformName), driver \(device.info.driverVersion))")
        var rows: [BenchmarkRow] = []
        var skipped: [String] = []
        let total = shapes.count * BenchmarkOperator.all.count * 2
        var done = 0
        for (name, shape) in shapes {
            let input = try DeviceTensor(HostTensor(shape: shape) { Float(($0 * 7919) % 1000) / 1000 }, on: device)
            let (copyBandwidth, copyMilliseconds) = try measureCopy(input, repeats: repeats)
            rows.append(
                BenchmarkRow(
                    operatorName: "copy", pass: "baseline", shape: name, dimensions: shape,
                    milliseconds: copyMilliseconds, gigabytesPerSecond: copyBandwidth, copyFraction: 1))
            for benchmarkOperator in BenchmarkOperator.all {
                for pass in ["forward", "backward"] {
                    done += 1
                    printProgress("[\(done)/\(total)] \(benchmarkOperator.name) \(pass) \(name)")
                    if benchmarkOperator.name == AdaptiveBlurPool2DConfiguration.operatorName, !device.info.isGPU,
                        shape[1] > Self.adaptiveCPUChannelLimit
                    {
                        skipped.append(
                            "\(benchmarkOperator.name) \(pass) \(name): more than \(Self.adaptiveCPUChannelLimit) channels "
                                + "on a CPU device (a compute-bound conv; minutes per call)")
                        continue
                    }
                    do {
                        rows.append(
                            try benchmarkOperator.measure(
                                pass: pass, input: input, shapeName: name, repeats: repeats,
                                copyBandwidth: copyBandwidth))
                    } catch let error as NyquistError {
                        // An operator that refuses a shape (reflect padding on a 2x2 map) is
                        // reported, not fatal: the other rows are still worth having.
                        skipped.append("\(benchmarkOperator.name) \(pass) \(name): \(error.message)")
                    }
                }
            }
        }
        printProgress("")
        print(BenchmarkRow.table(rows))
        for line in skipped { print("skipped: \(line)") }
        if let markdown {
            let header = """
                # nyquist-bench on \(device.info.name)

                Device: \(device.info.name) (\(device.info.typeName), \(device.info.platformName), driver \(device.info.driverVersion)), \(device.info.computeUnits) compute units.
                Median of \(repeats) repeats after one warm-up, kernel time from OpenCL profiling events.
                GB/s counts every input read once and every output written once; "of copy" divides by the
                bandwidth of Kernels/copy.cl on the same tensor in the same run. GFLOP/s (adaptive-blur-pool
                only) counts a multiply-add as 2 (formula in BenchmarkOperator.adaptive).

                ```
                """
            try writeText(header + "\n" + BenchmarkRow.table(rows) + "\n" + skipped.map { "skipped: \($0)\n" }.joined() + "```\n", to: markdown)
        }
        if let json {
            try writeText(BenchmarkRow.json(rows, device: device.info.name), to: json)
        }
    }

    /// The copy kernel's bandwidth in GB/s (bytes read + written) and its time in ms.
    private func measureCopy(_ input: DeviceTensor, repeats: Int) throws -> (Double, Double) {
        let output = try DeviceTensor(shape: input.shape, on: input.device)
        let seconds = try medianSeconds(device: input.device, repeats: repeats) {
            try input.device.copy(input, into: output)
        }
        return (Double(input.count * 8) / seconds / 1e9, seconds * 1e3)
    }
}
