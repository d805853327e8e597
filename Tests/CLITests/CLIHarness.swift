import Foundation
import NyquistCore
import Testing

/// Runs the built `nyquist` executable as a subprocess.
enum CLI {
    /// What one invocation produced.
    struct Outcome: CustomStringConvertible {
        var status: Int32
        var standardOutput: String
        var standardError: String
        /// The signal that ended the process (a crash: SIGSEGV, SIGILL, SIGABRT), if any.
        var signal: Int32? = nil
        /// True when the process outlived its time limit and was killed.
        var timedOut = false

        /// The non-empty lines of standard error.
        var errorLines: [Substring] {
            standardError.split(separator: "\n", omittingEmptySubsequences: true)
        }

        var description: String {
            "exit \(status)\n--- stdout\n\(standardOutput)--- stderr\n\(standardError)"
        }
    }

    /// The `nyquist` executable: `NYQUIST_CLI` if set, else the `nyquist` file in the directory of
    /// the running test binary (SwiftPM's products directory, whatever the scratch path) or one
    /// of its parents.
    static func executable(named name: String = "nyquist") throws -> URL {
        let fileManager = FileManager.default
        if let path = ProcessInfo.processInfo.environment["NYQUIST_CLI"], !path.isEmpty {
            let cli = URL(fileURLWithPath: path)
            return name == "nyquist" ? cli : cli.deletingLastPathComponent().appendingPathComponent(name)
        }
        var starts: [URL] = []
        if let target = try? fileManager.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            starts.append(URL(fileURLWithPath: target))
        }
        if let first = CommandLine.arguments.first {
            starts.append(URL(fileURLWithPath: first).resolvingSymlinksInPath())
        }
        if let bundleExecutable = Bundle.main.executableURL { starts.append(bundleExecutable) }
        starts.append(Bundle.main.bundleURL)
        for start in starts {
            var directory = start.deletingLastPathComponent()
            for _ in 0..<6 {
                let candidate = directory.appendingPathComponent(name)
                var isDirectory: ObjCBool = false
                if fileManager.fileExists(atPath: candidate.path, isDirectory: &isDirectory), !isDirectory.boolValue,
                    fileManager.isExecutableFile(atPath: candidate.path)
                {
                    return candidate
                }
                directory = directory.deletingLastPathComponent()
            }
        }
        throw HarnessError(
            "no \(name) executable next to the test binary (searched from \(starts.map(\.path))); "
                + "build it (swift build) or set NYQUIST_CLI")
    }

    /// Runs `nyquist arguments...` in `directory` and waits for it; `environment` entries are
    /// added to (or replace) the inherited environment.
    ///
    /// `addressSpaceLimitKiB` runs the command under `ulimit -v` (through /bin/sh, which then
    /// execs it), so that an absurd allocation fails in the child instead of exhausting the
    /// machine; `timeLimit` kills a child that hangs (``Outcome/timedOut``).
    static func run(
        _ arguments: [String], in directory: URL, environment: [String: String] = [:], executableName: String = "nyquist",
        addressSpaceLimitKiB: Int? = nil, timeLimit: Double? = nil, standardInput: String? = nil
    ) throws -> Outcome {
        let process = Process()
        let executable = try executable(named: executableName)
        if let addressSpaceLimitKiB {
            process.executableURL = URL(fileURLWithPath: "/bin/sh")
            process.arguments = ["-c", "ulimit -v \(addressSpaceLimitKiB) && exec \"$0\" \"$@\"", executable.path] + arguments
        } else {
            process.executableURL = executable
            process.arguments = arguments
        }
        process.currentDirectoryURL = directory
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        // Files instead of pipes: no deadlock however much the child writes. They live outside
        // `directory` so that tests can check which files the command created.
        let id = UUID().uuidString
        let temporary = FileManager.default.temporaryDirectory
        let outURL = temporary.appendingPathComponent("nyquist-cli-\(id).stdout")
        let errURL = temporary.appendingPathComponent("nyquist-cli-\(id).stderr")
        let inURL = temporary.appendingPathComponent("nyquist-cli-\(id).stdin")
        for url in [outURL, errURL] where !FileManager.default.createFile(atPath: url.path, contents: nil) {
            throw HarnessError("cannot create \(url.path)")
        }
        if let standardInput, !FileManager.default.createFile(atPath: inURL.path, contents: Data(standardInput.utf8)) {
            throw HarnessError("cannot create \(inURL.path)")
        }
        defer {
            try? FileManager.default.removeItem(at: outURL)
            try? FileManager.default.removeItem(at: errURL)
            try? FileManager.default.removeItem(at: inURL)
        }
        let outHandle = try FileHandle(forWritingTo: outURL)
        let errHandle = try FileHandle(forWritingTo: errURL)
        process.standardOutput = outHandle
        process.standardError = errHandle
        process.standardInput = standardInput == nil ? FileHandle.nullDevice : try FileHandle(forReadingFrom: inURL)
        try process.run()
        var timedOut = false
        if let timeLimit {
            let deadline = Date().addingTimeInterval(timeLimit)
            while process.isRunning && Date() < deadline { usleep(10_000) }
            if process.isRunning {
                timedOut = true
                kill(process.processIdentifier, SIGKILL)
            }
        }
        process.waitUntilExit()
        try outHandle.close()
        try errHandle.close()
        let signaled = process.terminationReason == .uncaughtSignal
        return Outcome(
            status: process.terminationStatus,
            standardOutput: String(decoding: try Data(contentsOf: outURL), as: UTF8.self),
            standardError: String(decoding: try Data(contentsOf: errURL), as: UTF8.self),
            signal: signaled && !timedOut ? process.terminationStatus : nil, timedOut: timedOut)
    }
}

/// A harness failure (not a product failure).
struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A temporary directory for one test's files, removed by ``remove()``.
struct Workspace {
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("nyquist-cli-tests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(at: directory)
    }

    func url(_ name: String) -> URL { directory.appendingPathComponent(name) }

    func exists(_ name: String) -> Bool { FileManager.default.fileExists(atPath: url(name).path) }

    /// The names of the files in the workspace, sorted.
    func files() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
    }

    /// Writes `tensor` as `name` (float32 .npy) and returns the name.
    @discardableResult
    func write(_ tensor: HostTensor, _ name: String) throws -> String {
        try NPY.write(tensor, to: url(name))
        return name
    }

    /// Writes raw bytes as `name` and returns the name.
    @discardableResult
    func write(bytes: [UInt8], _ name: String) throws -> String {
        try Data(bytes).write(to: url(name))
        return name
    }

    /// Reads the .npy file `name`.
    func read(_ name: String) throws -> HostTensor {
        try NPY.read(contentsOf: url(name))
    }

    /// Runs `nyquist arguments...` here.
    func run(_ arguments: [String], environment: [String: String] = [:], executableName: String = "nyquist") throws
        -> CLI.Outcome
    {
        try CLI.run(arguments, in: directory, environment: environment, executableName: executableName)
    }
}


/// max |a - b| / max |b|.
func maxRelativeError(_ a: HostTensor, _ b: HostTensor) -> Double {
    var difference = 0.0
    var magnitude = 0.0
    for (x, y) in zip(a.values, b.values) {
        difference = max(difference, abs(Double(x) - Double(y)))
        magnitude = max(magnitude, abs(Double(y)))
    }
    return magnitude > 0 ? difference / magnitude : difference
}

/// A hand-written `.npy` v1.0 file with dtype `descr` (e.g. `<i4`), `shape` and raw `payload`.
func handWrittenNPY(descr: String, shape: [Int], payload: [UInt8]) -> [UInt8] {
    let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
    let unpadded = 10 + header.utf8.count + 1
    header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
    let length = header.utf8.count
    return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(header.utf8)
        + payload
}

/// Expects the CLI contract for bad input: non-zero exit (`status` when given), exactly one
/// stderr line starting `nyquist: error:` (containing `mentioning` when given), nothing on
/// stdout, and none of `outputs` created.
func expectCLIError(
    _ outcome: CLI.Outcome, in workspace: Workspace, outputs: [String] = ["y.npy"], mentioning: String? = nil,
    status: Int32? = nil, sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(outcome.status != 0, "\(outcome)", sourceLocation: sourceLocation)
    if let status {
        #expect(outcome.status == status, "\(outcome)", sourceLocation: sourceLocation)
    }
    #expect(outcome.errorLines.count == 1, "\(outcome)", sourceLocation: sourceLocation)
    #expect(outcome.standardError.hasPrefix("nyquist: error: "), "\(outcome)", sourceLocation: sourceLocation)
    if let mentioning {
        #expect(outcome.standardError.contains(mentioning), "\(outcome)", sourceLocation: sourceLocation)
    }
    #expect(outcome.standardOutput.isEmpty, "\(outcome)", sourceLocation: sourceLocation)
    for output in outputs {
        #expect(!workspace.exists(output), "\(output) was created: \(outcome)", sourceLocation: sourceLocation)
    }
}
