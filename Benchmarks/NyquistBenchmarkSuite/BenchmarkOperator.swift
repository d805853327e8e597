import Foundation
import Nyquist
import NyquistCore
import NyquistReference

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
    /// The CPU reference's forward with the same configuration and parameters (timed with the
    /// host clock, for the speed-up column).
    var reference: ((HostTensor) throws -> Void)? = nil

    static func make<Layer: PoolingLayer>(
        _ layer: Layer, backwardReadsInput: Bool, reference: @escaping (HostTensor) throws -> Void
    ) -> BenchmarkOperator {
        BenchmarkOperator(
            name: Layer.Configuration.operatorName, forward: { try layer($0) },
            training: { try layer.forwardTraining($0) },
            backward: { gradOutput, saved in
                guard let saved = saved as? SavedForBackward else {
                    throw NyquistError(.invalidConfiguration, "benchmark: saved state of another operator")
                }
                return try layer.backward(gradOutput, saved).input
            },
            backwardReadsInput: backwardReadsInput, reference: reference)
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
            backwardReadsInput: true, forwardOutputs: 5,
            reference: { input in
                _ = try Reference.liftDownPool2D(input, LiftPoolParameters<Float>(pool.configuration), pool.configuration)
            })
    }

    /// LiftUpPool2D (K = 5), the inverse of LiftDownPool2D: the benchmark shape is the map it
    /// reconstructs. The bands come from a LiftDownPool2D of the input, computed once per input
    /// outside the timed passes, so the bytes are the four bands read (as many elements as the
    /// map) plus the map written. Backward reads the gradient of the map and the saved bands and
    /// writes the four band gradients (the LL gradient is returned). No CPU reference column:
    /// its forward would need the bands on the host, computed by another operator.
    static func liftUpPool(channels: Int, device: Device) throws -> BenchmarkOperator {
        let down = try LiftDownPool2D(channels: channels, on: device)
        let up = LiftUpPool2D(inverting: down)
        let box = LiftUpBox()
        func bands(of input: DeviceTensor) throws -> LiftDownPool2DOutput {
            if let cached = box.bands, box.input === input.buffer { return cached }
            let computed = try down(input)
            try device.synchronize()
            box.input = input.buffer
            box.bands = computed
            return computed
        }
        return BenchmarkOperator(
            name: "lift-up-pool",
            forward: { input in try up(try bands(of: input), height: input.shape[2], width: input.shape[3]) },
            training: { input in
                let b = try bands(of: input)
                let (output, saved) = try up.forwardTraining(
                    ll: b.ll, lh: b.lh, hl: b.hl, hh: b.hh, height: input.shape[2], width: input.shape[3])
                box.saved = saved
                return (output, SavedForBackward(input: input))
            },
            backward: { gradOutput, _ in
                guard let saved = box.saved else {
                    throw NyquistError(.invalidConfiguration, "lift-up-pool benchmark: backward before the training forward")
                }
                return try up.backward(saved, gradOutput: gradOutput).bands[0]
            },
            backwardReadsInput: true)
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
            },
            reference: { input in
                _ = try Reference.adaptiveBlurPool2D(input, parameters: layer.parameters, configuration)
            })
    }

    /// The operators with the options ResNet-style networks use; channels are filled per shape.
    static var all: [Factory] {
        [
            Factory(name: "max-pool") { _, _ in
                let layer = try MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
                return make(layer, backwardReadsInput: true) { _ = try Reference.maxPool2D($0, layer.configuration) }
            },
            Factory(name: "avg-pool") { _, _ in
                let layer = try AvgPool2D(kernelSize: 2)
                return make(layer, backwardReadsInput: false) { _ = try Reference.avgPool2D($0, layer.configuration) }
            },
            Factory(name: "blur-pool") { channels, _ in
                let layer = try BlurPool2D(channels: channels)
                return make(layer, backwardReadsInput: false) { _ = try Reference.blurPool2D($0, layer.configuration) }
            },
            Factory(name: "max-blur-pool") { channels, _ in
                let layer = try MaxBlurPool2D(channels: channels)
                return make(layer, backwardReadsInput: true) { _ = try Reference.maxBlurPool2D($0, layer.configuration) }
            },
            // Backward through the protocol's training forward saves no indices, so it re-chooses
            // the phases from the input.
            Factory(name: "aps-pool") { channels, _ in
                let layer = try APSPool2D(channels: channels)
                return make(layer, backwardReadsInput: true) { _ = try Reference.apsPool2D($0, layer.configuration) }
            },
            Factory(name: "tips-pool") { channels, _ in
                let layer = try TIPSPool2D(channels: channels)
                return make(layer, backwardReadsInput: true) {
                    _ = try Reference.tipsPool2D($0, layer.configuration, parameters: layer.parameters)
                }
            },
            Factory(name: "lift-down-pool") { channels, device in try liftDownPool(channels: channels, device: device) },
            Factory(name: "lift-up-pool") { channels, device in try liftUpPool(channels: channels, device: device) },
            Factory(name: "adaptive-blur-pool") { channels, device in try adaptive(channels: channels, on: device) },
        ]
    }

    struct Factory {
        let name: String
        let build: (_ channels: Int, _ device: Device) throws -> BenchmarkOperator

        /// Times one pass on `input`; with `referenceInput` also the CPU reference's forward on
        /// the same values (host clock, median of `referenceRepeats`).
        func measure(
            pass: String, input: DeviceTensor, shapeName: String, repeats: Int, baselines: Baselines,
            referenceInput: HostTensor?, referenceRepeats: Int, launches: Bool = false
        ) throws -> BenchmarkRow {
            let benchmarkOperator = try build(input.shape[1], input.device)
            let device = input.device
            let output = try benchmarkOperator.forward(input)
            let seconds: Double
            let bytes: Int
            var referenceMilliseconds: Double? = nil
            let memoryBytes: Int
            if pass == "forward" {
                seconds = try medianSeconds(device: device, repeats: repeats) { _ = try benchmarkOperator.forward(input) }
                if launches {
                    try printLaunches("\(name) forward \(shapeName)", device: device, repeats: repeats) {
                        _ = try benchmarkOperator.forward(input)
                    }
                }
                memoryBytes = try peakExtraBytes(device) { _ = try benchmarkOperator.forward(input) }
                bytes = (input.count + benchmarkOperator.forwardOutputs * output.count) * 4
                if let referenceInput, let reference = benchmarkOperator.reference {
                    var times: [Double] = []
                    for _ in 0..<max(referenceRepeats, 1) { times.append(try hostSeconds { try reference(referenceInput) }) }
                    referenceMilliseconds = median(times) * 1e3
                }
            } else {
                let (trainingOutput, saved) = try benchmarkOperator.training(input)
                let gradOutput = try DeviceTensor(shape: trainingOutput.shape, on: device)
                try device.context.fill(gradOutput.buffer, with: 1)
                seconds = try medianSeconds(device: device, repeats: repeats) {
                    _ = try benchmarkOperator.backward(gradOutput, saved)
                }
                if launches {
                    try printLaunches("\(name) backward \(shapeName)", device: device, repeats: repeats) {
                        _ = try benchmarkOperator.backward(gradOutput, saved)
                    }
                }
                memoryBytes = try peakExtraBytes(device) { _ = try benchmarkOperator.backward(gradOutput, saved) }
                bytes = (output.count + input.count + (benchmarkOperator.backwardReadsInput ? input.count : 0)) * 4
            }
            let flops = benchmarkOperator.flops.map { $0(input.shape, output.shape, pass) }
            return BenchmarkRow(
                operatorName: name, pass: pass, shape: shapeName, dimensions: input.shape, milliseconds: seconds * 1e3,
                bytes: bytes, flops: flops, copyBandwidth: baselines.copyGigabytesPerSecond,
                peakGigaflops: baselines.peakGigaflopsPerSecond, referenceMilliseconds: referenceMilliseconds,
                memoryBytes: memoryBytes)
        }
    }
}

/// Holds LiftDownPool2D's saved state between the benchmark's training and backward closures.
final class LiftSavedBox {
    var saved: LiftDownPool2DSaved?
}

/// Holds LiftUpPool2D's bands (per input buffer) and saved state between the benchmark's closures.
final class LiftUpBox {
    var input: AnyObject?
    var bands: LiftDownPool2DOutput?
    var saved: LiftUpPool2DSaved?
}

/// Median kernel time of `body` over `repeats` runs, from profiling events, after a warm-up: one
/// run (which builds programs and padding tables), then more until they add up to 0.1 s of
/// kernel time or 20 runs. The first calls on a new large shape in a process are transiently
/// slow on PoCL: AvgPool backward on 8x64x111x111 measured first took a median of 10.1 ms over
/// 5 repeats after one warm-up run, and 1.97 ms over 25 (the same kernel on 64x112x112
/// right after it: 1.8-2.4 ms). Layers in a training loop run in that steady state.
func medianSeconds(device: Device, repeats: Int, _ body: () throws -> Void) throws -> Double {
    _ = try device.measure(body)
    var warmUpSeconds = 0.0
    for _ in 0..<20 where warmUpSeconds < 0.1 {
        warmUpSeconds += try device.measure(body).kernelSeconds
    }
    var times: [Double] = []
    for _ in 0..<repeats {
        times.append(try device.measure(body).kernelSeconds)
    }
    return max(median(times), 1e-9)
}

/// Prints on stderr, for `repeats` runs of `body`, each launch's median kernel time by launch
/// position (kernel name, global order), so a layer's time splits into its interior, border
/// and temporary passes.
func printLaunches(_ title: String, device: Device, repeats: Int, _ body: () throws -> Void) throws {
    var runs: [[(kernel: String, nanoseconds: UInt64)]] = []
    for _ in 0..<max(repeats, 1) { runs.append(try device.context.measureLaunches(body).launches) }
    guard let first = runs.first, runs.allSatisfy({ $0.map(\.kernel) == first.map(\.kernel) }) else { return }
    let medians = first.indices.map { index in median(runs.map { Double($0[index].nanoseconds) * 1e-6 }) }
    let parts = zip(first, medians).map { "\($0.0.kernel) \(fixed($0.1, 3))" }
    let total = medians.reduce(0, +)
    FileHandle.standardError.write(
        Data("\n  \(title): \(fixed(total, 3)) ms = \(parts.joined(separator: " + "))\n".utf8))
}

/// Device memory that one call of `body` allocates on top of what is already alive (its outputs
/// and temporaries), from the context's high-water mark; caches filled by earlier calls (padding
/// tables, programs) are not counted because `body` has run before.
func peakExtraBytes(_ device: Device, _ body: () throws -> Void) throws -> Int {
    try device.synchronize()
    device.context.resetPeakLiveBytes()
    let before = device.context.statistics.liveBytes
    try body()
    try device.synchronize()
    return device.context.statistics.peakLiveBytes - before
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}

/// Host wall-clock seconds of `body` (for the CPU reference and start-up latency, which have no
/// profiling events).
func hostSeconds(_ body: () throws -> Void) rethrows -> Double {
    let clock = ContinuousClock()
    let start = clock.now
    try body()
    let elapsed = start.duration(to: clock.now)
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
}
