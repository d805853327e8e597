import Foundation
import Testing

#if canImport(FoundationXML)
    import FoundationXML
#endif

@Suite("nyquist eval")
struct EvalTests {
    static let operators = [
        "max-pool", "avg-pool", "blur-pool", "max-blur-pool", "adaptive-blur-pool", "lift-down-pool", "aps-pool",
        "tips-pool",
    ]

    /// The parts of `nyquist eval --json` the tests read.
    struct Report: Decodable {
        struct Operator: Decodable {
            var name: String
            var circular: [Double]
            var zeroFilled: [Double]
            var maximumSamplingBias: Double
            var aliasedEnergyFraction: Double
            var perInput: [InputResult]
        }
        struct InputResult: Decodable {
            var input: String
            var circular: [Double]
        }
        var backend: String
        var inputShape: String
        var shifts: [Int]
        var operators: [Operator]
    }

    /// Counts the elements of an XML document by name; fails on malformed XML.
    final class ElementCounter: NSObject, XMLParserDelegate {
        var counts: [String: Int] = [:]
        var root: String?
        var text = ""

        func parser(
            _ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName: String?,
            attributes: [String: String] = [:]
        ) {
            if root == nil { root = elementName }
            counts[elementName, default: 0] += 1
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) {
            text += string
        }
    }

    @Test("eval writes a table, JSON with every operator and a well-formed SVG chart")
    func tableJSONAndChart() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(["eval", "--size", "48", "--json", "eval.json", "--svg", "eval.svg"])
        #expect(outcome.status == 0, "\(outcome)")
        // Progress: one line per operator on stderr (not a terminal here), no errors.
        for (index, name) in Self.operators.enumerated() {
            #expect(outcome.standardError.contains("[\(index + 1)/8] \(name):"), "\(outcome)")
        }
        #expect(!outcome.standardError.contains("error"), "\(outcome)")
        let lines = outcome.standardOutput.split(separator: "\n")
        #expect(lines.first?.hasPrefix("backend: opencl") == true, "\(outcome)")
        #expect(lines.dropFirst().first?.hasPrefix("op ") == true, "\(outcome)")
        for name in Self.operators {
            #expect(lines.filter { $0.hasPrefix(name + " ") }.count == 1, "\(name): \(outcome)")
        }

        let report = try JSONDecoder().decode(Report.self, from: Data(contentsOf: workspace.url("eval.json")))
        #expect(report.backend == "opencl")
        #expect(report.inputShape == "2x4x48x48")
        #expect(report.shifts == [1, 2, 3, 4])
        #expect(report.operators.map(\.name) == Self.operators)
        for entry in report.operators {
            #expect(entry.circular.count == 4 && entry.zeroFilled.count == 4, "\(entry.name)")
            #expect((entry.circular + entry.zeroFilled).allSatisfy { $0.isFinite && $0 >= 0 }, "\(entry.name)")
        }
        let byName = Dictionary(uniqueKeysWithValues: report.operators.map { ($0.name, $0) })
        // Known from the definitions: max pooling samples window maxima; k2 s2 pooling of an
        // even circular shift is the output shifted by d / 2 exactly; APS (one phase per sample,
        // circular) is circularly equivariant for every shift where no two phase norms tie (the
        // noise inputs; the zone plate and checkerboards are symmetric, so their phases can tie).
        #expect(byName["max-pool"]?.maximumSamplingBias == 1)
        #expect((byName["avg-pool"]?.maximumSamplingBias ?? 1) < 0.01)
        #expect(byName["max-pool"]?.circular[1] == 0)
        #expect(byName["avg-pool"]?.circular[3] == 0)
        let apsNoise = byName["aps-pool"]?.perInput.filter { ["pink noise", "random"].contains($0.input) } ?? []
        #expect(apsNoise.count == 2)
        #expect(apsNoise.allSatisfy { ($0.circular.max() ?? 1) < 1e-5 }, "\(apsNoise.map(\.circular))")
        #expect((byName["max-pool"]?.circular[0] ?? 0) > 0.1)
        let blurAliasing = try #require(byName["blur-pool"]?.aliasedEnergyFraction)
        let avgAliasing = try #require(byName["avg-pool"]?.aliasedEnergyFraction)
        #expect(blurAliasing < avgAliasing, "blur \(blurAliasing), avg \(avgAliasing)")

        let parser = try #require(XMLParser(contentsOf: workspace.url("eval.svg")))
        let counter = ElementCounter()
        parser.delegate = counter
        #expect(parser.parse(), "SVG is not well-formed XML: \(String(describing: parser.parserError))")
        #expect(counter.root == "svg")
        // Two panels (circular, zero-filled), one line per operator in each.
        #expect(counter.counts["polyline", default: 0] == 2 * Self.operators.count, "\(counter.counts)")
        #expect(counter.counts["circle", default: 0] == 2 * 4 * Self.operators.count + Self.operators.count)
        for name in Self.operators { #expect(counter.text.contains(name), "legend lacks \(name)") }
    }

    @Test("eval --json - prints JSON instead of the table, on the CPU reference")
    func jsonToStandardOutput() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(["eval", "--size", "48", "--backend", "reference", "--seed", "7", "--json", "-"])
        #expect(outcome.status == 0, "\(outcome)")
        let report = try JSONDecoder().decode(Report.self, from: Data(outcome.standardOutput.utf8))
        #expect(report.backend == "reference")
        #expect(report.operators.map(\.name) == Self.operators)
        #expect(try workspace.files().isEmpty)
    }

    @Test(
        "bad eval options fail with one line and write nothing",
        arguments: [
            (["--size", "47"], "48...256"),
            (["--size", "16"], "48...256"),
            (["--size", "1024"], "48...256"),
            (["--backend", "cuda"], "unknown backend 'cuda'"),
            (["--backend", "reference", "--device", "0"], "--device applies only"),
            (["--device", "no-such-device-name"], "no-such-device-name"),
            (["--svg", "missing/chart.svg"], "does not exist"),
            (["--json", "missing/eval.json"], "does not exist"),
            (["--json", "."], "is a directory"),
        ])
    func badOptions(arguments: [String], mentioning: String) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let outcome = try workspace.run(["eval"] + arguments)
        expectCLIError(outcome, in: workspace, outputs: [], mentioning: mentioning)
        #expect(try workspace.files().isEmpty, "\(outcome)")
    }
}
