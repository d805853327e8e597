import ArgumentParser
import NyquistBenchmarkSuite

/// `nyquist bench`: the same benchmarks as `nyquist-bench`, with the same options.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmark the kernels (same code and options as nyquist-bench).",
        discussion: """
            Times each operator's forward and backward with OpenCL profiling events and compares \
            them with the copy bandwidth and multiply-add peak measured in the same run; \
            --startup measures first-call latency with a cold and a warm program cache instead. \
            See docs/performance.md.
            """)

    @OptionGroup var options: BenchmarkOptions

    func run() throws {
        try BenchmarkSuite.run(options)
    }
}
