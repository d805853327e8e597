import ArgumentParser
import Foundation
import Nyquist
import NyquistCore
import NyquistOperators
import NyquistReference

/// `nyquist demo`: every operator on built-in inputs, on the device and on the CPU reference,
/// with timings and the parity error of each.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every operator on built-in inputs: parity and timing against the CPU reference.",
        discussion: """
            Inputs: a zone plate (2x3x128x128) and seeded random tensors (8x64x56x56 and the odd \
            3x5x31x33; operators with parameters, whose references are slow, use the zone plate \
            and the odd tensor, with default parameters of seed 0). Each operator of the registry \
            runs with its default options on the device (kernel time from OpenCL profiling events, \
            after one warm-up call so that program builds are not counted) and on the CPU reference \
            (host clock); one backward row per operator uses a seeded random output gradient, and \
            its error is the largest over the input and parameter gradients. A lift-up-pool row \
            reconstructs the odd input from lift-down-pool's bands. The error column is \
            max |device - reference| / max |reference|; the command exits 1 when any exceeds 1e-4.
            """)

    @Option(help: ArgumentHelp(
        "OpenCL device: an index from `nyquist devices` or a name substring.", valueName: "spec"))
    var device: String?

    @Flag(help: "Print the rows as JSON instead of a table.")
    var json = false

    /// Largest accepted max relative error.
    static let tolerance = 1e-4

    /// One measured line of the demo.
    struct Row: Codable, Sendable {
        /// Operator name (`blur-pool`).
        var op: String
        /// `forward` or `backward`.
        var pass: String
        /// The built-in input (`zone plate`, `random`).
        var input: String
        /// Input shape, `NxCxHxW`.
        var shape: String
        /// Output shape, `NxCxHxW`.
        var outputShape: String
        /// Device kernel time in milliseconds.
        var deviceMilliseconds: Double
        /// CPU reference time in milliseconds.
        var referenceMilliseconds: Double
        /// `referenceMilliseconds / deviceMilliseconds`.
        var speedUp: Double
        /// max |device - reference| / max |reference|.
        var maxRelativeError: Double
    }

    /// The JSON document of `--json`.
    struct Report: Codable, Sendable {
        /// The device, as on the table's first line.
        var device: String
        /// Largest accepted max relative error.
        var tolerance: Double
        /// The measured rows.
        var rows: [Row]
    }

    /// A built-in input.
    private struct Input {
        var label: String
        var tensor: HostTensor
    }

    /// A step of the demo: an operator on an input, forward or backward.
    private struct Step {
        var op: OperatorDescriptor
        var input: Input
        var backward: Bool
    }

    func run() throws {
        let device = try device.map { try Device(named: $0) } ?? Device.default()
        let info = device.info
        let deviceLine = "\(info.name) (\(info.typeName), \(info.platformName), driver \(info.driverVersion))"

        var random = SplitMix64(seed: 0x4E59_5155_4953_5421)
        let zonePlate = Input(label: "zone plate", tensor: try TestImages.zonePlate(n: 2, c: 3, h: 128, w: 128))
        let large = Input(label: "random", tensor: try random.tensor([8, 64, 56, 56]))
        let odd = Input(label: "random", tensor: try random.tensor([3, 5, 31, 33]))
        // Every registry operator that takes one tensor; the ones with parameters (whose
        // references are slow: adaptive-blur-pool evaluates a G*k*k-channel conv per pixel in
        // Double) on the two smaller inputs, backward on the odd one.
        var steps: [Step] = []
        for op in OperatorRegistry.all where op.extraInputs(4).allSatisfy({ $0 == "indices" }) {
            let withParameters = !op.parameterNames.isEmpty
            for input in withParameters ? [zonePlate, odd] : [zonePlate, large, odd] {
                steps.append(Step(op: op, input: input, backward: false))
            }
            steps.append(Step(op: op, input: withParameters ? odd : large, backward: true))
        }

        var rows: [Row] = []
        for (index, step) in steps.enumerated() {
            let shape = Format.shape(step.input.tensor.shape)
            progress("[\(index + 1)/\(steps.count)] \(step.op.name) \(shape) \(step.backward ? "backward" : "forward") ...")
            rows.append(try measure(step, on: device, random: &random))
        }
        progress("lift-up-pool: reconstruction of \(Format.shape(odd.tensor.shape)) ...")
        rows.append(try measureReconstruction(odd, on: device))
        progress(nil)

        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let data = try encoder.encode(Report(device: deviceLine, tolerance: Self.tolerance, rows: rows))
            print(String(decoding: data, as: UTF8.self))
        } else {
            print("device: \(deviceLine)")
            var table = [["op", "pass", "input", "shape", "output", "device ms", "reference ms", "speed-up", "max rel err"]]
            for row in rows {
                table.append([
                    row.op, row.pass, row.input, row.shape, row.outputShape, Format.fixed(row.deviceMilliseconds, 3),
                    Format.fixed(row.referenceMilliseconds, 1), Format.fixed(row.speedUp, 1) + "x",
                    Format.scientific(row.maxRelativeError),
                ])
            }
            for line in Format.table(table, rightAligned: [5, 6, 7, 8]) { print(line) }
        }

        let failures = rows.filter { !($0.maxRelativeError <= Self.tolerance) }
        guard failures.isEmpty else {
            let list = failures.map {
                "\($0.op) \($0.pass) \($0.shape) (\(Format.scientific($0.maxRelativeError)))"
            }
            throw CLIFailure(
                "max relative error above \(Format.scientific(Self.tolerance)) for " + list.joined(separator: ", "))
        }
    }

    /// Runs one step on the device (warm-up, then a profiled call) and on the reference, both
    /// built by the registry with the operator's default options.
    private func measure(_ step: Step, on device: Device, random: inout SplitMix64) throws -> Row {
        let x = step.input.tensor
        let options = OperatorOptions()
        let parameters = try step.op.parameters(options, inputShape: x.shape)
        let layer = try step.op.makeLayer(options, inputShape: x.shape, parameters: parameters, on: device)
        let reference = try step.op.makeReference(options, inputShape: x.shape, parameters: parameters)
        let xDevice = try DeviceTensor(x, on: device)
        let clock = ContinuousClock()

        let deviceResult: HostTensor
        var referenceResult: HostTensor
        let deviceSeconds: Double
        let referenceDuration: Duration
        var parameterError = 0.0
        if step.backward {
            let (_, saved) = try layer.forwardTraining(xDevice)
            let (referenceOutput, referenceSaved) = try reference.forwardTraining(x)
            let gradOutput = try random.tensor(referenceOutput.output.shape)
            let gradOutputDevice = try DeviceTensor(gradOutput, on: device)
            _ = try layer.backward(gradOutputDevice, saved)
            try device.synchronize()
            let (gradients, seconds) = try device.measure { try layer.backward(gradOutputDevice, saved) }
            deviceResult = try gradients.input.toHost()
            deviceSeconds = seconds
            var expected: OperatorGradientValues<HostTensor>?
            referenceDuration = try clock.measure { expected = try reference.backward(gradOutput, referenceSaved) }
            guard let expected else { throw CLIFailure("the reference backward produced no result") }
            referenceResult = expected.input
            for (name, value) in expected.parameters {
                guard let actual = gradients.parameters[name] else {
                    throw CLIFailure("\(step.op.name): the device gave no gradient of \(name)")
                }
                parameterError = max(parameterError, try actual.toHost().maxRelativeError(from: value))
            }
        } else {
            _ = try layer(xDevice)
            try device.synchronize()
            let (y, seconds) = try device.measure { try layer(xDevice).output }
            deviceResult = try y.toHost()
            deviceSeconds = seconds
            var output: HostTensor?
            referenceDuration = try clock.measure { output = try reference(x).output }
            guard let output else { throw CLIFailure("the reference forward produced no result") }
            referenceResult = output
        }

        if step.op.name == APSPool2DConfiguration.operatorName, !step.backward {
            referenceResult = try Self.apsReferenceOnTies(
                APSPool2DConfiguration(channels: x.shape[1]), x, xDevice, otherwise: referenceResult)
        }
        let referenceSeconds =
            Double(referenceDuration.components.seconds) + Double(referenceDuration.components.attoseconds) * 1e-18
        return Row(
            op: step.op.name, pass: step.backward ? "backward" : "forward", input: step.input.label,
            shape: Format.shape(x.shape), outputShape: Format.shape(referenceResult.shape),
            deviceMilliseconds: deviceSeconds * 1e3, referenceMilliseconds: referenceSeconds * 1e3,
            speedUp: deviceSeconds > 0 ? referenceSeconds / deviceSeconds : 0,
            maxRelativeError: max(deviceResult.maxRelativeError(from: referenceResult), parameterError))
    }

    /// APS picks a phase by comparing norms; where two phase norms of a sample tie to Float
    /// rounding (the zone plate is symmetric, so its phases tie exactly in real arithmetic), the
    /// device and the Double reference may legitimately pick different phases. Then the reference
    /// is recomputed with the device's phases, provided each of them is within 1e-5 (relative) of
    /// the best norm; otherwise `otherwise` (the plain reference result) stands. (Forward rows
    /// only: the backward rows use a random input, where ties do not occur.)
    private static func apsReferenceOnTies(
        _ configuration: APSPool2DConfiguration, _ x: HostTensor, _ xDevice: DeviceTensor, otherwise: HostTensor
    ) throws -> HostTensor {
        let chosen = try APSPool2D(configuration)(xDevice).indices
        let indices = try chosen.toHost().values.map { Int($0) }
        let norms = try Reference.apsNorms(x.converted(to: Double.self), configuration)
        let tied = zip(indices, norms).allSatisfy { index, norms in norms[index] >= (norms.max() ?? 0) * (1 - 1e-5) }
        guard tied else { return otherwise }
        return try Reference.apsPool2D(x, configuration, indices: indices).output
    }

    /// lift-up-pool on the bands lift-down-pool made of `input` (registry defaults, seed 0): the
    /// device's on the device's bands, the reference's on its own; both reproduce the input.
    private func measureReconstruction(_ input: Input, on device: Device) throws -> Row {
        let x = input.tensor
        let down = try OperatorRegistry.named(LiftPoolConfiguration.operatorName)
        let up = try OperatorRegistry.named(LiftPoolConfiguration.inverseOperatorName)
        let bands = try down.makeReference(OperatorOptions(), inputShape: x.shape)(x).extras
        let bandShape = try down.outputShape(OperatorOptions(), inputShape: x.shape)
        let target = OperatorOptions(["height": "\(x.shape[2])", "width": "\(x.shape[3])"])
        func upInputs<Tensor>(_ extras: [String: Tensor]) -> [String: Tensor] {
            var inputs = extras
            inputs["input"] = inputs.removeValue(forKey: "ll")
            return inputs
        }
        let deviceBands = try down.makeLayer(OperatorOptions(), inputShape: x.shape, on: device)(DeviceTensor(x, on: device)).extras
        let unpool = try up.makeLayer(target, inputShape: bandShape, on: device)
        _ = try unpool(upInputs(deviceBands))
        try device.synchronize()
        let (back, seconds) = try device.measure { try unpool(upInputs(deviceBands)).output }
        let reference = try up.makeReference(target, inputShape: bandShape)
        var expected: HostTensor?
        let duration = try ContinuousClock().measure { expected = try reference(upInputs(bands)).output }
        guard let expected else { throw CLIFailure("the LiftPool reference produced no result") }
        let referenceSeconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
        let result = try back.toHost()
        return Row(
            op: up.name, pass: "forward", input: "bands of \(input.label)", shape: Format.shape(x.shape),
            outputShape: Format.shape(result.shape), deviceMilliseconds: seconds * 1e3,
            referenceMilliseconds: referenceSeconds * 1e3, speedUp: seconds > 0 ? referenceSeconds / seconds : 0,
            maxRelativeError: result.maxRelativeError(from: expected))
    }

    /// Shows `line` as the current progress on standard error (overwriting the previous one on a
    /// terminal); `nil` clears it.
    func progress(_ line: String?) {
        if Console.standardErrorIsTerminal {
            Console.errorRaw("\r\u{1B}[2K" + (line ?? ""))
        } else if let line {
            Console.error(line)
        }
    }
}
