import Foundation
import Testing

// `nyquist bench` and `nyquist-bench` run the same NyquistBenchmarkSuite code. These tests check
// that the smoke run works end to end and that its outputs carry what the docs promise; they
// never assert how fast anything is. Each run gets its own program cache directory through the
// child's environment, so that the start-up test sees a really empty cache.

@Suite("nyquist bench")
struct BenchTests {
    private func cacheEnvironment(_ workspace: Workspace) -> [String: String] {
        ["NYQUIST_CACHE_DIR": workspace.url("program-cache").path, "NYQUIST_PROGRAM_CACHE": "on"]
    }

    private func readJSON(_ workspace: Workspace, _ name: String) throws -> [String: Any] {
        let data = try Data(contentsOf: workspace.url(name))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test("bench --smoke writes a table, JSON and Markdown for the chosen operators")
    func smokeRun() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(
            ["bench", "--smoke", "--operators", "max-pool,adaptive-blur-pool,lift-up-pool", "--json", "b.json", "--markdown", "b.md"],
            environment: cacheEnvironment(workspace))
        #expect(outcome.status == 0, "\(outcome)")
        for column in ["op", "GB/s", "of copy", "GFLOP/s", "of peak", "speed-up", "mem MB"] {
            #expect(outcome.standardOutput.contains(column), "\(outcome)")
        }
        #expect(outcome.standardOutput.contains("peak: "), "\(outcome)")

        let json = try readJSON(workspace, "b.json")
        let peak = try #require(json["peak_gflop_per_s"] as? Double)
        #expect(peak.isFinite && peak > 0)
        let peaks = try #require(json["peak_measured_gflop_per_s"] as? [Double])
        #expect(peaks.count == 2 && peak == peaks.max(), "the peak is the better of the start and end probes: \(peaks)")
        let copies = try #require(json["copy"] as? [[String: Any]])
        #expect(copies.count == 2, "one copy baseline per smoke shape")
        var copyBandwidth: [String: Double] = [:]
        for copy in copies {
            // Measured before and after the shape's rows; the faster one is the yardstick.
            let measured = try #require(copy["measured_ms"] as? [Double], "\(copy)")
            #expect(measured.count == 2 && copy["ms"] as? Double == measured.min(), "\(copy)")
            let shapeName = try #require(copy["shape_name"] as? String)
            copyBandwidth[shapeName] = copy["gb_per_s"] as? Double
        }
        let rows = try #require(json["rows"] as? [[String: Any]])
        // 3 operators x 2 passes x 2 smoke shapes.
        #expect(rows.count == 12)
        #expect(Set(rows.compactMap { $0["op"] as? String }) == ["max-pool", "adaptive-blur-pool", "lift-up-pool"])
        for row in rows {
            let milliseconds = try #require(row["ms"] as? Double)
            #expect(milliseconds.isFinite && milliseconds > 0, "\(row)")
            #expect((row["bytes"] as? Int ?? 0) > 0, "\(row)")
            #expect(row["device_peak_bytes"] is Int, "\(row)")
            let bandwidth = try #require(row["gb_per_s"] as? Double)
            let shapeName = try #require(row["shape_name"] as? String)
            let copy = try #require(copyBandwidth[shapeName])
            let fraction = try #require(row["copy_fraction"] as? Double)
            #expect(abs(fraction - bandwidth / copy) <= 1e-9 * fraction, "of copy uses the shape's copy row: \(row)")
            let isAdaptive = row["op"] as? String == "adaptive-blur-pool"
            #expect((row["peak_fraction"] is Double) == isAdaptive, "only FLOP-counted rows have a fraction of peak: \(row)")
            if row["op"] as? String == "lift-up-pool" {
                #expect(row["reference_ms"] is NSNull, "lift-up-pool has no reference column: \(row)")
            } else if row["pass"] as? String == "forward" {
                #expect(row["reference_ms"] is Double, "smoke shapes are small enough for the reference: \(row)")
            } else {
                #expect(row["reference_ms"] is NSNull, "the reference is timed on forward only: \(row)")
            }
        }
        let markdown = try String(contentsOf: workspace.url("b.md"), encoding: .utf8)
        #expect(markdown.contains("Measured multiply-add peak"))
        #expect(markdown.contains("| max-pool | forward |"))
    }

    @Test("bench --startup reports cold and warm first calls, warm ones served by the disk cache")
    func startup() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(
            ["bench", "--smoke", "--startup", "--operators", "avg-pool,blur-pool", "--json", "s.json"],
            environment: cacheEnvironment(workspace))
        #expect(outcome.status == 0, "\(outcome)")
        #expect(outcome.standardOutput.contains("cold ms"), "\(outcome)")
        let rows = try #require(try readJSON(workspace, "s.json")["startup"] as? [[String: Any]])
        #expect(rows.compactMap { $0["op"] as? String } == ["avg-pool", "blur-pool"])
        for row in rows {
            #expect((row["cold_builds"] as? Int ?? 0) >= 1, "an empty cache compiles: \(row)")
            #expect((row["warm_disk_hits"] as? Int ?? 0) >= 1, "a fresh context loads from disk: \(row)")
            #expect(row["warm_builds"] as? Int == 0, "nothing is compiled when warm: \(row)")
        }
    }

    @Test("nyquist-bench --smoke runs the same suite")
    func benchExecutable() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(
            ["--smoke", "--operators", "avg-pool", "--json", "b.json"], environment: cacheEnvironment(workspace),
            executableName: "nyquist-bench")
        #expect(outcome.status == 0, "\(outcome)")
        let rows = try #require(try readJSON(workspace, "b.json")["rows"] as? [[String: Any]])
        #expect(rows.count == 4)
    }

    @Test(
        "bad selections give one error line and write nothing",
        arguments: [
            (["--operators", "nonsense-pool"], "nonsense-pool"), (["--shapes", "square"], "square"),
            (["--batch", "0"], "--batch"), (["--batch", "8,x"], "--batch"),
        ])
    func badSelection(_ arguments: [String], _ mentioning: String) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(
            ["bench"] + arguments + ["--json", "b.json"], environment: cacheEnvironment(workspace))
        expectCLIError(outcome, in: workspace, outputs: ["b.json"], mentioning: mentioning)
    }

    @Test("bench --serve answers each request line, errors included, and keeps going")
    func serve() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        // Tiny shapes and no timed warm-up: the protocol is checked, never how fast anything is.
        let request = #"{"op": "blur-pool", "shape": [1, 3, 8, 8], "calls": 2, "warmup_calls": 1, "warmup_seconds": 0}"#
        let lines = [
            #"{"command": "info"}"#, request, request, #"{"op": "nonsense-pool", "shape": [1, 3, 8, 8]}"#,
            #"{"op": "blur-pool", "shape": [1, 3, -8, 8]}"#, "not json",
            #"{"op": "max-pool", "pass": "training+backward", "shape": [2, 3, 7, 9], "options": {"kernel": 3, "stride": 2, "pad": 1}, "warmup_calls": 0, "warmup_seconds": 0}"#,
            #"{"command": "clear"}"#,
        ]
        let outcome = try CLI.run(
            ["bench", "--serve"], in: workspace.directory, environment: cacheEnvironment(workspace),
            timeLimit: 120, standardInput: lines.joined(separator: "\n") + "\n")
        #expect(outcome.status == 0, "\(outcome)")
        let answers = try outcome.standardOutput.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        }
        try #require(answers.count == lines.count, "one answer per request: \(outcome)")
        #expect(answers[0]["device"] is String)
        for (index, answer) in answers.enumerated() where [1, 2, 6].contains(index) {
            let times = try #require(answer["host_ms"] as? [Double], "\(answer)")
            #expect(times.count == (index == 6 ? 1 : 2) && times.allSatisfy { $0.isFinite && $0 >= 0 }, "\(answer)")
            #expect(answer["kernel_only_ms"] is Double, "\(answer)")
        }
        #expect(answers[1]["warm_up"] is [String: Any], "the first request for a key warms it up")
        #expect(answers[2]["warm_up"] is NSNull, "a repeated request reuses the warm layer")
        #expect((answers[3]["error"] as? String)?.contains("nonsense-pool") == true, "\(answers[3])")
        #expect((answers[4]["error"] as? String)?.contains("shape") == true, "\(answers[4])")
        #expect(answers[5]["error"] is String, "\(answers[5])")
        #expect(answers[7]["cleared"] as? Int == 2, "\(answers[7])")
    }
}
