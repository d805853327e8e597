import Foundation
import Nyquist
import NyquistCL
import NyquistCore

/// First-call latency with an empty and with a populated on-disk program cache.
enum StartupBenchmark {
    /// For each operator: a fresh context on an empty temporary cache directory (cold), then a
    /// fresh context on the same directory (warm), each timed from building the layer to the
    /// first forward's result with the host clock; then a second forward in the warm context.
    /// The device context and the input upload are outside the timed span: they do not depend
    /// on the operator or the cache.
    static func measure(
        on openCLDevice: OpenCLDevice, factories: [BenchmarkOperator.Factory], shape: [Int],
        progress: (String) -> Void
    ) throws -> (rows: [StartupRow], skipped: [String]) {
        let host = try HostTensor(shape: shape) { Float(($0 * 7919) % 1000) / 1000 }
        var rows: [StartupRow] = []
        var skipped: [String] = []
        for (position, factory) in factories.enumerated() {
            progress("[\(position + 1)/\(factories.count)] start-up \(factory.name)")
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("nyquist-startup-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: directory) }
            do {
                let cold = try firstCall(factory, host: host, device: openCLDevice, cache: .directory(directory))
                let warm = try firstCall(factory, host: host, device: openCLDevice, cache: .directory(directory))
                rows.append(
                    StartupRow(
                        operatorName: factory.name, dimensions: shape, coldMilliseconds: cold.seconds * 1e3,
                        warmMilliseconds: warm.seconds * 1e3, coldBuilds: cold.statistics.builds,
                        warmDiskHits: warm.statistics.diskHits, warmBuilds: warm.statistics.builds,
                        steadyMilliseconds: warm.steadySeconds * 1e3))
            } catch let error as NyquistError {
                skipped.append("start-up \(factory.name) \(shape): \(error.message)")
            }
        }
        return (rows, skipped)
    }

    private static func firstCall(
        _ factory: BenchmarkOperator.Factory, host: HostTensor, device openCLDevice: OpenCLDevice,
        cache: ProgramCacheLocation
    ) throws -> (seconds: Double, steadySeconds: Double, statistics: OpenCLContext.Statistics) {
        let device = try Device(openCLDevice, programCache: cache)
        let input = try DeviceTensor(host, on: device)
        try device.synchronize()
        var built: BenchmarkOperator? = nil
        let seconds = try hostSeconds {
            let benchmarkOperator = try factory.build(host.shape, device)
            _ = try benchmarkOperator.forward(benchmarkOperator.inputs(input)).output.toHost()
            built = benchmarkOperator
        }
        let statistics = device.context.statistics
        guard let benchmarkOperator = built else { return (seconds, 0, statistics) }
        let inputs = try benchmarkOperator.inputs(input)
        let steadySeconds = try hostSeconds { _ = try benchmarkOperator.forward(inputs).output.toHost() }
        return (seconds, steadySeconds, statistics)
    }
}
