import Foundation
import NyquistCL
import NyquistCore

/// A failure the CLI reports as one `nyquist: error:` line with a chosen exit status.
struct CLIFailure: Error, CustomStringConvertible {
    /// Exit status for bad input of any kind.
    static let generalExitCode: Int32 = 1
    /// Exit status for an operator the contract names but this build does not implement yet.
    static let notImplementedExitCode: Int32 = 2

    /// The message, already reduced to one line.
    let message: String
    /// The process exit status.
    let exitCode: Int32

    /// A failure with `message` (newlines are folded into spaces) and `exitCode`.
    init(_ message: String, exitCode: Int32 = CLIFailure.generalExitCode) {
        self.message = CLIFailure.oneLine(message)
        self.exitCode = exitCode
    }

    /// Converts any error into a one-line failure: Nyquist's and OpenCL's errors keep their
    /// messages, device selection errors drop the OpenCL call name.
    init(_ error: any Error) {
        switch error {
        case let failure as CLIFailure:
            self = failure
        case let error as NyquistError:
            self.init(error.message)
        case let error as OpenCLError:
            if ["clGetPlatformIDs", "selectDevice"].contains(error.call), !error.detail.isEmpty {
                self.init(error.detail)
            } else {
                self.init(error.description)
            }
        case let error as CocoaError:
            self.init(Self.describe(error))
        case let error as POSIXError:
            self.init(error.localizedDescription)
        default:
            self.init(String(describing: error))
        }
    }

    /// Foundation's file errors as one line: its sentence, plus the system's reason when it
    /// carries one ("No space left on device").
    private static func describe(_ error: CocoaError) -> String {
        var text = error.localizedDescription
        if let underlying = error.userInfo[NSUnderlyingErrorKey] as? NSError {
            text += " (\(underlying.localizedDescription))"
        }
        return text
    }

    var description: String { message }

    /// True for the errors whose message ``init(_:)-(any Error)`` words: the CLI's own,
    /// Nyquist's, OpenCL's and Foundation's file errors. ArgumentParser's outcomes (help,
    /// usage errors, exit codes) are worded by ArgumentParser.
    static func isReportable(_ error: any Error) -> Bool {
        error is CLIFailure || error is NyquistError || error is OpenCLError || error is CocoaError || error is POSIXError
    }

    /// Folds every line break (and the blanks around it) into a single space.
    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
            .joined(separator: " ")
    }
}

/// Writing to the standard streams.
enum Console {
    /// Writes `line` and a newline to standard error, unbuffered.
    static func error(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    /// Writes `text` to standard error without a newline (progress lines).
    static func errorRaw(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }

    /// True when standard error is a terminal (progress can then overwrite itself).
    static var standardErrorIsTerminal: Bool { isatty(STDERR_FILENO) == 1 }
}

/// Formatting helpers shared by the subcommands.
enum Format {
    /// `value` with `digits` digits after the point.
    static func fixed(_ value: Double, _ digits: Int) -> String {
        String(format: "%.\(digits)f", value)
    }

    /// `value` in scientific notation with two significant decimals (`1.25e-07`).
    static func scientific(_ value: Double) -> String {
        String(format: "%.2e", value)
    }

    /// A byte count in GiB or MiB.
    static func bytes(_ count: Int) -> String {
        let gib = Double(count) / Double(1 << 30)
        return gib >= 1 ? fixed(gib, 1) + " GiB" : fixed(Double(count) / Double(1 << 20), 0) + " MiB"
    }

    /// Left-aligned columns separated by two spaces; `rightAligned` columns are padded on the left.
    static func table(_ rows: [[String]], rightAligned: Set<Int> = []) -> [String] {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        return rows.map { row in
            row.enumerated().map { index, cell in
                let padding = String(repeating: " ", count: widths[index] - cell.count)
                return rightAligned.contains(index) ? padding + cell : cell + padding
            }
            .joined(separator: "  ")
            .trimmingTrailingSpaces()
        }
    }

    /// `[2, 3, 4, 5]` as `2x3x4x5`.
    static func shape(_ shape: [Int]) -> String {
        shape.map(String.init).joined(separator: "x")
    }
}

extension String {
    /// The string without trailing spaces.
    func trimmingTrailingSpaces() -> String {
        var end = endIndex
        while end > startIndex, self[index(before: end)] == " " { end = index(before: end) }
        return String(self[..<end])
    }
}
