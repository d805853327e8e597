import Foundation
import Nyquist
import NyquistCore

/// One row of `--host`: the host clock of whole calls (enqueue to clFinish) of one operator
/// pass, next to the launch floor measured on the same shape in the same run.
struct HostRow {
    let operatorName: String
    let pass: String
    let shape: String
    let dimensions: [Int]
    /// Median host time of one call, in ms.
    let milliseconds: Double
    /// First and third quartile of the timed calls, in ms (the spread).
    let quartiles: (Double, Double)
    /// Timed calls.
    let samples: Int
    /// An empty kernel's launch plus clFinish on the same device, measured just before the
    /// shape's rows (median, ms).
    let launchFloor: Double
    /// Kernel launches one call enqueues.
    let launches: Int
    /// Buffers one call allocates from the driver (0 once a caching allocator serves it).
    let driverAllocations: Int

    static let header = ["op", "pass", "shape", "host ms", "q1-q3 ms", "floor ms", "x floor", "launches", "allocs"]

    var cells: [String] {
        [
            operatorName, pass, shape, fixed(milliseconds, 3),
            "\(fixed(quartiles.0, 3))-\(fixed(quartiles.1, 3))", fixed(launchFloor, 3),
            fixed(milliseconds / max(launchFloor, 1e-9), 1), "\(launches)", "\(driverAllocations)",
        ]
    }

    var json: String {
        "{\"op\": \(quoted(operatorName)), \"pass\": \(quoted(pass)), \"shape_name\": \(quoted(shape)), \"shape\": \(dimensions), "
            + "\"host_ms\": \(milliseconds), \"host_q1_ms\": \(quartiles.0), \"host_q3_ms\": \(quartiles.1), "
            + "\"samples\": \(samples), \"launch_floor_ms\": \(launchFloor), \"launches\": \(launches), "
            + "\"driver_allocations\": \(driverAllocations)}"
    }
}

/// `--host`: what a caller waits for. Each operator pass on each shape is called until warm (at
/// least 5 calls and 0.2 s), then timed `repeats` times (at least 20) by the host clock around
/// the call and `clFinish`; the median and quartiles are reported. The launch floor (an empty
/// kernel's launch and `clFinish`) is measured the same way before each shape's rows.
enum HostBenchmark {
    static func measure(device: Device, selection: Selection) throws -> [HostRow] {
        let repeats = max(selection.repeats, selection.smoke ? 1 : 20)
        var rows: [HostRow] = []
        for (name, shape) in selection.shapes {
            printProgress("launch floor \(name)")
            let floor = try timed(device: device, repeats: repeats) { try device.enqueueEmptyKernel() }
            rows.append(
                HostRow(
                    operatorName: "launch-floor", pass: "empty", shape: name, dimensions: shape,
                    milliseconds: floor.median, quartiles: floor.quartiles, samples: repeats, launchFloor: floor.median,
                    launches: 1, driverAllocations: 0))
            let host = try HostTensor(shape: shape) { Float(($0 * 7919) % 1000) / 1000 }
            let input = try DeviceTensor(host, on: device)
            for factory in selection.factories {
                let benchmarkOperator: BenchmarkOperator
                let inputs: [String: DeviceTensor]
                do {
                    benchmarkOperator = try factory.build(shape, device)
                    inputs = try benchmarkOperator.inputs(input)
                } catch let error as NyquistError {
                    printProgress("skipped \(factory.name) \(name): \(error.message)")
                    continue
                }
                for pass in ["forward", "training", "backward"] {
                    printProgress("\(factory.name) \(pass) \(name)")
                    let call: () throws -> Void
                    do {
                        switch pass {
                        case "forward":
                            call = { _ = try benchmarkOperator.forward(inputs) }
                        case "training":
                            call = { _ = try benchmarkOperator.layer.forwardTraining(inputs) }
                        default:
                            let (output, saved) = try benchmarkOperator.layer.forwardTraining(inputs)
                            let gradOutput = try DeviceTensor(shape: output.output.shape, on: device)
                            try device.context.fill(gradOutput.buffer, with: 1)
                            call = { _ = try benchmarkOperator.layer.backward(gradOutput, saved) }
                        }
                        try call()
                    } catch let error as NyquistError {
                        // A shape an operator refuses (reflect padding on a 2x2 map) is skipped.
                        printProgress("skipped \(factory.name) \(pass) \(name): \(error.message)")
                        continue
                    }
                    try device.synchronize()
                    let before = device.context.statistics
                    try call()
                    try device.synchronize()
                    let after = device.context.statistics
                    let time = try timed(device: device, repeats: repeats, call)
                    rows.append(
                        HostRow(
                            operatorName: factory.name, pass: pass, shape: name, dimensions: shape,
                            milliseconds: time.median, quartiles: time.quartiles, samples: repeats,
                            launchFloor: floor.median, launches: after.launches - before.launches,
                            driverAllocations: after.allocations - before.allocations))
                }
            }
        }
        return rows
    }

    /// Median and quartiles (ms) of `repeats` host-clock timings of `body` followed by clFinish,
    /// after warm-up calls (at least 5, and until 0.2 s have passed or 200 calls were made).
    static func timed(device: Device, repeats: Int, _ body: () throws -> Void) throws
        -> (median: Double, quartiles: (Double, Double))
    {
        var warmUp = 0.0
        var calls = 0
        while calls < 5 || (warmUp < 0.2 && calls < 200) {
            warmUp += try hostSeconds {
                try body()
                try device.synchronize()
            }
            calls += 1
        }
        var times: [Double] = []
        for _ in 0..<max(repeats, 1) {
            times.append(
                try hostSeconds {
                    try body()
                    try device.synchronize()
                } * 1e3)
        }
        times.sort()
        return (times[times.count / 2], (times[times.count / 4], times[(times.count * 3) / 4]))
    }

    static func text(_ rows: [HostRow]) -> String {
        alignedTable([HostRow.header] + rows.map(\.cells)).joined(separator: "\n") + "\n"
    }

    static func json(_ rows: [HostRow], device: String, settings: String) -> String {
        "{\"device\": \(quoted(device)), \"settings\": \(quoted(settings)), \"mode\": \"host\",\n\"rows\": [\n"
            + rows.map { "  " + $0.json }.joined(separator: ",\n") + "\n]}\n"
    }
}
