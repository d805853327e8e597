// Lists the public symbols of Nyquist's own modules that have no doc comment, from the symbol
// graphs `swift package dump-symbol-graph` writes, and exits 1 if there is any.
//
// Usage: swift docs/tools/doc-coverage.swift <symbol-graph folder> <sources folder>
//
// A symbol counts when its access level is public or open and its declaration lies in the
// sources folder, and it is documented when it has a doc comment of its own (not one inherited
// from a protocol requirement). That leaves out what the compiler synthesises or inherits from the standard
// library (Equatable's !=, CustomStringConvertible defaults), which has no place to write a
// comment. Symbol graphs of extensions to other modules' types (Module@Other.symbols.json) are
// read too, because a public member added there is still ours to document.
import Foundation

let arguments = CommandLine.arguments
guard arguments.count == 3 else {
    FileHandle.standardError.write(Data("usage: doc-coverage <symbol-graph folder> <sources folder>\n".utf8))
    exit(2)
}
let graphFolder = URL(fileURLWithPath: arguments[1])
let sourcesPrefix = URL(fileURLWithPath: arguments[2]).standardizedFileURL.path + "/"

struct Undocumented: Hashable, Comparable {
    let file: String
    let line: Int
    let name: String
    static func < (a: Self, b: Self) -> Bool { (a.file, a.line, a.name) < (b.file, b.line, b.name) }
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("doc-coverage: \(message)\n".utf8))
    exit(2)
}

let files: [String]
do {
    files = try FileManager.default.contentsOfDirectory(atPath: graphFolder.path).filter { $0.hasSuffix(".symbols.json") }
} catch {
    fail("cannot list \(graphFolder.path): \(error.localizedDescription)")
}
if files.isEmpty { fail("no .symbols.json files in \(graphFolder.path)") }

var missing = Set<Undocumented>()
var checked = 0
for file in files.sorted() {
    guard let data = FileManager.default.contents(atPath: graphFolder.appendingPathComponent(file).path),
        let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
        let symbols = root["symbols"] as? [[String: Any]]
    else { fail("cannot read \(file)") }
    for symbol in symbols {
        guard let access = symbol["accessLevel"] as? String, access == "public" || access == "open",
            let location = symbol["location"] as? [String: Any], let uri = location["uri"] as? String,
            let path = URL(string: uri)?.standardizedFileURL.path, path.hasPrefix(sourcesPrefix)
        else { continue }
        checked += 1
        // A symbol without a comment of its own inherits its protocol requirement's (or the
        // standard library's) in the graph; that comment's uri is the other declaration's file.
        // Only a comment written at the declaration counts: an implementation documents what it
        // does beyond the requirement, or at least says that it does nothing more.
        let comment = symbol["docComment"] as? [String: Any]
        let lines = comment?["lines"] as? [[String: Any]] ?? []
        let text = lines.compactMap { $0["text"] as? String }.joined().trimmingCharacters(in: .whitespaces)
        let own = (comment?["uri"] as? String).map { $0 == uri } ?? true
        if text.isEmpty || !own {
            let position = location["position"] as? [String: Any]
            let line = (position?["line"] as? Int ?? 0) + 1
            let names = symbol["names"] as? [String: Any]
            let pathComponents = (symbol["pathComponents"] as? [String])?.joined(separator: ".")
            let name = pathComponents ?? names?["title"] as? String ?? "?"
            missing.insert(Undocumented(file: String(path.dropFirst(sourcesPrefix.count)), line: line, name: name))
        }
    }
}

for entry in missing.sorted() {
    print("Sources/\(entry.file):\(entry.line): \(entry.name) has no doc comment")
}
print("doc-coverage: \(checked) public symbols checked, \(missing.count) undocumented")
exit(missing.isEmpty ? 0 : 1)
