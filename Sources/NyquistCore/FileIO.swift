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
    static func reason(_ code: Int32) -> String {
        String(cString: strerror(code))
    }

    /// The bytes of the regular file at `url` (see ``RegularFile/open(_:)`` for what is
    /// refused before opening); every failure is `NyquistError(.io, "cannot read ...")`, and a
    /// file larger than `limits.memoryBudget` is refused with `.sizeLimit` before it is read.
    public static func readBytes(contentsOf url: URL, limits: HostLimits = .current) throws -> [UInt8] {
        let file = try RegularFile.open(url)
        try limits.checkAllocation(bytes: file.size, what: "reading \(file.path)")
        return try file.read(at: 0, count: file.size)
    }

    /// What `mode` (a `st_mode`) names, for messages: "a FIFO", "a directory", ...
    static func describe(mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFDIR: "a directory"
        case S_IFSOCK: "a socket"
        case S_IFLNK: "a symbolic link"
        default: "not a regular file"
        }
    }

    /// A regular file open for reading, read in pieces at known offsets: the NPY and
    /// safetensors readers read a header, check the sizes it declares against ``size``, and
    /// only then read the payload.
    public final class RegularFile {
        /// The path, for messages.
        public let path: String
        /// The size in bytes when the file was opened.
        public let size: Int
        private let descriptor: Int32

        private init(path: String, size: Int, descriptor: Int32) {
            self.path = path
            self.size = size
            self.descriptor = descriptor
        }

        deinit { close(descriptor) }

        /// Opens `url` for reading after `stat` (which follows symbolic links) says it is a
        /// regular file. A FIFO, device (`/dev/zero`), directory or socket is refused without
        /// being opened, so that a FIFO with no writer cannot block and a device cannot feed an
        /// endless stream.
        ///
        /// - Throws: `.io` ("cannot read PATH: it is a FIFO, not a regular file", or the
        ///   system's reason when it cannot be found or opened).
        public static func open(_ url: URL) throws -> RegularFile {
            let path = url.path
            guard url.isFileURL else {
                throw NyquistError(.io, "cannot read \(url.absoluteString): not a file URL")
            }
            func refuse(_ mode: mode_t) -> NyquistError {
                NyquistError(.io, "cannot read \(path): it is \(FileIO.describe(mode: mode)), not a regular file")
            }
            var info = stat()
            let status: Int32 = url.withUnsafeFileSystemRepresentation { representation in
                guard let representation else { return ENOENT }
                return stat(representation, &info) == 0 ? 0 : errno
            }
            guard status == 0 else { throw NyquistError(.io, "cannot read \(path): \(reason(status))") }
            guard info.st_mode & S_IFMT == S_IFREG else { throw refuse(info.st_mode) }

            // O_NONBLOCK: if the path is swapped for a FIFO between stat and open, the open
            // still cannot block; the fstat below then refuses it.
            let fd: Int32 = url.withUnsafeFileSystemRepresentation { representation in
                guard let representation else { return -1 }
                return openForReading(representation)
            }
            guard fd >= 0 else { throw NyquistError(.io, "cannot read \(path): \(reason(errno))") }
            var opened = stat()
            guard fstat(fd, &opened) == 0 else {
                let code = errno
                close(fd)
                throw NyquistError(.io, "cannot read \(path): \(reason(code))")
            }
            guard opened.st_mode & S_IFMT == S_IFREG else {
                close(fd)
                throw refuse(opened.st_mode)
            }
            return RegularFile(path: path, size: Int(clamping: opened.st_size), descriptor: fd)
        }

        /// Exactly `count` bytes from `offset`.
        ///
        /// - Throws: `.io` when reading fails or the file ends first (it shrank after opening).
        public func read(at offset: Int, count: Int) throws -> [UInt8] {
            guard offset >= 0, count >= 0 else {
                throw NyquistError(.io, "cannot read \(path): bad range \(offset) + \(count)")
            }
            var bytes = [UInt8](repeating: 0, count: count)
            var done = 0
            var failure: Int32 = 0
            bytes.withUnsafeMutableBytes { buffer in
                while done < count {
                    let got = pread(descriptor, buffer.baseAddress.map { $0 + done }, count - done, off_t(offset + done))
                    if got < 0 {
                        if errno == EINTR { continue }
                        failure = errno
                        return
                    }
                    if got == 0 { return }
                    done += got
                }
            }
            if failure != 0 { throw NyquistError(.io, "cannot read \(path): \(FileIO.reason(failure))") }
            guard done == count else {
                throw NyquistError(
                    .io,
                    "cannot read \(path): the file ends at byte \(offset + done), before the \(offset + count) it had "
                        + "(did it change while being read?)")
            }
            return bytes
        }
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

/// `open(2)` for reading without blocking; at file scope because inside
/// ``FileIO/RegularFile`` the name `open` is that type's own factory.
private func openForReading(_ path: UnsafePointer<CChar>) -> Int32 {
    open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
}
