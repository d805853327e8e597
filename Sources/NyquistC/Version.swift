/// The library's version, as `nyquist_version()` returns it.
let nyquistVersion: StaticString = "0.4.0"

/// `const char *nyquist_version(void)`: the version string (static storage).
@_cdecl("nyquist_version")
public func nyquist_version() -> UnsafePointer<CChar> {
    UnsafeRawPointer(nyquistVersion.utf8Start).assumingMemoryBound(to: CChar.self)
}
