import ArgumentParser
import Foundation
import Nyquist
import NyquistCore
import NyquistReference

/// `nyquist demo`: every operator on built-in inputs, on the device and on the CPU reference,
/// with timings and the parity error of each.
struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run every operator on built-in inputs: parity and timing against the CPU reference.",
        discussion: """
            Inputs: a zone plate (2x3x128x128) and seeded random tensors (8x64x56x56 and the odd \
            3x5x31x33; adaptive-blur-pool, whose reference is slow, uses the zone plate and the \
            odd tensor, with Kaiming-initialised parameters of seed 0). Each operator runs with its default options on the device (kernel time \
            from OpenCL profiling events, after one warm-up call so that program builds are not \
            counted) and on the CPU reference (host clock); one backward row per operator uses a \
            seeded random output gradient. LiftDownPool (K = 5, seeded parameters) adds forward \
            rows, a backward row on the odd input and a lift-up-pool row that reconstructs the \
            odd input from the device's bands. The error column is max |device - reference| / \
            max |reference|; the command exits 1 when any exceeds 1e-4.
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
        var op: OperatorName
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
        var steps: [Step] = []
        for op in OperatorName.allCases {
            for input in [zonePlate, large, odd] { steps.append(Step(op: op, input: input, backward: false)) }
            steps.append(Step(op: op, input: large, backward: true))
        }

        var rows: [Row] = []
        for (index, step) in steps.enumerated() {
            let shape = Format.shape(step.input.tensor.shape)
            progress("[\(index + 1)/\(steps.count)] \(step.op.rawValue) \(shape) \(step.backward ? "backward" : "forward") ...")
            rows.append(try measure(step, on: device, random: &random))
        }
        for input in [zonePlate, odd] {
            for kind in ["forward", "backward", "reconstruction"] where kind == "forward" || input.label != "zone plate" {
                progress("lift-down-pool \(Format.shape(input.tensor.shape)) \(kind) ...")
                rows.append(try measureLift(kind, input, on: device, random: &random))
            }
        }
        // AdaptiveBlurPool: its CPU reference evaluates a G*k*k-channel conv per pixel, so it
        // runs on the two smaller inputs only (forward on both, backward on the odd one).
        for (index, (label, tensor, backward)) in [
            ("zone plate", zonePlate.tensor, false), ("random", odd.tensor, false), ("random", odd.tensor, true),
        ].enumerated() {
            progress("[adaptive \(index + 1)/3] adaptive-blur-pool \(Format.shape(tensor.shape)) ...")
            rows.append(try measureAdaptive(label: label, x: tensor, backward: backward, on: device, random: &random))
        }
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

    /// Runs one step on the device (warm-up, then a profiled call) and on the reference.
    private func measure(_ step: Step, on device: Device, random: inout SplitMix64) throws -> Row {
        let x = step.input.tensor
        let inputShape = try Shape4D(x.shape)
        let pool = try OperatorOptions().makeOperator(step.op, channels: inputShape.c)
        let outputShape = try pool.outputShape(for: inputShape)
        let layer = try pool.layer
        let xDevice = try DeviceTensor(x, on: device)
        let clock = ContinuousClock()

        let deviceResult: HostTensor
        var referenceResult: HostTensor
        let deviceSeconds: Double
        let referenceDuration: Duration
        if step.backward {
            let gradOutput = try random.tensor(outputShape.dimensions)
            let gradOutputDevice = try DeviceTensor(gradOutput, on: device)
            let (_, saved) = try layer.forwardTraining(xDevice)
            _ = try layer.backward(gradOutputDevice, saved)
            try device.synchronize()
            let (gradients, seconds) = try device.measure { try layer.backward(gradOutputDevice, saved) }
            deviceResult = try gradients.input.toHost()
            deviceSeconds = seconds
            let (_, referenceSaved) = try pool.referenceTraining(x)
            var gradInput: HostTensor?
            referenceDuration = try clock.measure { gradInput = try pool.referenceBackward(gradOutput, referenceSaved) }
            guard let gradInput else { throw CLIFailure("the reference backward produced no result") }
            referenceResult = gradInput
        } else {
            _ = try layer(xDevice)
            try device.synchronize()
            let (y, seconds) = try device.measure { try layer(xDevice) }
            deviceResult = try y.toHost()
            deviceSeconds = seconds
            var output: HostTensor?
            referenceDuration = try clock.measure { output = try pool.reference(x) }
            guard let output else { throw CLIFailure("the reference forward produced no result") }
            referenceResult = output
        }

        if case .apsPool(let configuration) = pool, !step.backward {
            referenceResult = try Self.apsReferenceOnTies(configuration, x, xDevice, otherwise: referenceResult)
        }
        let referenceSeconds =
            Double(referenceDuration.components.seconds) + Double(referenceDuration.components.attoseconds) * 1e-18
        return Row(
            op: step.op.rawValue, pass: step.backward ? "backward" : "forward", input: step.input.label,
            shape: Format.shape(x.shape), outputShape: Format.shape(referenceResult.shape),
            deviceMilliseconds: deviceSeconds * 1e3, referenceMilliseconds: referenceSeconds * 1e3,
            speedUp: deviceSeconds > 0 ? referenceSeconds / deviceSeconds : 0,
            maxRelativeError: try Self.maxRelativeError(deviceResult, referenceResult))
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
        let (_, chosen) = try APSPool2D(configuration)(xDevice, indices: nil)
        let indices = try chosen.toHost().values.map { Int($0) }
        let norms = try Reference.apsNorms(x.converted(to: Double.self), configuration)
        let tied = zip(indices, norms).allSatisfy { index, norms in norms[index] >= (norms.max() ?? 0) * (1 - 1e-5) }
        guard tied else { return otherwise }
        return try Reference.apsPool2D(x, configuration, indices: indices).output
    }

    /// LiftDownPool2D (K = 5, seeded default parameters) on the device and the reference:
    /// `forward` compares the pooled output, `backward` the input gradient (output gradient and
    /// regulariser loss), `reconstruction` runs LiftUpPool2D on the device's bands (op
    /// lift-up-pool) and compares with the reference's LiftUpPool2D of its own bands (both
    /// reproduce the input). The reference's backward is slow in Double,
    /// so the backward rows use the small odd input.
    private func measureLift(_ kind: String, _ input: Input, on device: Device, random: inout SplitMix64) throws -> Row {
        let x = input.tensor
        let shape = try Shape4D(x.shape)
        let configuration = try LiftPoolConfiguration(channels: shape.c)
        let parameters = LiftPoolParameters<Float>(configuration, seed: 0)
        let pool = try LiftDownPool2D(configuration, parameters: parameters, on: device)
        let xDevice = try DeviceTensor(x, on: device)
        let clock = ContinuousClock()
        let deviceResult: HostTensor
        var referenceResult: HostTensor?
        let deviceSeconds: Double
        let referenceDuration: Duration
        switch kind {
        case "backward":
            let gradOutput = try random.tensor(configuration.outputShape(for: shape).dimensions)
            let gradOutputDevice = try DeviceTensor(gradOutput, on: device)
            let (_, _, saved) = try pool.forwardTraining(xDevice)
            _ = try pool.backward(saved, gradOutput: gradOutputDevice)
            try device.synchronize()
            let (gradients, seconds) = try device.measure { try pool.backward(saved, gradOutput: gradOutputDevice) }
            deviceResult = try gradients.input.toHost()
            deviceSeconds = seconds
            referenceDuration = try clock.measure {
                referenceResult = try Reference.liftDownPool2DBackward(
                    input: x, parameters, configuration, gradOutput: gradOutput).input
            }
        case "reconstruction":
            let bands = try pool(xDevice)
            let unpool = LiftUpPool2D(inverting: pool)
            _ = try unpool(bands, height: shape.h, width: shape.w)
            try device.synchronize()
            let (back, seconds) = try device.measure { try unpool(bands, height: shape.h, width: shape.w) }
            deviceResult = try back.toHost()
            deviceSeconds = seconds
            let referenceBands = try Reference.liftDownPool2D(x, parameters, configuration).bands
            referenceDuration = try clock.measure {
                referenceResult = try Reference.liftUpPool2D(
                    ll: referenceBands.ll, lh: referenceBands.lh, hl: referenceBands.hl, hh: referenceBands.hh, height: shape.h,
                    width: shape.w, parameters, configuration)
            }
        default:
            _ = try pool(xDevice)
            try device.synchronize()
            let (bands, seconds) = try device.measure { try pool(xDevice) }
            deviceResult = try bands.output.toHost()
            deviceSeconds = seconds
            referenceDuration = try clock.measure {
                referenceResult = try Reference.liftDownPool2D(x, parameters, configuration).bands.output
            }
        }
        guard let referenceResult else { throw CLIFailure("the LiftPool reference produced no result") }
        let referenceSeconds =
            Double(referenceDuration.components.seconds) + Double(referenceDuration.components.attoseconds) * 1e-18
        return Row(
            op: kind == "reconstruction" ? LiftPoolConfiguration.inverseOperatorName : LiftPoolConfiguration.operatorName,
            pass: kind == "reconstruction" ? "forward" : kind, input: kind == "reconstruction" ? "bands of \(input.label)" : input.label,
            shape: Format.shape(x.shape), outputShape: Format.shape(deviceResult.shape),
            deviceMilliseconds: deviceSeconds * 1e3, referenceMilliseconds: referenceSeconds * 1e3,
            speedUp: deviceSeconds > 0 ? referenceSeconds / deviceSeconds : 0,
            maxRelativeError: try Self.maxRelativeError(deviceResult, referenceResult))
    }

    /// max |actual - expected| / max |expected| (the absolute error when `expected` is all zero);
    /// NaN when the values disagree on NaN, infinite when the shapes differ.
    static func maxRelativeError(_ actual: HostTensor, _ expected: HostTensor) throws -> Double {
        guard actual.shape == expected.shape else { return .infinity }
        var largestDifference = 0.0
        var largestMagnitude = 0.0
        for (a, e) in zip(actual.values, expected.values) {
            let difference = abs(Double(a) - Double(e))
            if difference.isNaN && !(a.isNaN && e.isNaN) { return .nan }
            if difference > largestDifference { largestDifference = difference }
            largestMagnitude = max(largestMagnitude, abs(Double(e)))
        }
        return largestMagnitude > 0 ? largestDifference / largestMagnitude : largestDifference
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
