import Foundation
import NyquistCore
import Testing


/// The committed fixture files, found next to this source file (not as bundle resources, so
/// the generator script and the tests see the same directory).
func fixtureURL(_ name: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("Fixtures", isDirectory: true)
        .appendingPathComponent(name, isDirectory: false)
}

/// Runs `body`, expects a ``NyquistError`` of `kind` whose one-line message contains each of
/// `fragments`, and returns it.
@discardableResult
func expectError<T>(
    _ kind: NyquistError.Kind, _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> T
) -> NyquistError? {
    do {
        let value = try body()
        Issue.record("expected a \(kind) error but got \(value)", sourceLocation: sourceLocation)
    } catch let error as NyquistError {
        #expect(error.kind == kind, "message: \(error.message)", sourceLocation: sourceLocation)
        for fragment in fragments {
            #expect(error.message.contains(fragment), "message: \(error.message)", sourceLocation: sourceLocation)
        }
        #expect(!error.message.contains("\n"), "message is not one line: \(error.message)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected NyquistError but got \(type(of: error)): \(error)", sourceLocation: sourceLocation)
    }
    return nil
}

/// Runs `body` in a fresh temporary directory that is removed afterwards.
@discardableResult
func withTemporaryDirectory<T>(_ body: (URL) throws -> T) throws -> T {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("nyquist-core-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try body(directory)
}

/// Names in `directory`, sorted.
func listing(_ directory: URL) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
}

/// Bit patterns, so NaN payloads, -0 and infinities compare exactly.
func bits(_ tensor: HostTensor) -> [UInt32] {
    tensor.values.map(\.bitPattern)
}

/// Little-endian bytes of `values` as float32.
func float32Bytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { value in withUnsafeBytes(of: value.bitPattern.littleEndian, Array.init) }
}

/// Little-endian bytes of `values` as float64.
func float64Bytes(_ values: [Double]) -> [UInt8] {
    values.flatMap { value in withUnsafeBytes(of: value.bitPattern.littleEndian, Array.init) }
}
