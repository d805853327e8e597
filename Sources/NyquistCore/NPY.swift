import Foundation

/// NumPy's `.npy` format: the exchange format of the CLI and the parity fixtures.
///
/// Reading accepts what `numpy.save` writes for a C-order, little-endian `float32` or `float64`
/// array of rank >= 1, in format versions 1.0, 2.0 and 3.0; `float64` is rounded to `Float`.
/// Everything else is refused with ``NyquistError/Kind/invalidFile`` and a one-line reason,
/// because a silently misread input would make every later parity number meaningless.
///
/// Every size in a header is untrusted: all arithmetic on it is overflow-checked and every
/// read is bounds-checked, so no byte string can crash the decoder.
public enum NPY {
    /// The six bytes every `.npy` file starts with.
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // "\x93NUMPY"

    /// Headers are short in practice; the limit keeps a hostile file from making the parser
    /// walk megabytes. NumPy itself refuses headers over 10 000 bytes by default.
    static let maximumHeaderLength = 1 << 20

    /// What a header declares, validated: enough to size and convert the data.
    struct Layout {
        var descr: String
        var shape: [Int]
        /// Bytes per stored element: 4 or 8.
        var scalarSize: Int
        /// Offset of the first data byte (the header's end).
        var dataStart: Int
        /// Elements (not yet checked against ``maximumDeviceElementCount``).
        var count: Int
        /// Bytes of data the shape needs.
        var dataSize: Int
    }

    /// The header's end (offset of the data) from the first bytes of a file, which must hold
    /// the magic, the version and the length field (10 or 12 bytes): the file readers read
    /// these first, so that nothing else is read before the header is known to be sane.
    static func headerEnd(_ bytes: ArraySlice<UInt8>) throws -> Int {
        let base = bytes.startIndex
        guard bytes.count >= magic.count + 2, bytes[base..<base + magic.count].elementsEqual(magic) else {
            throw invalid("not an NPY file (missing the \\x93NUMPY magic)")
        }
        let major = bytes[base + 6]
        let minor = bytes[base + 7]
        let lengthSize: Int
        switch (major, minor) {
        case (1, 0): lengthSize = 2
        case (2, 0), (3, 0): lengthSize = 4
        default: throw invalid("unsupported NPY format version \(major).\(minor); expected 1.0, 2.0 or 3.0")
        }
        let headerStart = 8 + lengthSize
        guard bytes.count >= headerStart else {
            throw invalid("file ends inside the header length field (\(bytes.count) bytes)")
        }
        var headerLength = 0
        for index in 0..<lengthSize {
            headerLength |= Int(bytes[base + 8 + index]) << (8 * index)
        }
        guard headerLength <= maximumHeaderLength else {
            throw invalid("header length \(headerLength) is implausibly large (limit \(maximumHeaderLength))")
        }
        return headerStart + headerLength
    }

    /// Validates the header held in `bytes` (the file's first ``headerEnd(_:)`` bytes or more):
    /// dtype, order, shape, and the element count and data size it implies (overflow-checked).
    /// Nothing here depends on how much data follows.
    static func layout(_ bytes: ArraySlice<UInt8>) throws -> Layout {
        let end = try headerEnd(bytes)
        guard end <= bytes.count else {
            let start = 8 + (bytes[bytes.startIndex + 6] == 1 ? 2 : 4)
            throw invalid(
                "header says it is \(end - start) bytes but only \(bytes.count - start) follow the length field")
        }
        let headerStart = bytes[bytes.startIndex + 6] == 1 ? 10 : 12
        let header = try parseHeader(Array(bytes[(bytes.startIndex + headerStart)..<(bytes.startIndex + end)]))

        let scalarSize: Int
        switch header.descr {
        case "<f4": scalarSize = 4
        case "<f8": scalarSize = 8
        case ">f4", ">f8":
            throw invalid("dtype \(quoted(header.descr)) is big-endian; only little-endian '<f4' and '<f8' are supported")
        default:
            throw invalid(
                "dtype \(quoted(header.descr)) is not supported; only little-endian float32 ('<f4') and float64 ('<f8')")
        }
        guard !header.fortranOrder else {
            throw invalid("array is in Fortran (column-major) order; save it in C order (numpy.ascontiguousarray)")
        }
        guard !header.shape.isEmpty else {
            throw invalid("array is a rank-0 scalar (shape ()); at least one axis is required")
        }
        let count: Int
        switch ShapeCount(header.shape) {
        case .count(let product): count = product
        case .nonPositive(let size):
            throw invalid("shape \(header.shape) has a size \(size); every size must be positive")
        case .overflow: throw invalid("shape \(header.shape) has more elements than can be addressed")
        }
        let (dataSize, overflow) = count.multipliedReportingOverflow(by: scalarSize)
        guard !overflow else { throw invalid("shape \(header.shape) needs more bytes than can be addressed") }
        return Layout(
            descr: header.descr, shape: header.shape, scalarSize: scalarSize, dataStart: end, count: count,
            dataSize: dataSize)
    }

    /// The checks that come once the data is known to be there: the element limit, then the
    /// memory budget for `bytes` (what the caller is about to allocate).
    static func checkLimits(_ layout: Layout, bytes: Int, limits: HostLimits, what: String) throws {
        guard layout.count <= maximumDeviceElementCount else {
            throw NyquistError(
                .sizeLimit,
                "NPY shape \(layout.shape) holds \(layout.count) elements, more than the \(maximumDeviceElementCount) "
                    + "(2^31-1) a tensor may have")
        }
        try limits.checkAllocation(bytes: bytes, what: "NPY shape \(layout.shape) of \(layout.descr) (\(what))")
    }

    /// The `.invalidFile` error for `available` data bytes where `layout` needs another number.
    static func lengthMismatch(_ layout: Layout, available: Int) -> NyquistError {
        let which = available < layout.dataSize ? "short" : "long"
        return invalid(
            "data is too \(which): shape \(layout.shape) of \(layout.descr) needs \(layout.dataSize) bytes "
                + "(\(HostLimits.format(bytes: layout.dataSize))) but \(available) follow the header")
    }

    /// The tensor of `layout` from its data, which starts at `offset` in `bytes`.
    static func values(_ bytes: [UInt8], at offset: Int, _ layout: Layout) -> HostTensor {
        let values = bytes.withUnsafeBytes { raw -> [Float] in
            if layout.scalarSize == 4 {
                return (0..<layout.count).map { index in
                    Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4 * index, as: UInt32.self)))
                }
            } else {
                return (0..<layout.count).map { index in
                    Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 8 * index, as: UInt64.self))))
                }
            }
        }
        return HostTensor(unchecked: layout.shape, values)
    }

    /// Decodes a complete `.npy` file held in memory.
    ///
    /// - Throws: ``NyquistError`` of kind `.invalidFile` naming what is wrong (magic, version,
    ///   header syntax, dtype, order, shape, or data length); `.sizeLimit` for more than
    ///   ``maximumDeviceElementCount`` elements or a decoded tensor over `limits.memoryBudget`.
    public static func decode(_ bytes: [UInt8], limits: HostLimits = .current) throws -> HostTensor {
        let layout = try layout(bytes[...])
        guard bytes.count - layout.dataStart == layout.dataSize else {
            throw lengthMismatch(layout, available: bytes.count - layout.dataStart)
        }
        // count <= 2^31 - 1 once checked, so 4 * count cannot overflow.
        try checkLimits(layout, bytes: 4 * min(layout.count, maximumDeviceElementCount), limits: limits, what: "as float32")
        return values(bytes, at: layout.dataStart, layout)
    }

    /// Encodes `tensor` as NPY version 1.0, `<f4`, C order, exactly as `numpy.save` would.
    ///
    /// The header is padded with spaces and ends in `\n` so that the data starts at a multiple
    /// of 64 bytes (NumPy's convention, which lets readers memory-map the data aligned).
    /// Version 2.0 is used only if the header cannot fit version 1.0's 16-bit length, which
    /// takes a tensor of rank in the thousands.
    public static func encode(_ tensor: HostTensor) -> [UInt8] {
        let shapeText = tensor.shape.count == 1
            ? "(\(tensor.shape[0]),)"
            : "(" + tensor.shape.map(String.init).joined(separator: ", ") + ")"
        var header = Array("{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText), }".utf8)
        var lengthSize = 2
        var version: UInt8 = 1
        func paddedLength() -> Int {
            let unpadded = magic.count + 2 + lengthSize + header.count + 1
            return header.count + 1 + (64 - unpadded % 64) % 64
        }
        if paddedLength() > Int(UInt16.max) {
            lengthSize = 4
            version = 2
        }
        let total = paddedLength()
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: total - header.count - 1))
        header.append(UInt8(ascii: "\n"))

        var bytes = magic
        bytes.reserveCapacity(magic.count + 2 + lengthSize + header.count + 4 * tensor.count)
        bytes.append(version)
        bytes.append(0)
        for index in 0..<lengthSize {
            bytes.append(UInt8(truncatingIfNeeded: header.count >> (8 * index)))
        }
        bytes.append(contentsOf: header)
        for value in tensor.values {
            let bits = value.bitPattern
            bytes.append(UInt8(truncatingIfNeeded: bits))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 16))
            bytes.append(UInt8(truncatingIfNeeded: bits >> 24))
        }
        return bytes
    }

    /// Reads and decodes the `.npy` file at `url`.
    ///
    /// Only a regular file is opened (see ``FileIO/RegularFile/open(_:)``). The header is read
    /// alone first; the data it declares must match the file's size and, with the decoded
    /// tensor, fit `limits.memoryBudget`, before the data is read or any buffer for it exists.
    ///
    /// - Throws: `.io` ("cannot read PATH: reason") when the file cannot be read, `.invalidFile`
    ///   (prefixed with the path) when its contents are not a supported array, `.sizeLimit`
    ///   (prefixed with the path) for the element limit or the memory budget.
    public static func read(contentsOf url: URL, limits: HostLimits = .current) throws -> HostTensor {
        let file = try FileIO.RegularFile.open(url)
        do {
            let start = try file.read(at: 0, count: min(file.size, 12))
            let end = try headerEnd(start[...])
            guard end <= file.size else {
                throw invalid("header ends at byte \(end) but the file has \(file.size) bytes")
            }
            let layout = try layout(try file.read(at: 0, count: end)[...])
            guard file.size - end == layout.dataSize else { throw lengthMismatch(layout, available: file.size - end) }
            // The file's data and the Float tensor made from it exist together for a moment.
            // dataSize matched the file's size, so it is far from overflowing; count is capped.
            try checkLimits(
                layout, bytes: layout.dataSize + 4 * min(layout.count, maximumDeviceElementCount), limits: limits,
                what: "file data plus float32 tensor")
            return values(try file.read(at: end, count: layout.dataSize), at: 0, layout)
        } catch let error as NyquistError where error.kind != .io {
            throw NyquistError(error.kind, "\(url.path): \(error.message)")
        }
    }

    /// Writes `tensor` to `url` atomically: on failure no partial file is left, and an existing
    /// file is either kept or fully replaced.
    ///
    /// - Throws: `.io` ("cannot write PATH: reason").
    public static func write(_ tensor: HostTensor, to url: URL) throws {
        try FileIO.writeAtomically(encode(tensor), to: url)
    }

    // MARK: - Header

    /// The three keys NumPy requires, and nothing else.
    struct Header {
        var descr: String
        var fortranOrder: Bool
        var shape: [Int]
    }

    static func invalid(_ message: String) -> NyquistError {
        NyquistError(.invalidFile, "invalid NPY file: \(message)")
    }

    /// A string from an untrusted header, shortened and escaped so that a message stays on one
    /// line and readable whatever bytes the file holds.
    static func quoted(_ text: String) -> String {
        let short = text.count > 40 ? String(text.prefix(40)) + "..." : text
        return short.debugDescription
    }

    /// Parses the header dictionary and checks that it holds exactly `descr`, `fortran_order`
    /// and `shape` with the right types, as `numpy.lib.format` does.
    static func parseHeader(_ bytes: [UInt8]) throws -> Header {
        var parser = PythonLiteralParser(bytes: bytes)
        let value = try parser.parseTopLevel()
        guard case .dict(let entries) = value else {
            throw invalid("header is not a Python dict literal")
        }
        var descr: String?
        var fortranOrder: Bool?
        var shape: [Int]?
        for (key, value) in entries {
            guard case .string(let name) = key else {
                throw invalid("header has a key that is not a string")
            }
            switch name {
            case "descr":
                switch value {
                case .string(let text): descr = text
                case .list, .tuple: throw invalid("structured dtypes (a list 'descr') are not supported")
                default: throw invalid("header 'descr' is not a string")
                }
            case "fortran_order":
                guard case .bool(let flag) = value else { throw invalid("header 'fortran_order' is not True or False") }
                fortranOrder = flag
            case "shape":
                let items: [PythonLiteral]
                switch value {
                case .tuple(let elements), .list(let elements): items = elements
                default: throw invalid("header 'shape' is not a tuple")
                }
                var sizes: [Int] = []
                for item in items {
                    guard case .int(let size) = item else {
                        throw invalid("header 'shape' has an entry that is not an integer")
                    }
                    sizes.append(size)
                }
                shape = sizes
            default:
                throw invalid("header has an unexpected key \(quoted(name))")
            }
        }
        guard let descr else { throw invalid("header has no 'descr' key") }
        guard let fortranOrder else { throw invalid("header has no 'fortran_order' key") }
        guard let shape else { throw invalid("header has no 'shape' key") }
        return Header(descr: descr, fortranOrder: fortranOrder, shape: shape)
    }
}

/// A value of the small Python literal subset NPY headers use.
enum PythonLiteral {
    case string(String)
    case int(Int)
    case bool(Bool)
    case none
    case tuple([PythonLiteral])
    case list([PythonLiteral])
    case dict([(PythonLiteral, PythonLiteral)])
}

/// A recursive-descent parser for the Python literals NumPy writes in NPY headers (what
/// `ast.literal_eval` would accept for them): dicts, tuples, lists, quoted strings, integers
/// (with Python 2's optional `L` suffix), `True`, `False` and `None`.
///
/// NumPy evaluates the header with `ast.literal_eval`; we cannot, and a full Python parser
/// would be far more than the format needs. Nesting is capped so that a header of thousands of
/// `(` cannot exhaust the stack.
struct PythonLiteralParser {
    let bytes: [UInt8]
    var position = 0
    static let maximumDepth = 32

    init(bytes: [UInt8]) {
        self.bytes = bytes
    }

    private func error(_ what: String) -> NyquistError {
        NPY.invalid("header is not a valid Python literal: \(what) at byte \(position)")
    }

    private mutating func skipWhitespace() {
        while position < bytes.count, [0x20, 0x09, 0x0A, 0x0D, 0x0C, 0x0B, 0x00].contains(bytes[position]) {
            position += 1
        }
    }

    private func peek() -> UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    /// Parses one literal that must make up the whole header, apart from surrounding whitespace
    /// (NumPy pads with spaces and ends with a newline).
    mutating func parseTopLevel() throws -> PythonLiteral {
        let value = try parseValue(depth: 0)
        skipWhitespace()
        guard position == bytes.count else { throw error("unexpected text after the literal") }
        return value
    }

    private mutating func parseValue(depth: Int) throws -> PythonLiteral {
        guard depth < Self.maximumDepth else { throw error("nesting deeper than \(Self.maximumDepth)") }
        skipWhitespace()
        guard let byte = peek() else { throw error("unexpected end of header") }
        switch byte {
        case UInt8(ascii: "{"):
            position += 1
            var entries: [(PythonLiteral, PythonLiteral)] = []
            while true {
                skipWhitespace()
                if peek() == UInt8(ascii: "}") {
                    position += 1
                    return .dict(entries)
                }
                let key = try parseValue(depth: depth + 1)
                skipWhitespace()
                guard peek() == UInt8(ascii: ":") else { throw error("expected ':' after a dict key") }
                position += 1
                let value = try parseValue(depth: depth + 1)
                entries.append((key, value))
                skipWhitespace()
                if peek() == UInt8(ascii: ",") {
                    position += 1
                } else if peek() != UInt8(ascii: "}") {
                    throw error("expected ',' or '}' in a dict")
                }
            }
        case UInt8(ascii: "("), UInt8(ascii: "["):
            let close = byte == UInt8(ascii: "(") ? UInt8(ascii: ")") : UInt8(ascii: "]")
            position += 1
            var items: [PythonLiteral] = []
            var sawComma = false
            while true {
                skipWhitespace()
                if peek() == close {
                    position += 1
                    // `(3)` is the integer 3 in Python, not a tuple; only `(3,)` is a 1-tuple.
                    if byte == UInt8(ascii: "("), items.count == 1, !sawComma {
                        return items[0]
                    }
                    return byte == UInt8(ascii: "(") ? .tuple(items) : .list(items)
                }
                items.append(try parseValue(depth: depth + 1))
                skipWhitespace()
                if peek() == UInt8(ascii: ",") {
                    position += 1
                    sawComma = true
                } else if peek() != close {
                    throw error("expected ',' or '\(Character(Unicode.Scalar(close)))'")
                }
            }
        case UInt8(ascii: "'"), UInt8(ascii: "\""):
            return .string(try parseString(quote: byte))
        case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return .int(try parseInteger())
        default:
            for (word, value) in [("True", PythonLiteral.bool(true)), ("False", .bool(false)), ("None", .none)] {
                let utf8 = Array(word.utf8)
                if bytes.count - position >= utf8.count, Array(bytes[position..<position + utf8.count]) == utf8 {
                    position += utf8.count
                    return value
                }
            }
            throw error("unexpected character")
        }
    }

    private mutating func parseString(quote: UInt8) throws -> String {
        position += 1
        var content: [UInt8] = []
        while let byte = peek() {
            position += 1
            if byte == quote {
                return String(decoding: content, as: UTF8.self)
            }
            if byte == UInt8(ascii: "\\") {
                guard let escaped = peek() else { break }
                position += 1
                switch escaped {
                case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""): content.append(escaped)
                case UInt8(ascii: "n"): content.append(0x0A)
                case UInt8(ascii: "t"): content.append(0x09)
                default: content.append(contentsOf: [byte, escaped])
                }
            } else if byte == 0x0A {
                throw error("newline inside a string")
            } else {
                content.append(byte)
            }
        }
        throw error("unterminated string")
    }

    private mutating func parseInteger() throws -> Int {
        var negative = false
        if peek() == UInt8(ascii: "-") || peek() == UInt8(ascii: "+") {
            negative = peek() == UInt8(ascii: "-")
            position += 1
            skipWhitespace()
        }
        var value = 0
        var digits = 0
        while let byte = peek(), (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) {
            let (times10, overflow1) = value.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int(byte - UInt8(ascii: "0")))
            guard !overflow1, !overflow2 else { throw error("integer too large") }
            value = sum
            digits += 1
            position += 1
        }
        guard digits > 0 else { throw error("expected digits") }
        // Python 2's numpy wrote long integers as `3L`.
        if peek() == UInt8(ascii: "L") || peek() == UInt8(ascii: "l") {
            position += 1
        }
        // A float (`3.0`, `3e2`), hex literal or identifier glued to the digits is not a size.
        if let next = peek(),
            next == UInt8(ascii: ".") || next == UInt8(ascii: "_") || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(next | 0x20)
        {
            throw error("expected an integer")
        }
        return negative ? -value : value
    }
}
