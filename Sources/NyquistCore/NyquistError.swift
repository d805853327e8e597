/// The one error type of Nyquist: bad configurations, shapes that do not fit, malformed files,
/// size limits, and (kind ``Kind/device``) failures the OpenCL driver reports, which the library
/// wraps here so that callers catch one type.
///
/// `message` is written for a person: it names the layer, the axis and the sizes involved, and
/// where it can, what to do instead.
public struct NyquistError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What went wrong, coarsely; tests and callers switch on this, people read `message`.
    public enum Kind: String, Sendable, Equatable {
        /// An operator option is out of range (filter size 9, stride 0, ...).
        case invalidConfiguration
        /// A tensor's rank or sizes do not fit the operator (too small for its padding, wrong C).
        case invalidShape
        /// A file could not be parsed (NPY, safetensors): bad magic, header, dtype or length.
        case invalidFile
        /// A file could not be read or written.
        case io
        /// A tensor or intermediate would exceed the 2^31 element limit of 32-bit kernel indexing.
        case sizeLimit
        /// The request is valid but not supported by this build or device.
        case unsupported
        /// No usable compute device (no OpenCL platform, no device matching a name).
        case deviceUnavailable
        /// Learnable parameters are missing or misshapen.
        case invalidParameters
        /// A host or device allocation would not fit the memory there is (or the configured
        /// budget); the message names what was asked and what is available.
        case outOfMemory
        /// The OpenCL driver refused a call or failed in it; the message names the call and
        /// the driver's error code (and, for a kernel build, its log).
        case device
    }

    /// The category of the failure.
    public let kind: Kind
    /// One line for a person, naming the sizes and values involved.
    public let message: String

    /// Creates an error of `kind` with a one-line explanation.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}
