import Foundation
import Nyquist
import Synchronization
import Testing
import _NyquistTestSupport

/// Collects, per operator and pass, the tolerance, the worst error and NMSE and the cases run,
/// and writes docs/parity.md from them when `NYQUIST_PARITY_REPORT=<path>` is set
/// (`make parity-report`).
///
/// Tests run in parallel and swift-testing has no global teardown, so every record goes into one
/// process-wide table under a lock, and the ``Trait/parityReport`` trait rewrites the whole
/// report after each test of the suites that carry it. The last test to finish therefore writes
/// a report that holds every record, whatever order the tests ran in; the rows are sorted, so
/// the text does not depend on that order either. Writing after each test rather than at each
/// record keeps the cost to a few hundred small writes.
enum ParityReport {
    /// One row of the report: everything seen for one (operator, pass).
    struct Row {
        var tolerance = 0.0
        var worstRelative = 0.0
        /// nil while only comparisons without an NMSE (scalars, grouped errors) were recorded.
        var worstNMSE: Double?
        var worstCase = ""
        var cases = 0
        var failures = 0
        var shapes = Set<[Int]>()
    }

    struct Key: Hashable {
        let section: Section
        let operatorName: String
        let pass: String
    }

    /// The report's sections, in the order they are written.
    enum Section: Int, CaseIterable, Comparable {
        case window, polyphase, lift, adaptive

        static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    }

    private static let table = Mutex<[Key: Row]>([:])
    private static let device = Mutex<String>("")

    /// Adds one comparison. `shape` is the input shape of the case, `label` names the case
    /// (configuration and shape) for the "worst case" column.
    static func record(
        _ section: Section, _ operatorName: String, _ pass: String, tolerance: Double, _ discrepancy: Discrepancy,
        shape: [Int], label: String
    ) {
        record(
            section, operatorName, pass, tolerance: tolerance, relative: discrepancy.relativeError,
            nmse: discrepancy.nmse, passed: discrepancy.within(tolerance), shape: shape, label: label)
    }

    /// Adds one comparison measured by other means than a ``Discrepancy`` (a scalar loss, an
    /// error taken relative to a group of tensors); `nmse` is nil where it has no meaning.
    static func record(
        _ section: Section, _ operatorName: String, _ pass: String, tolerance: Double, relative: Double,
        nmse: Double?, passed: Bool, shape: [Int], label: String
    ) {
        table.withLock { rows in
            var row = rows[Key(section: section, operatorName: operatorName, pass: pass)] ?? Row()
            row.tolerance = max(row.tolerance, tolerance)
            row.cases += 1
            if !passed { row.failures += 1 }
            row.shapes.insert(shape)
            // Ties go to the smallest label, so the column does not depend on which parallel
            // test recorded first.
            if row.worstCase.isEmpty || relative > row.worstRelative
                || (relative == row.worstRelative && label < row.worstCase)
            {
                row.worstRelative = max(row.worstRelative, relative)
                row.worstCase = label
            }
            if let nmse, nmse.isFinite { row.worstNMSE = max(row.worstNMSE ?? 0, nmse) }
            rows[Key(section: section, operatorName: operatorName, pass: pass)] = row
        }
    }

    /// Rewrites the report if `NYQUIST_PARITY_REPORT` names a path. Called after every test.
    static func flush() {
        guard let path = ProcessInfo.processInfo.environment["NYQUIST_PARITY_REPORT"], !path.isEmpty else { return }
        let deviceName = device.withLock { name in
            if name.isEmpty, let found = try? TestDevice.get() {
                name = "\(found.info.name) (\(found.info.typeName), OpenCL driver \(found.info.driverVersion))"
            }
            return name
        }
        // One writer at a time, with the table as it is now: a later flush holds at least as much.
        table.withLock { rows in
            let text = render(rows, device: deviceName)
            do {
                try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
            } catch {
                Issue.record("cannot write the parity report to \(path): \(error)")
            }
        }
    }

    /// The order passes are listed in within an operator, by how their names begin ("forward",
    /// then "forward: filters", ...); anything else follows, alphabetically.
    private static let passOrder = [
        "forward", "training forward", "backward", "frozen BatchNorm forward", "frozen BatchNorm backward",
    ]

    private static func passRank(_ pass: String) -> (Int, String) {
        let rank = passOrder.lastIndex { pass == $0 || pass.hasPrefix($0 + ":") } ?? passOrder.count
        return (rank, pass)
    }

    /// Two significant digits, "0" for an exact match.
    static func format(_ value: Double) -> String {
        if value == 0 { return "0" }
        if !value.isFinite { return "\(value)" }
        return String(format: "%.1e", value)
    }

    static func render(_ rows: [Key: Row], device: String) -> String {
        var text = ParityReportText.header(device: device)
        for section in Section.allCases {
            let keys = rows.keys.filter { $0.section == section }.sorted {
                ($0.operatorName, passRank($0.pass).0, passRank($0.pass).1)
                    < ($1.operatorName, passRank($1.pass).0, passRank($1.pass).1)
            }
            text += ParityReportText.introduction(section)
            if keys.isEmpty {
                text += "\nNo case of this section ran in the run that wrote this file.\n"
                continue
            }
            text += "\n| operator | pass | tolerance | worst relative error | worst NMSE | cases | failed | worst case |\n"
            text += "|---|---|---|---|---|---|---|---|\n"
            var shapes = Set<[Int]>()
            for key in keys {
                guard let row = rows[key] else { continue }
                shapes.formUnion(row.shapes)
                text += "| \(key.operatorName) | \(key.pass) | \(format(row.tolerance)) | \(format(row.worstRelative)) "
                text += "| \(row.worstNMSE.map(format) ?? "-") | \(row.cases) | \(row.failures) | \(row.worstCase) |\n"
            }
            let shapeList = shapes.sorted { $0.lexicographicallyPrecedes($1) }
                .map { $0.map(String.init).joined(separator: "x") }
            text += "\nInput shapes run (\(shapeList.count)): \(shapeList.joined(separator: ", ")).\n"
            text += ParityReportText.conclusion(section)
        }
        return text
    }
}

/// Rewrites the parity report after each test it is attached to (recursively for a suite).
struct ParityReportTrait: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        do {
            try await function()
        } catch {
            ParityReport.flush()
            throw error
        }
        ParityReport.flush()
    }
}

extension Trait where Self == ParityReportTrait {
    /// Records this suite's parity figures into the generated docs/parity.md.
    static var parityReport: Self { Self() }
}
