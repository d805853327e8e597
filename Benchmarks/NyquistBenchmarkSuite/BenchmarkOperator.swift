import Nyquist
import NyquistCore

import Foundation

/// One benchmarked operator: how to run its passes and how many bytes each pass must move at
/// the least (every input read once, every output written once).
struct BenchmarkOperator {
    let name: String
    let forward: (DeviceTensor) throws -> DeviceTensor
    /// The training forward; what it saves is opaque to the benchmark and handed to `backward`.
    let training: (DeviceTensor) throws -> (DeviceTensor, Any)
    let backward: (DeviceTensor, Any) throws -> DeviceTensor
    /// Whether backward reads the saved input (max-based operators re-find their maxima).
    let backwardReadsInput: Bool
    /// How many output-sized tensors the forward writes (LiftDownPool: the output and 4 bands).
    var forwardOutputs = 1
    /// Floating-point operations of a pass (input shape, output shape, pass), for operators whose
    /// cost is compute rather than memory (a multiply-add counts 2); nil for the pooling baselines.
    var flops: (([Int], [Int], String) -> Double)? = nil

    static func make<Layer: PoolingLayer>(_ layer: Layer, backwardReadsInput: Bool) -> BenchmarkOperator {
        BenchmarkOperator(
            name: Layer.Configuration.operatorName, forward: { try layer($0) },
            training: { try layer.forwardTraining($0) },
            backward: { gradOutput, saved in
                guard let saved = saved as? SavedForBackward else {
                    throw NyquistError(.invalidConfiguration, "benchmark: saved state of another operator")
                }
                return try layer.backward(gradOutput, saved).input
            },
            backwardReadsInput: backwardReadsInput)
    }

    /// LiftDownPool2D (K = 5): forward writes the output and the four bands; backward takes the
    /// gradient of the output and the regulariser loss and reads the saved input and bands.
    static func liftDownPool(channels: Int, device: Device) throws -> BenchmarkOperator {
        let pool = try LiftDownPool2D(channels: channels, on: device)
        let box = LiftSavedBox()
        return BenchmarkOperator(
            name: LiftPoolConfiguration.operatorName, forward: { try pool($0).output },
            training: { input in
                let (bands, _, saved) = try pool.forwardTraining(input)
                box.saved = saved
                return (bands.output, SavedForBackward(input: input))
            },
            backward: { gradOutput, _ in
                guard let saved = box.saved else {
                    throw NyquistError(.invalidConfiguration, "lift-down-pool benchmark: backward before the training forward")
                }
                return try pool.backward(saved, gradOutput: gradOutput).input
            },
            backwardReadsInput: true, forwardOutputs: 5)
    }

    /// AdaptiveBlurPool with its defaults (k 3, stride 2, G gcd(8, C), reflect, joint softmax)
    /// and Kaiming-initialised parameters. Forward is inference; backward is the training
    /// backward (input and parameter gradients). FLOPs: forward 2 N H' W' (G k^2 C k^2 + C k^2)
    /// (predictor at output positions, then filtering); backward 2 (2 N H' W' C k^2 + 2 N H W
    /// G k^2 C k^2) (filter-weight and tap gradients, then the full-resolution conv's weight and
    /// input gradients).
    static func adaptive(channels: Int, on device: Device) throws -> BenchmarkOperator {
        let layer = try AdaptiveBlurPool2D(channels: channels, on: device)
        let configuration = layer.configuration
        return BenchmarkOperator(
            name: AdaptiveBlurPool2DConfiguration.operatorName, forward: { try layer($0) },
            training: { input in
                let (output, _, saved) = try layer.forwardTraining(input)
                return (output, saved)
            },
            backward: { gradOutput, saved in
                guard let saved = saved as? AdaptiveSavedForBackward else {
                    throw NyquistError(.invalidConfiguration, "benchmark: saved state of another operator")
                }
                return try layer.backward(gradOutput, saved).input
            },
            backwardReadsInput: true,
            flops: { input, output, pass in
                let taps = Double(configuration.taps)
                let c = Double(configuration.channels)
                let p = Double(configuration.predictorChannels)
                let outputPositions = Double(output[0] * output[2] * output[3])
                let inputPositions = Double(input[0] * input[2] * input[3])
                if pass == "forward" { return 2 * outputPositions * (p * c * taps + c * taps) }
                return 2 * (2 * outputPositions * c * taps + 2 * inputPositions * p * c * taps)
            })
    }

    /// The operators with the options ResNet-style networks use; channels are filled per shape.
    static var all: [Factory] {
        [
            Factory(name: "max-pool") { _, _ in make(try MaxPool2D(kernelSize: 3, stride: 2, padding: 1), backwardReadsInput: true) },
            Factory(name: "avg-pool") { _, _ in make(try AvgPool2D(kernelSize: 2), backwardReadsInput: false) },
            Factory(name: "blur-pool") { channels, _ in make(try BlurPool2D(channels: channels), backwardReadsInput: false) },
            Factory(name: "max-blur-pool") { channels, _ in make(try MaxBlurPool2D(channels: channels), backwardReadsInput: true) },
            // Backward through the protocol's training forward saves no indices, so it re-chooses
            // the phases from the input.
            Factory(name: "aps-pool") { channels, _ in make(try APSPool2D(channels: channels), backwardReadsInput: true) },
            Factory(name: "tips-pool") { channels, _ in make(try TIPSPool2D(channels: channels), backwardReadsInput: true) },
            Factory(name: "lift-down-pool") { channels, device in try liftDownPool(channels: channels, device: device) },
            Factory(name: "adaptive-blur-pool") { channels, device in try adaptive(channels: channels, on: device) },
        ]
    }

    struct Factory {
        let name: String
        let build: (_ channels: Int, _ device: Device) throws -> BenchmarkOperator

        func measure(pass: String, input: DeviceTensor, shapeName: String, repeats: Int, copyBandwidth: Double) throws
            -> BenchmarkRow
        {
            let benchmarkOperator = try build(input.shape[1], input.device)
            let device = input.device
            let output = try benchmarkOperator.forward(input)
            let seconds: Double
            let bytes: Int
            if pass == "forward" {
                seconds = try medianSeconds(device: device, repeats: repeats) { _ = try benchmarkOperator.forward(input) }
                bytes = (input.count + benchmarkOperator.forwardOutputs * output.count) * 4
            } else {
                let (trainingOutput, saved) = try benchmarkOperator.training(input)
                let gradOutput = try DeviceTensor(shape: trainingOutput.shape, on: device)
                try device.context.fill(gradOutput.buffer, with: 1)
                seconds = try medianSeconds(device: device, repeats: repeats) {
                    _ = try benchmarkOperator.backward(gradOutput, saved)
                }
                bytes = (output.count + input.count + (benchmarkOperator.backwardReadsInput ? input.count : 0)) * 4
            }
            let bandwidth = Double(bytes) / seconds / 1e9
            let gigaflops = benchmarkOperator.flops.map { $0(input.shape, output.shape, pass) / seconds / 1e9 }
            return BenchmarkRow(
                operatorName: name, pass: pass, shape: shapeName, dimensions: input.shape, milliseconds: seconds * 1e3,
                gigabytesPerSecond: bandwidth, copyFraction: bandwidth / copyBandwidth, gigaflopsPerSecond: gigaflops)
        }
    }
}

/// Holds LiftDownPool2D's saved state between the benchmark's training and backward closures.
final class LiftSavedBox {
    var saved: LiftDownPool2DSaved?
}

/// Median kernel time of `body` over `repeats` runs after one warm-up run (which builds programs
/// and padding tables), from profiling events.
func medianSeconds(device: Device, repeats: Int, _ body: () throws -> Void) throws -> Double {
    _ = try device.measure(body)
    var times: [Double] = []
    for _ in 0..<repeats {
        times.append(try device.measure(body).kernelSeconds)
    }
    times.sort()
    return max(times[times.count / 2], 1e-9)
}

/// One line of the results table.
struct BenchmarkRow {
    let operatorName: String
    let pass: String
    let shape: String
    let dimensions: [Int]
    let milliseconds: Double
    let gigabytesPerSecond: Double
    let copyFraction: Double
    /// Achieved GFLOP/s, for operators with a FLOP count (nil: memory-bound baselines).
    var gigaflopsPerSecond: Double? = nil

    static func table(_ rows: [BenchmarkRow]) -> String {
        var lines = [
            pad("op", 20) + pad("pass", 10) + pad("shape", 20) + pad("N", 4) + pad("ms", 10) + pad("GB/s", 9) + pad("of copy", 9) + "GFLOP/s",
        ]
        for row in rows {
            lines.append(
                pad(row.operatorName, 20) + pad(row.pass, 10) + pad(row.shape, 20) + pad("\(row.dimensions[0])", 4)
                    + pad(fixed(row.milliseconds, 3), 10) + pad(fixed(row.gigabytesPerSecond, 1), 9)
                    + pad(fixed(row.copyFraction * 100, 0) + "%", 9) + (row.gigaflopsPerSecond.map { fixed($0, 1) } ?? "-"))
        }
        return lines.joined(separator: "\n")
    }

    static func json(_ rows: [BenchmarkRow], device: String) -> String {
        let entries = rows.map { row in
            "  {\"op\": \"\(row.operatorName)\", \"pass\": \"\(row.pass)\", \"shape\": \(row.dimensions), "
                + "\"ms\": \(row.milliseconds), \"gb_per_s\": \(row.gigabytesPerSecond), \"copy_fraction\": \(row.copyFraction), "
                + "\"gflop_per_s\": \(row.gigaflopsPerSecond.map { String($0) } ?? "null")}"
        }
        return "{\"device\": \"\(device)\", \"rows\": [\n" + entries.joined(separator: ",\n") + "\n]}\n"
    }
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}

func fixed(_ value: Double, _ digits: Int) -> String {
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (value * scale).rounded() / scale
    return digits == 0 ? String(Int(rounded)) : String(rounded)
}

/// Overwrites one progress line on stderr.
func printProgress(_ text: String) {
    FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
}

func writeText(_ text: String, to path: String) throws {
    do {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
    } catch {
        throw NyquistError(.io, "cannot write \(path): \(error.localizedDescription)")
    }
}
