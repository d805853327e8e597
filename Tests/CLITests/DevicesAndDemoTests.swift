import Foundation
import Testing

@Suite("nyquist devices and demo")
struct DevicesAndDemoTests {
    @Test("devices lists at least one device and marks the default")
    func listsDevices() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(["devices"])
        #expect(outcome.status == 0, "\(outcome)")
        #expect(outcome.standardError.isEmpty, "\(outcome)")
        let lines = outcome.standardOutput.split(separator: "\n")
        let header = try #require(lines.first)
        for column in ["index", "name", "type", "platform", "driver", "global memory", "compute units"] {
            #expect(header.contains(column), "\(outcome)")
        }
        let deviceRows = lines.dropFirst().filter { $0.first == "*" || $0.first == " " }
        #expect(!deviceRows.isEmpty, "\(outcome)")
        #expect(deviceRows.contains { $0.hasPrefix("*") }, "\(outcome)")
    }

    @Test("devices without any OpenCL platform names the package to install")
    func noPlatform() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        // ocl-icd reads the vendor .icd files from OCL_ICD_VENDORS: an empty directory hides all.
        let empty = workspace.url("no-vendors")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        let outcome = try workspace.run(["devices"], environment: ["OCL_ICD_VENDORS": empty.path])
        #expect(outcome.status == 1, "\(outcome)")
        #expect(outcome.errorLines.count == 1, "\(outcome)")
        #expect(outcome.standardError.hasPrefix("nyquist: error: "), "\(outcome)")
        #expect(outcome.standardError.contains("pocl-opencl-icd"), "\(outcome)")
    }

    @Test(
        "help exits 0 and describes the command",
        arguments: [["--help"], ["run", "--help"], ["devices", "--help"], ["demo", "--help"], ["help", "run"]])
    func help(_ arguments: [String]) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(arguments)
        #expect(outcome.status == 0, "\(outcome)")
        #expect(outcome.standardOutput.contains("OVERVIEW:"), "\(outcome)")
        #expect(outcome.standardOutput.contains("USAGE: nyquist"), "\(outcome)")
        #expect(!outcome.standardError.contains("error"), "\(outcome)")
    }

    @Test("demo passes and prints a row for every operator")
    func demo() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(["demo"])
        #expect(outcome.status == 0, "\(outcome)")
        #expect(!outcome.standardError.contains("error"), "\(outcome)")
        let lines = outcome.standardOutput.split(separator: "\n")
        #expect(lines.first?.hasPrefix("device: ") == true, "\(outcome)")
        for op in ["max-pool", "avg-pool", "blur-pool", "max-blur-pool", "aps-pool", "tips-pool", "adaptive-blur-pool"] {
            let rows = lines.filter { $0.hasPrefix(op + " ") }
            #expect(rows.contains { $0.contains("forward") }, "\(op): \(outcome)")
            #expect(rows.contains { $0.contains("backward") }, "\(op): \(outcome)")
        }
        let liftRows = lines.filter { $0.hasPrefix("lift-down-pool ") }
        #expect(liftRows.contains { $0.contains("forward") } && liftRows.contains { $0.contains("backward") }, "\(outcome)")
        #expect(lines.contains { $0.hasPrefix("lift-up-pool ") }, "\(outcome)")
        #expect(outcome.standardOutput.contains("max rel err"), "\(outcome)")
    }
}
