import Foundation
import Nyquist
import NyquistCore
import NyquistOperators
import NyquistReference

/// One benchmarked operator: a layer from the registry with the options ResNet-style networks
/// use, how to make its inputs from the benchmark's input, and what a pass must move at the
/// least (every input read once, every output written once).
struct BenchmarkOperator {
    let name: String
    let layer: AnyLayer
    /// The layer's named inputs for a benchmark input (LiftUpPool: the bands of a LiftDownPool
    /// of it, computed once, outside the timed passes).
    let inputs: (DeviceTensor) throws -> [String: DeviceTensor]
    /// Whether backward reads the saved input (max-based operators re-find their maxima).
    let backwardReadsInput: Bool
    /// Floating-point operations of a pass (input shape, output shape, pass), for operators whose
    /// cost is compute rather than memory (a multiply-add counts 2); nil for the pooling baselines.
    var flops: (([Int], [Int], String) -> Double)? = nil
    /// The CPU reference's forward with the same options and parameters (timed with the host
    /// clock, for the speed-up column); nil where its inputs would come from another operator.
    var reference: ((HostTensor) throws -> Void)? = nil

    /// Inference forward: the results.
    func forward(_ inputs: [String: DeviceTensor]) throws -> OperatorValues<DeviceTensor> { try layer(inputs) }

    /// The benchmark options of each operator (the registry's defaults elsewhere).
    static let options: [String: OperatorOptions] = [
        "max-pool": OperatorOptions(["kernel": "3", "stride": "2", "pad": "1"]),
        "avg-pool": OperatorOptions(["kernel": "2"]),
    ]

    /// Which operators' backward reads the saved input besides the output gradient.
    static let readsInput: Set<String> = [
        "max-pool", "max-blur-pool", "aps-pool", "tips-pool", "lift-down-pool", "lift-up-pool", "adaptive-blur-pool",
    ]

    /// The operator `name` from the registry for inputs of `shape` on `device`.
    static func make(_ name: String, shape: [Int], on device: Device) throws -> BenchmarkOperator {
        let descriptor = try OperatorRegistry.named(name)
        let options = Self.options[name] ?? OperatorOptions()
        if name == LiftPoolConfiguration.inverseOperatorName {
            // The benchmark shape is the map LiftUpPool reconstructs; its bands come from a
            // LiftDownPool2D of the input.
            let down = try OperatorRegistry.named(LiftPoolConfiguration.operatorName).makeLayer(
                options, inputShape: shape, on: device)
            let bandShape = [shape[0], shape[1], (shape[2] + 1) / 2, (shape[3] + 1) / 2]
            let up = try descriptor.makeLayer(
                OperatorOptions(["height": "\(shape[2])", "width": "\(shape[3])"]), inputShape: bandShape, on: device)
            return BenchmarkOperator(
                name: name, layer: up,
                inputs: { input in
                    let bands = try down(input)
                    try device.synchronize()
                    var inputs = bands.extras
                    inputs["input"] = inputs.removeValue(forKey: "ll")
                    return inputs
                },
                backwardReadsInput: true)
        }
        let layer = try descriptor.makeLayer(options, inputShape: shape, on: device)
        let reference = try descriptor.makeReference(options, inputShape: shape)
        var benchmarkOperator = BenchmarkOperator(
            name: name, layer: layer, inputs: { ["input": $0] }, backwardReadsInput: readsInput.contains(name),
            reference: { _ = try reference($0) })
        if name == AdaptiveBlurPool2DConfiguration.operatorName {
            let configuration = try AdaptiveBlurPool2DConfiguration(channels: shape[1])
            benchmarkOperator.flops = { input, output, pass in adaptiveFlops(configuration, input, output, pass) }
        }
        return benchmarkOperator
    }

    /// AdaptiveBlurPool's FLOPs: forward 2 N H' W' (G k^2 C k^2 + C k^2) (predictor at output
    /// positions, then filtering); backward 2 (2 N H' W' C k^2 + 2 N H W G k^2 C k^2)
    /// (filter-weight and tap gradients, then the full-resolution conv's weight and input
    /// gradients).
    static func adaptiveFlops(_ configuration: AdaptiveBlurPool2DConfiguration, _ input: [Int], _ output: [Int], _ pass: String)
        -> Double
    {
        let taps = Double(configuration.taps)
        let c = Double(configuration.channels)
        let p = Double(configuration.predictorChannels)
        let outputPositions = Double(output[0] * output[2] * output[3])
        let inputPositions = Double(input[0] * input[2] * input[3])
        if pass == "forward" { return 2 * outputPositions * (p * c * taps + c * taps) }
        return 2 * (2 * outputPositions * c * taps + 2 * inputPositions * p * c * taps)
    }

    /// Every benchmarked operator, in the registry's order.
    static var all: [Factory] { OperatorRegistry.all.map { descriptor in Factory(name: descriptor.name) } }

    struct Factory {
        let name: String

        /// The operator for inputs of `shape` on `device`.
        func build(_ shape: [Int], _ device: Device) throws -> BenchmarkOperator {
            try BenchmarkOperator.make(name, shape: shape, on: device)
        }

        /// Times one pass on `input`; with `referenceInput` also the CPU reference's forward on
        /// the same values (host clock, median of `referenceRepeats`).
        func measure(
            pass: String, input: DeviceTensor, shapeName: String, repeats: Int, baselines: Baselines,
            referenceInput: HostTensor?, referenceRepeats: Int, launches: Bool = false
        ) throws -> BenchmarkRow {
            let benchmarkOperator = try build(input.shape, input.device)
            let device = input.device
            let inputs = try benchmarkOperator.inputs(input)
            let results = try benchmarkOperator.forward(inputs)
            let output = results.output
            let seconds: Double
            let bytes: Int
            var referenceMilliseconds: Double? = nil
            let memoryBytes: Int
            let inputCount = inputs.values.reduce(0) { $0 + $1.count }
            if pass == "forward" {
                seconds = try medianSeconds(device: device, repeats: repeats) { _ = try benchmarkOperator.forward(inputs) }
                if launches {
                    try printLaunches("\(name) forward \(shapeName)", device: device, repeats: repeats) {
                        _ = try benchmarkOperator.forward(inputs)
                    }
                }
                memoryBytes = try peakExtraBytes(device) { _ = try benchmarkOperator.forward(inputs) }
                bytes = (inputCount + output.count + results.extras.values.reduce(0) { $0 + $1.count }) * 4
                if let referenceInput, let reference = benchmarkOperator.reference {
                    var times: [Double] = []
                    for _ in 0..<max(referenceRepeats, 1) { times.append(try hostSeconds { try reference(referenceInput) }) }
                    referenceMilliseconds = median(times) * 1e3
                }
            } else {
                let (trainingOutput, saved) = try benchmarkOperator.layer.forwardTraining(inputs)
                let gradOutput = try DeviceTensor(shape: trainingOutput.output.shape, on: device)
                try device.context.fill(gradOutput.buffer, with: 1)
                let layer = benchmarkOperator.layer
                seconds = try medianSeconds(device: device, repeats: repeats) { _ = try layer.backward(gradOutput, saved) }
                if launches {
                    try printLaunches("\(name) backward \(shapeName)", device: device, repeats: repeats) {
                        _ = try layer.backward(gradOutput, saved)
                    }
                }
                memoryBytes = try peakExtraBytes(device) { _ = try layer.backward(gradOutput, saved) }
                bytes = (output.count + inputCount + (benchmarkOperator.backwardReadsInput ? inputCount : 0)) * 4
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
