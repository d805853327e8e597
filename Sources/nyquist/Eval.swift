import ArgumentParser
import Foundation
import Nyquist
import NyquistCore
import NyquistOperators

/// `nyquist eval`: the shift-invariance measures of SPEC.md section 6 for every operator on the
/// built-in inputs, as a table, JSON and an SVG chart.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure shift invariance and aliasing of every operator (SPEC.md section 6).",
        discussion: """
            Every operator runs with its default options (max-pool and avg-pool k2 s2, blur-pool \
            and max-blur-pool k4 reflect, adaptive-blur-pool k3 with Kaiming-initialised \
            parameters, lift-down-pool K5, aps-pool without pre-blur, tips-pool k3; learnable \
            parameters drawn from --seed) on 2x4xSIZExSIZE built-in inputs: a zone plate, \
            checkerboards of period 1, 2 and 3, 1/f noise and uniform random values. Columns: \
            the equivariance error ||D(shift(x)) - align(D(x))|| / ||D(x)|| for input shifts \
            d = 1..4, each the mean over the inputs and the shifts (d, 0), (0, d), (d, d), \
            circular and zero-filled (zero-filled compares outputs at least \
            \(ShiftInvariance.defaultBorderMargin) samples from the border); MSB, the fraction of \
            outputs equal to the maximum of their 2x2 input window, on the random input; and the \
            aliased-energy fraction on the zone plate. docs/shift-invariance.md defines each.
            """)

    @Option(help: ArgumentHelp("Where the operators run: opencl or reference (the CPU reference).", valueName: "backend"))
    var backend: String?

    @Option(help: ArgumentHelp(
        "OpenCL device: an index from `nyquist devices` or a name substring.", valueName: "spec"))
    var device: String?

    @Option(help: ArgumentHelp("Height and width of the built-in inputs, an even number in 48...256.", valueName: "pixels"))
    var size = 64

    @Option(help: ArgumentHelp("Seed of the random inputs, the 1/f noise and the learnable parameters.", valueName: "n"))
    var seed: UInt64 = 0

    @Option(help: ArgumentHelp("Write the results as JSON to this file ('-': to standard output, instead of the table).", valueName: "file"))
    var json: String?

    @Option(help: ArgumentHelp("Write an SVG chart of equivariance error against shift to this file.", valueName: "file"))
    var svg: String?

    /// Input shift sizes measured.
    static let shifts = Array(1...4)
    /// Batch size of every built-in input.
    static let batch = 2
    /// Channels of every built-in input: enough for adaptive-blur-pool's groups (gcd(8, 4) = 4).
    static let channels = 4
    /// Every operator the eval measures, in table order.
    static let operatorNames = [
        "max-pool", "avg-pool", "blur-pool", "max-blur-pool", AdaptiveBlurPool2DConfiguration.operatorName,
        LiftPoolConfiguration.operatorName, "aps-pool", "tips-pool",
    ]

    /// One operator's measurements.
    struct OperatorResult: Codable, Sendable {
        /// CLI name (`blur-pool`).
        var name: String
        /// Its options, as the configuration describes them.
        var options: String
        /// Mean circular equivariance error for each shift size in ``Report/shifts``.
        var circular: [Double]
        /// Mean zero-filled equivariance error for each shift size.
        var zeroFilled: [Double]
        /// Maximum-sampling bias on the random input.
        var maximumSamplingBias: Double
        /// Aliased-energy fraction on the zone plate.
        var aliasedEnergyFraction: Double
        /// The same errors per input, each the mean over the three shift directions.
        var perInput: [InputResult]
    }

    /// One operator's errors on one input.
    struct InputResult: Codable, Sendable {
        /// The built-in input (`zone plate`).
        var input: String
        /// Circular error per shift size.
        var circular: [Double]
        /// Zero-filled error per shift size.
        var zeroFilled: [Double]
    }

    /// The JSON document.
    struct Report: Codable, Sendable {
        /// `opencl` or `reference`.
        var backend: String
        /// The OpenCL device, or "CPU reference".
        var device: String
        /// Input shape, `NxCxHxW`.
        var inputShape: String
        /// Seed of inputs and parameters.
        var seed: UInt64
        /// Shift sizes d; each error is the mean over (d, 0), (0, d) and (d, d).
        var shifts: [Int]
        /// Output samples left out at each border for zero-filled shifts.
        var borderMargin: Int
        /// The built-in inputs, in order.
        var inputs: [String]
        /// One entry per operator.
        var operators: [OperatorResult]
    }

    func run() throws {
        let useDevice = try selectedBackend()
        if !useDevice, device != nil { throw CLIFailure("--device applies only to --backend opencl") }
        guard (48...256).contains(size), size % 2 == 0 else {
            throw CLIFailure("--size \(size) must be an even number in 48...256")
        }
        let jsonURL = try json.flatMap { $0 == "-" ? nil : try Self.outputURL($0, option: "--json") }
        let svgURL = try svg.map { try Self.outputURL($0, option: "--svg") }
        let opencl = try useDevice ? (device.map { try Device(named: $0) } ?? Device.default()) : nil
        let report = try makeReport(on: opencl)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(
            positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let jsonData = try encoder.encode(report)
        if let svgURL {
            try Self.write(Data(Self.chart(report).svg().utf8), to: svgURL)
        }
        if let jsonURL {
            try Self.write(jsonData, to: jsonURL)
        }
        if json == "-" {
            print(String(decoding: jsonData, as: UTF8.self))
        } else {
            for line in Self.table(report) { print(line) }
        }
    }

    /// Measures every operator on the built-in inputs, on `opencl` or (nil) the CPU reference;
    /// `nyquist picture` calls it for its chart.
    func makeReport(on opencl: Device?) throws -> Report {
        let deviceLine = opencl.map { "\($0.info.name) (\($0.info.typeName), \($0.info.platformName))" } ?? "CPU reference"
        let inputs = try builtInInputs()
        var results: [OperatorResult] = []
        for (index, name) in Self.operatorNames.enumerated() {
            let (options, pool) = try makeOperator(name, on: opencl)
            progress("[\(index + 1)/\(Self.operatorNames.count)] \(name): equivariance on \(inputs.count) inputs ...")
            results.append(try measure(name: name, options: options, pool, inputs: inputs))
        }
        progress(nil)

        let report = Report(
            backend: opencl != nil ? "opencl" : "reference", device: deviceLine,
            inputShape: Format.shape([Self.batch, Self.channels, size, size]), seed: seed, shifts: Self.shifts,
            borderMargin: ShiftInvariance.defaultBorderMargin, inputs: inputs.map(\.label), operators: results)
        return report
    }

    /// A built-in input.
    struct Input {
        var label: String
        var tensor: HostTensor
    }

    /// The inputs of the equivariance columns; the random one (last) also serves MSB and the
    /// zone plate (first) the aliasing column.
    func builtInInputs() throws -> [Input] {
        let (n, c) = (Self.batch, Self.channels)
        return [
            Input(label: "zone plate", tensor: try TestImages.zonePlate(size: size, batch: n, channels: c)),
            Input(label: "checkerboard 1", tensor: try TestImages.checkerboard(size: size, period: 1, batch: n, channels: c)),
            Input(label: "checkerboard 2", tensor: try TestImages.checkerboard(size: size, period: 2, batch: n, channels: c)),
            Input(label: "checkerboard 3", tensor: try TestImages.checkerboard(size: size, period: 3, batch: n, channels: c)),
            Input(label: "pink noise", tensor: try TestImages.pinkNoise(size: size, seed: seed, batch: n, channels: c)),
            Input(label: "random", tensor: try TestImages.random(shape: [n, c, size, size], seed: seed &+ 1)),
        ]
    }

    /// Runs every measure of one operator.
    private func measure(
        name: String, options: String, _ pool: @escaping ShiftInvariance.Operator, inputs: [Input]
    ) throws -> OperatorResult {
        var perInput: [InputResult] = []
        for input in inputs {
            let output = try pool(input.tensor)
            var errors: [ShiftMode: [Double]] = [:]
            for mode in ShiftMode.allCases {
                errors[mode] = try Self.shifts.map { d in
                    let directions = InputShift.directions(size: d)
                    let sum = try directions.reduce(0.0) { total, shift in
                        total + (try ShiftInvariance.equivarianceError(
                            of: pool, input: input.tensor, shift: shift, mode: mode, outputOfInput: output))
                    }
                    return sum / Double(directions.count)
                }
            }
            perInput.append(
                InputResult(input: input.label, circular: errors[.circular] ?? [], zeroFilled: errors[.zeroFilled] ?? []))
        }
        func mean(_ keyPath: KeyPath<InputResult, [Double]>) -> [Double] {
            Self.shifts.indices.map { index in
                perInput.map { $0[keyPath: keyPath][index] }.reduce(0, +) / Double(perInput.count)
            }
        }
        guard let zonePlate = inputs.first, let random = inputs.last else {
            throw CLIFailure("no built-in inputs")
        }
        return OperatorResult(
            name: name, options: options, circular: mean(\.circular), zeroFilled: mean(\.zeroFilled),
            maximumSamplingBias: try ShiftInvariance.maximumSamplingBias(of: pool, input: random.tensor),
            aliasedEnergyFraction: try ShiftInvariance.aliasedEnergyFraction(of: pool, input: zonePlate.tensor),
            perInput: perInput)
    }

    /// Operator `name` from the registry with default options and parameters from `seed`, as a
    /// host-to-host function on the device (when given) or on the CPU reference; and its
    /// options as text.
    private func makeOperator(_ name: String, on device: Device?) throws -> (String, ShiftInvariance.Operator) {
        try Self.registryOperator(name, seed: seed, channels: Self.channels, on: device)
    }

    /// Operator `name` of the registry with its default options (and `seed` for the ones with
    /// parameters) for inputs of `channels` channels, as a host-to-host function; and its
    /// options as text. `nyquist picture` draws with the same functions.
    static func registryOperator(_ name: String, seed: UInt64, channels: Int, on device: Device?) throws
        -> (String, ShiftInvariance.Operator)
    {
        let descriptor = try OperatorRegistry.named(name)
        let options = OperatorOptions(
            descriptor.options.contains { $0.name == "seed" } ? ["seed": "\(seed)"] : [:])
        let shape = [1, channels, 16, 16]
        let summary = try descriptor.description(options, inputShape: shape)
        let parameters = try descriptor.parameters(options, inputShape: shape)
        guard let device else {
            let reference = try descriptor.makeReference(options, inputShape: shape, parameters: parameters)
            return (summary, { try reference($0).output })
        }
        let layer = try descriptor.makeLayer(options, inputShape: shape, parameters: parameters, on: device)
        return (summary, { try layer(DeviceTensor($0, on: device)).output.toHost() })
    }

    /// True for `--backend opencl` (the default), false for `reference`.
    private func selectedBackend() throws -> Bool {
        switch backend {
        case nil, "opencl": return true
        case "reference": return false
        case let other?: throw CLIFailure("unknown backend '\(other)'; use opencl or reference")
        }
    }

    /// The URL of an output file, checked before the measurements start so that a bad path does
    /// not cost a whole run: its directory must exist and the path must not be a directory.
    static func outputURL(_ path: String, option: String) throws -> URL {
        let url = URL(fileURLWithPath: path)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
            throw CLIFailure("\(option) \(path) is a directory")
        }
        let parent = url.deletingLastPathComponent()
        guard FileManager.default.fileExists(atPath: parent.path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw CLIFailure("\(option) \(path): directory \(parent.path) does not exist")
        }
        return url
    }

    /// Writes `data` atomically (a temporary file renamed into place): never a half-written file.
    static func write(_ data: Data, to url: URL) throws {
        do {
            try data.write(to: url, options: .atomic)
        } catch {
            throw CLIFailure("cannot write \(url.path): \(error.localizedDescription)")
        }
    }

    /// The stdout table: one row per operator.
    static func table(_ report: Report) -> [String] {
        var rows = [
            ["op"] + report.shifts.map { "circ d=\($0)" } + report.shifts.map { "zero d=\($0)" } + ["MSB", "aliased"]
        ]
        for result in report.operators {
            rows.append(
                [result.name] + result.circular.map(errorText) + result.zeroFilled.map(errorText)
                    + [Format.fixed(result.maximumSamplingBias, 3), Format.fixed(result.aliasedEnergyFraction, 3)])
        }
        return [
            "backend: \(report.backend), device: \(report.device), inputs: \(report.inputShape) "
                + report.inputs.joined(separator: ", ") + ", seed \(report.seed)"
        ] + Format.table(rows, rightAligned: Set(1..<rows[0].count))
    }

    /// An error with four decimals, or in scientific notation when that would show only zeros.
    static func errorText(_ value: Double) -> String {
        value != 0 && abs(value) < 5e-5 ? String(format: "%.0e", value) : Format.fixed(value, 4)
    }

    /// The chart of mean equivariance error against shift size, circular and zero-filled.
    static func chart(_ report: Report) -> LineChart {
        LineChart(
            title: "Equivariance error vs input shift (\(report.inputShape), \(report.backend))",
            xLabel: "input shift d (mean over (d,0), (0,d), (d,d))",
            yLabel: "||D(shift x) - align D(x)|| / ||D(x)||",
            xValues: report.shifts.map(Double.init),
            panels: [
                LineChart.Panel(
                    title: "circular shift",
                    series: report.operators.map { LineChart.Series(name: $0.name, values: $0.circular) }),
                LineChart.Panel(
                    title: "zero-filled shift (border margin \(report.borderMargin))",
                    series: report.operators.map { LineChart.Series(name: $0.name, values: $0.zeroFilled) }),
            ])
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
