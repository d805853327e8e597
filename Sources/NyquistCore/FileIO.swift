import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Whole-file reads and atomic writes shared by the NPY, safetensors and PNG codecs (PNG lives in
/// NyquistImage, hence public).
///
/// This goes through POSIX rather than `Data(contentsOf:)` / `Data.write(to:options:)` because
/// the CLI promises one clear line per failure: `strerror` gives "No such file or directory" on
/// every platform, where Foundation's messages differ between Darwin and Linux and often carry
/// only an `NSCocoaErrorDomain` code. It also lets us control where the temporary file goes and
/// guarantee that it is removed on every failure path.
public enum FileIO {
    /// The readable text of a POSIX error number.
    private static func reason(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// The bytes of the file at `url`; every failure is `NyquistError(.io, "cannot read ...")`.
    public static func readBytes(contentsOf url: URL) throws -> [UInt8] {
        let path = url.path
        guard url.isFileURL else {
            throw NyquistError(.io, "cannot read \(url.absoluteString): not a file URL")
        }
        let fd: Int32 = url.withUnsafeFileSystemRepresentation { representation in
            guard let representation else { return -1 }
            return open(representation, O_RDONLY | O_CLOEXEC)
        }
        guard fd >= 0 else {
            throw NyquistError(.io, "cannot read \(path): \(reason(errno))")
        }
        defer { close(fd) }

        // The size is only a capacity hint: the file may change while we read, so we read to EOF.
        var info = stat()
        var capacity = 0
        if fstat(fd, &info) == 0 {
            if (info.st_mode & S_IFMT) == S_IFDIR {
                throw NyquistError(.io, "cannot read \(path): \(reason(EISDIR))")
            }
            capacity = Int(clamping: info.st_size)
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(capacity)
        let chunkSize = 1 << 20
        var chunk = [UInt8](repeating: 0, count: chunkSize)
        while true {
            let got = chunk.withUnsafeMutableBytes { buffer in
                read(fd, buffer.baseAddress, chunkSize)
            }
            if got < 0 {
                if errno == EINTR { continue }
                throw NyquistError(.io, "cannot read \(path): \(reason(errno))")
            }
            if got == 0 { break }
            bytes.append(contentsOf: chunk[0..<got])
        }
        return bytes
    }

    /// Writes `bytes` to `url` so that readers see either the old file or the complete new one.
    ///
    /// The data goes to a hidden temporary file in the destination directory (rename is only
    /// atomic within one file system), is flushed, and is then renamed over the destination.
    /// Any failure removes the temporary file, so no partial output is ever left behind.
    public static func writeAtomically(_ bytes: [UInt8], to url: URL) throws {
        let path = url.path
        guard url.isFileURL else {
            throw NyquistError(.io, "cannot write \(url.absoluteString): not a file URL")
        }
        let name = url.lastPathComponent
        guard !name.isEmpty, name != "/" else {
            throw NyquistError(.io, "cannot write \(path): the path names a directory, not a file")
        }
        let directory = url.deletingLastPathComponent()

        // O_EXCL with a random name instead of mkstemp: mkstemp creates mode 0600, whereas an
        // output file should get the user's usual permissions (0666 filtered by the umask).
        var temporary: URL?
        var fd: Int32 = -1
        for _ in 0..<100 {
            let candidate = directory.appendingPathComponent(
                ".\(name).\(String(UInt64.random(in: 0 ... .max), radix: 36)).tmp", isDirectory: false)
            fd = candidate.withUnsafeFileSystemRepresentation { representation in
                guard let representation else { return -1 }
                return open(representation, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
            }
            if fd >= 0 {
                temporary = candidate
                break
            }
            if errno != EEXIST {
                throw NyquistError(.io, "cannot write \(path): \(reason(errno))")
            }
        }
        guard let temporary, fd >= 0 else {
            throw NyquistError(.io, "cannot write \(path): could not create a unique temporary file")
        }

        func removeTemporary() {
            _ = temporary.withUnsafeFileSystemRepresentation { representation in
                representation.map { unlink($0) }
            }
        }

        var failure: Int32 = 0
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(fd, buffer.baseAddress.map { $0 + offset }, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    return
                }
                offset += written
            }
        }
        // Flush before the rename so that a crash cannot leave a renamed but empty file.
        if failure == 0 && fsync(fd) != 0 && errno != EINVAL {
            failure = errno
        }
        if close(fd) != 0 && failure == 0 && errno != EINTR {
            failure = errno
        }
        if failure != 0 {
            removeTemporary()
            throw NyquistError(.io, "cannot write \(path): \(reason(failure))")
        }

        let renamed: Int32 = temporary.withUnsafeFileSystemRepresentation { source in
            url.withUnsafeFileSystemRepresentation { destination in
                guard let source, let destination else { return -1 }
                return rename(source, destination) == 0 ? 0 : errno
            }
        }
        if renamed != 0 {
            removeTemporary()
            let why = renamed > 0 ? reason(renamed) : "the path cannot be represented on this file system"
            throw NyquistError(.io, "cannot write \(path): \(why)")
        }
    }
}
