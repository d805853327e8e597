import ArgumentParser
import NyquistBenchmarkSuite

/// Kernel microbenchmarks: each operator's forward and backward on named shapes, timed with
/// OpenCL profiling events (median of repeats after a warm-up), reported as GB/s and as a
/// fraction of a copy kernel's bandwidth measured on the same device in the same run. The logic
/// lives in NyquistBenchmarkSuite so that `nyquist bench` runs exactly the same code.
@main
struct NyquistBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nyquist-bench",
        abstract: "Microbenchmarks of Nyquist's OpenCL kernels against the device's copy bandwidth and multiply-add peak.")

    @OptionGroup var options: BenchmarkOptions

    func run() throws {
        try BenchmarkSuite.run(options)
    }
}
