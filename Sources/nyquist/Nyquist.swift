import ArgumentParser
import Foundation

/// The `nyquist` command-line tool: lists OpenCL devices, runs one pooling operator on `.npy` or
/// `.png` files (on an OpenCL device or the CPU reference), runs the built-in parity and timing
/// demo, and writes PNG pictures of the operators.
///
/// Every failure, usage errors included, prints exactly one line, `nyquist: error: <message>`, on
/// standard error and exits non-zero; help and version requests print as ArgumentParser does.
@main
struct Nyquist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nyquist",
        abstract: "Anti-aliased pooling operators on OpenCL, with a CPU reference.",
        discussion: """
            Tensors are NCHW .npy files (little-endian float32 or float64 in, float32 out); \
            `run` also reads and writes .png images (see `nyquist run --help`). \
            The device comes from --device, else NYQUIST_DEVICE (an index or a name substring), \
            else the first GPU, else the first OpenCL device.
            """,
        subcommands: [Devices.self, Run.self, Demo.self, Eval.self, Picture.self, Bench.self])

    /// Parses the command line, runs the chosen subcommand and reports failures in the CLI's
    /// one-line format.
    static func main() {
        var command: any ParsableCommand
        do {
            command = try parseAsRoot()
        } catch {
            exitReporting(error)
        }
        do {
            try command.run()
        } catch {
            exitReporting(error)
        }
    }

    /// Ends the process for `error`: help and version requests (successes) print as
    /// ArgumentParser does; every failure prints one `nyquist: error:` line and exits non-zero.
    private static func exitReporting(_ error: any Error) -> Never {
        if CLIFailure.isReportable(error) {
            let failure = CLIFailure(error)
            Console.error("nyquist: error: \(failure.message)")
            Foundation.exit(failure.exitCode)
        }
        let code = exitCode(for: error)
        guard code != .success else { exit(withError: error) }
        let message = CLIFailure.oneLine(Nyquist.message(for: error))
        Console.error(message.isEmpty ? "nyquist: error: exit status \(code.rawValue)" : "nyquist: error: \(message) (see 'nyquist help')")
        Foundation.exit(code.rawValue)
    }
}
