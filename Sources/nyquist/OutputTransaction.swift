import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Writes every output of one command all or nothing.
///
/// Each file is first written to a temporary file beside its destination; only when every one
/// of them was written are they renamed into place. A pre-existing destination is kept as a
/// hard link until the end, so a rename that fails halfway puts every earlier destination back
/// as it was. On any failure the temporaries, the new files and the folders this transaction
/// created are removed, and the error is one line that names the file.
///
/// Renames within one folder are atomic on POSIX file systems, which is why the temporaries live
/// beside their destinations rather than in /tmp (possibly another file system).
struct OutputTransaction {
    private struct Staged {
        let destination: URL
        let createsFolder: Bool
        let write: (URL) throws -> Void
    }

    private var staged: [Staged] = []

    /// Adds `destination`, whose bytes `write` produces when given the temporary file's URL.
    /// `createsFolder` (the `--extra` files) creates its missing folders; other destinations
    /// must be in a folder that exists, so that a typo in a path is an error, not a new tree.
    mutating func stage(_ destination: URL, createsFolder: Bool = false, write: @escaping (URL) throws -> Void) {
        staged.append(Staged(destination: destination.standardizedFileURL, createsFolder: createsFolder, write: write))
    }

    /// The destinations staged so far, in order.
    var destinations: [URL] { staged.map(\.destination) }

    /// Writes every staged file, then moves them all into place; on failure leaves the file
    /// system as it was and throws a ``CLIFailure``.
    func commit() throws {
        try checkDestinations()
        var createdFolders: [URL] = []
        var temporaries: [URL] = []
        var backups: [(destination: URL, backup: URL)] = []
        var placed: [URL] = []
        func rollBack() {
            for url in temporaries { unlink(url.path) }
            // Newly placed files go; replaced ones come back from their links.
            for url in placed where !backups.contains(where: { $0.destination == url }) { unlink(url.path) }
            for (destination, backup) in backups { rename(backup.path, destination.path) }
            for folder in createdFolders.reversed() { rmdir(folder.path) }
        }
        do {
            for file in staged where file.createsFolder {
                createdFolders += try makeFolders(for: file.destination)
            }
            for file in staged {
                let temporary = Self.temporaryURL(beside: file.destination, tag: "new")
                temporaries.append(temporary)
                do {
                    try file.write(temporary)
                } catch {
                    throw CLIFailure("cannot write \(file.destination.path): \(Self.reason(error))")
                }
            }
            for file in staged where Self.existsAsNonFolder(file.destination) {
                let backup = Self.temporaryURL(beside: file.destination, tag: "old")
                guard link(file.destination.path, backup.path) == 0 else {
                    throw CLIFailure("cannot replace \(file.destination.path): \(Self.errnoText())")
                }
                backups.append((file.destination, backup))
            }
            for (file, temporary) in zip(staged, temporaries) {
                guard rename(temporary.path, file.destination.path) == 0 else {
                    throw CLIFailure("cannot write \(file.destination.path): \(Self.errnoText())")
                }
                placed.append(file.destination)
            }
        } catch {
            rollBack()
            throw error
        }
        for (_, backup) in backups { unlink(backup.path) }
    }

    /// Refuses two outputs with one path and a destination that is a folder, before anything
    /// is written.
    private func checkDestinations() throws {
        var seen = Set<String>()
        for file in staged {
            guard seen.insert(file.destination.path).inserted else {
                throw CLIFailure("two outputs of this command name the same file \(file.destination.path)")
            }
            var isFolder: ObjCBool = false
            if FileManager.default.fileExists(atPath: file.destination.path, isDirectory: &isFolder), isFolder.boolValue {
                throw CLIFailure("cannot write \(file.destination.path): it is a folder")
            }
        }
    }

    /// Creates the missing folders above `destination` and returns them, outermost first.
    private func makeFolders(for destination: URL) throws -> [URL] {
        var missing: [URL] = []
        var folder = destination.deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: folder.path), folder.path != "/" {
            missing.insert(folder, at: 0)
            folder = folder.deletingLastPathComponent()
        }
        var created: [URL] = []
        for folder in missing {
            guard mkdir(folder.path, 0o755) == 0 else {
                let reason = Self.errnoText()
                for made in created.reversed() { rmdir(made.path) }
                throw CLIFailure("cannot create the folder \(folder.path): \(reason)")
            }
            created.append(folder)
        }
        return created
    }

    private static func temporaryURL(beside destination: URL, tag: String) -> URL {
        let name = ".\(destination.lastPathComponent).nyquist-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        return destination.deletingLastPathComponent().appendingPathComponent(name)
    }

    /// True for a file, link or other non-folder entry at `url` (not following links: a
    /// replaced link is restored as the link it was).
    private static func existsAsNonFolder(_ url: URL) -> Bool {
        var info = stat()
        return lstat(url.path, &info) == 0 && (info.st_mode & S_IFMT) != S_IFDIR
    }

    private static func errnoText() -> String {
        String(cString: strerror(errno))
    }

    /// One line for any error a writer throws (Foundation's included).
    static func reason(_ error: any Error) -> String {
        CLIFailure(error).message
    }
}
