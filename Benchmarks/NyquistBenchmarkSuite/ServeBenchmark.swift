import Foundation
import Nyquist
import NyquistCL
import NyquistCore
import NyquistOperators

/// `--serve`: times operator calls for another process (Benchmarks/compare_pytorch.py), so that
/// it can alternate them with its own calls in the same run. One JSON request per line on stdin,
/// one JSON answer per line on stdout; a bad request is answered with `{"error": ...}` and the
/// server keeps reading. docs/performance.md (Method) describes the protocol.
///
/// A call is what a caller of the public API waits for: the layer's call, then `clFinish`, by
/// the host clock. Layers and inputs are kept per request key (operator, pass, shape, options),
/// so that a repeated request measures the steady state of the same layer on the same buffers;
/// the first request for a key warms it up first.
enum ServeBenchmark {
    /// Answers requests from `readLine` with `write` until end of input.
    static func run(device: Device, readLine: () -> String? = { Swift.readLine() }, write: (String) -> Void) {
        let session = ServeSession(device: device)
        while let line = readLine() {
            if line.allSatisfy(\.isWhitespace) { continue }
            write(session.answer(line))
        }
    }

    /// Writes one answer line to stdout. `print` buffers when stdout is a pipe, which would leave
    /// the client waiting for an answer that sits in this process's buffer.
    static func writeLine(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }
}

/// One parsed timing request.
struct ServeRequest {
    /// The passes a request may time.
    static let passes = ["forward", "training+backward", "training", "backward"]

    let operatorName: String
    let pass: String
    let shape: [Int]
    let options: OperatorOptions
    let calls: Int
    let warmUpCalls: Int
    let warmUpSeconds: Double

    var key: String {
        let optionText = options.values.keys.sorted().map { "\($0)=\(options.values[$0] ?? "")" }.joined(separator: ",")
        return "\(operatorName)|\(pass)|\(shape.map(String.init).joined(separator: "x"))|\(optionText)"
    }

    init(_ object: [String: Any]) throws {
        guard let name = object["op"] as? String else { throw ServeError("a request needs \"op\" (an operator name) or \"command\"") }
        operatorName = name
        let passName = object["pass"] as? String ?? "forward"
        guard Self.passes.contains(passName) else {
            throw ServeError("unknown pass \"\(passName)\"; choose from " + Self.passes.joined(separator: ", "))
        }
        pass = passName
        shape = try Self.shape(object["shape"])
        options = OperatorOptions(try Self.options(object["options"]))
        calls = try Self.integer(object["calls"], name: "calls", default: 1, range: 1...100_000)
        warmUpCalls = try Self.integer(object["warmup_calls"], name: "warmup_calls", default: 5, range: 0...100_000)
        warmUpSeconds = try Self.real(object["warmup_seconds"], name: "warmup_seconds", default: 0.2, range: 0...600)
    }

    static func shape(_ value: Any?) throws -> [Int] {
        guard let sizes = value as? [Any], !sizes.isEmpty else {
            throw ServeError("\"shape\" must be a non-empty list of sizes, e.g. [8, 64, 112, 112]")
        }
        let shape = try sizes.map { try integer($0, name: "shape", default: nil, range: 1...(1 << 30)) }
        let count = try HostTensor.elementCount(of: shape)
        guard count <= Int(Int32.max) else {
            throw ServeError("shape \(shape) has \(count) elements; at most 2^31 - 1")
        }
        return shape
    }

    /// Option values as the CLI spells them: strings, numbers and booleans are accepted.
    static func options(_ value: Any?) throws -> [String: String] {
        guard let value else { return [:] }
        guard let object = value as? [String: Any] else { throw ServeError("\"options\" must be an object") }
        var options: [String: String] = [:]
        for (name, entry) in object {
            if let text = entry as? String {
                options[name] = text
            } else if let flag = entry as? Bool, isBoolean(entry) {
                options[name] = flag ? "true" : "false"
            } else if let number = entry as? NSNumber {
                let real = number.doubleValue
                options[name] = real.rounded() == real && abs(real) < 1e15 ? String(Int(real)) : String(real)
            } else {
                throw ServeError("option \"\(name)\" must be a string, a number or a boolean")
            }
        }
        return options
    }

    private static func isBoolean(_ value: Any) -> Bool {
        // JSONSerialization hands booleans over as NSNumber, which also casts to Bool when it
        // holds 0 or 1; only the boolean literal's own type tells them apart.
        if type(of: value) == Bool.self { return true }
        guard let number = value as? NSNumber else { return false }
        return String(cString: number.objCType) == "c"
    }

    static func integer(_ value: Any?, name: String, default fallback: Int?, range: ClosedRange<Int>) throws -> Int {
        guard let value else {
            if let fallback { return fallback }
            throw ServeError("\"\(name)\" is missing")
        }
        guard !isBoolean(value), let number = value as? NSNumber, number.doubleValue.rounded() == number.doubleValue,
            number.doubleValue >= Double(range.lowerBound), number.doubleValue <= Double(range.upperBound)
        else {
            let got = isBoolean(value) ? "a boolean" : "\(value)"
            throw ServeError("\"\(name)\" must be whole numbers from \(range.lowerBound) to \(range.upperBound), got \(got)")
        }
        return Int(number.doubleValue)
    }

    static func real(_ value: Any?, name: String, default fallback: Double, range: ClosedRange<Double>) throws -> Double {
        guard let value else { return fallback }
        guard !isBoolean(value), let number = value as? NSNumber, range.contains(number.doubleValue) else {
            let got = isBoolean(value) ? "a boolean" : "\(value)"
            throw ServeError("\"\(name)\" must be a number from \(range.lowerBound) to \(range.upperBound), got \(got)")
        }
        return number.doubleValue
    }
}

/// A request the server cannot serve; answered as `{"error": message}`.
struct ServeError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

/// The layers, inputs and warm-up state of the requests seen so far.
final class ServeSession {
    let device: Device
    private var entries: [String: Entry] = [:]

    /// What a request key keeps between requests: the call (which holds the layer and its
    /// inputs) and whether it has been warmed up.
    private struct Entry {
        let call: () throws -> Void
    }

    init(device: Device) {
        self.device = device
    }

    /// The answer line to one request line.
    func answer(_ line: String) -> String {
        do {
            let parsed = try? JSONSerialization.jsonObject(with: Data(line.utf8))
            guard let object = parsed as? [String: Any] else {
                throw ServeError("a request is one JSON object per line, got: \(line.prefix(80))")
            }
            return try encode(try respond(object))
        } catch {
            let fallback = "{\"error\": \"unencodable error\"}"
            return (try? encode(["error": describe(error)])) ?? fallback
        }
    }

    private func respond(_ object: [String: Any]) throws -> [String: Any] {
        if let command = object["command"] {
            switch command as? String {
            case "info":
                let info = device.info
                return [
                    "device": info.name,
                    "device_line":
                        "\(info.name) (\(info.typeName), \(info.platformName), driver \(info.driverVersion)), \(info.computeUnits) compute units",
                    "operators": OperatorRegistry.all.map(\.name), "passes": ServeRequest.passes,
                ]
            case "clear":
                let layers = entries.count
                entries.removeAll()
                return ["cleared": layers, "released_bytes": device.releaseCachedMemory()]
            case "copy":
                return try copy(object)
            default:
                throw ServeError("unknown command \(command); commands: info, clear, copy")
            }
        }
        let request = try ServeRequest(object)
        var warmUp: Any = NSNull()
        let entry: Entry
        if let known = entries[request.key] {
            entry = known
        } else {
            entry = Entry(call: try makeCall(request))
            let (calls, seconds) = try warm(entry.call, calls: request.warmUpCalls, seconds: request.warmUpSeconds)
            warmUp = ["calls": calls, "seconds": seconds]
            entries[request.key] = entry
        }
        var hostMilliseconds: [Double] = []
        do {
            for _ in 1..<request.calls {
                hostMilliseconds.append(try callMilliseconds(entry.call))
            }
            // The last call also collects its launches' profiling events; its host time is
            // taken inside the profiling session, so the event queries after it are not counted.
            var lastMilliseconds = 0.0
            let (launches, kernelNanoseconds) = try device.context.measureLaunches {
                lastMilliseconds = try callMilliseconds(entry.call)
            }.launches.reduce((0, UInt64(0))) { ($0.0 + 1, $0.1 + $1.nanoseconds) }
            hostMilliseconds.append(lastMilliseconds)
            return [
                "op": request.operatorName, "pass": request.pass, "shape": request.shape,
                "options": request.options.values, "host_ms": hostMilliseconds,
                "kernel_only_ms": Double(kernelNanoseconds) * 1e-6, "launches": launches, "warm_up": warmUp,
            ]
        } catch {
            // A layer that failed mid-way is not trusted for the next request.
            entries[request.key] = nil
            throw error
        }
    }

    /// The call a request times, with its layer and inputs made once.
    private func makeCall(_ request: ServeRequest) throws -> () throws -> Void {
        let descriptor = try OperatorRegistry.named(request.operatorName)
        let layer = try descriptor.makeLayer(request.options, inputShape: request.shape, on: device)
        var inputs: [String: DeviceTensor] = [:]
        for (name, shape) in try descriptor.inputShapes(request.options, inputShape: request.shape)
        where name != "indices" {
            // APS's indices are optional: without them it chooses its phases, as in a network.
            let host = try HostTensor(shape: shape) { Float(($0 * 7919) % 1000) / 1000 }
            inputs[name] = try DeviceTensor(host, on: device)
        }
        let device = self.device
        func gradient() throws -> DeviceTensor {
            let gradOutput = try DeviceTensor(
                shape: try descriptor.outputShape(request.options, inputShape: request.shape), on: device)
            try device.context.fill(gradOutput.buffer, with: 1)
            return gradOutput
        }
        let call: () throws -> Void
        switch request.pass {
        case "forward":
            call = { _ = try layer(inputs) }
        case "training":
            call = { _ = try layer.forwardTraining(inputs) }
        case "backward":
            let (_, saved) = try layer.forwardTraining(inputs)
            let gradOutput = try gradient()
            call = { _ = try layer.backward(gradOutput, saved) }
        default:
            let gradOutput = try gradient()
            call = {
                let (_, saved) = try layer.forwardTraining(inputs)
                _ = try layer.backward(gradOutput, saved)
            }
        }
        return call
    }

    /// The first call (program builds, first allocations), then calls until at least `calls`
    /// of them and `seconds` of host time have passed: the steady state the timed calls see.
    private func warm(_ call: () throws -> Void, calls: Int, seconds: Double) throws -> (calls: Int, seconds: Double) {
        var elapsed = try callMilliseconds(call) * 1e-3
        var made = 1
        var steady = 0.0
        var steadyCalls = 0
        while steadyCalls < calls || steady < seconds {
            let time = try callMilliseconds(call) * 1e-3
            steady += time
            elapsed += time
            steadyCalls += 1
            made += 1
        }
        return (made, elapsed)
    }

    private func callMilliseconds(_ call: () throws -> Void) throws -> Double {
        try hostSeconds {
            try call()
            try device.synchronize()
        } * 1e3
    }

    /// `{"command": "copy", "shape": [...], "calls": n}`: the device's copy kernel on a tensor of
    /// that shape, the bandwidth yardstick of the kernel benchmarks (bytes read + written).
    private func copy(_ object: [String: Any]) throws -> [String: Any] {
        let shape = try ServeRequest.shape(object["shape"])
        let calls = try ServeRequest.integer(object["calls"], name: "calls", default: 20, range: 1...100_000)
        let source = try DeviceTensor(try HostTensor(shape: shape) { Float($0 % 1000) }, on: device)
        let destination = try DeviceTensor(shape: shape, on: device)
        let call = { try self.device.copy(source, into: destination) }
        _ = try warm(call, calls: 5, seconds: 0.2)
        var kernelMilliseconds: [Double] = []
        for _ in 0..<calls { kernelMilliseconds.append(try device.measure(call).kernelSeconds * 1e3) }
        let middle = median(kernelMilliseconds)
        return [
            "shape": shape, "kernel_only_ms": kernelMilliseconds,
            "gb_per_s": Double(source.count * 8) / max(middle * 1e-3, 1e-12) / 1e9,
        ]
    }

    private func encode(_ object: [String: Any]) throws -> String {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    private func describe(_ error: any Error) -> String {
        switch error {
        case let error as ServeError: return error.message
        case let error as NyquistError: return error.message
        case let error as OpenCLError: return error.description
        default: return String(describing: error)
        }
    }
}
