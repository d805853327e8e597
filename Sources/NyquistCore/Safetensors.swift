import Foundation

/// The safetensors format (Hugging Face), in which PyTorch `state_dict`s are shared: learnable
/// parameters load from it without renaming (SPEC.md section 0).
///
/// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping each tensor
/// name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the first
/// byte after the header), an optional `"__metadata__"` object of strings, then the data. The
/// tensors' byte ranges must tile the data section exactly (contiguous, no overlap, no gap, no
/// trailing bytes; the JSON order need not be the offset order), as the format requires.
///
/// Reading converts `F16`, `BF16` and `F32` exactly and `F64` rounded to `Float`. Integer and
/// boolean tensors (`I8` ... `I64`, `U8` ... `U64`, `BOOL`) are validated and then left out of
/// the tensors (``Contents/otherDTypes`` records them, so that a loader can say "has dtype I64"
/// rather than "is missing"): a PyTorch `state_dict` carries such buffers (BatchNorm's `num_batches_tracked`
/// is an int64), and none of them is ever a parameter here. Any other dtype (the float8 types,
/// for instance) is refused rather than guessed at. A scalar
/// (shape `[]`) becomes shape `[1]`, since ``Tensor`` has no rank-0 form. Every value in the
/// header is untrusted and type-checked, so no byte string can crash the decoder.
public enum Safetensors {
    /// The reserved key of the free-form string metadata.
    public static let metadataKey = "__metadata__"

    /// Upper bound on the JSON header, as in the reference implementation (100 MB): anything
    /// larger is a corrupt length field, not a real header.
    public static let maximumHeaderLength = 100_000_000

    /// Everything a safetensors file holds: the float tensors, the names and dtypes of the
    /// integer and boolean tensors that were validated and left out, and the metadata.
    public struct Contents: Sendable, Equatable {
        /// The `F16`, `BF16`, `F32` and `F64` tensors as `Float`, keyed by name.
        public var tensors: [String: HostTensor]
        /// The tensors left out (integer and boolean dtypes): name to dtype ("I64").
        public var otherDTypes: [String: String]
        /// The `__metadata__` strings (empty when absent).
        public var metadata: [String: String]

        /// Contents with the given parts.
        public init(tensors: [String: HostTensor], otherDTypes: [String: String] = [:], metadata: [String: String] = [:]) {
            self.tensors = tensors
            self.otherDTypes = otherDTypes
            self.metadata = metadata
        }

        /// ``tensors``, after checking that none of `names` (the parameters a loader will look
        /// up) is one of the left-out integer tensors: a loader would report such a name as
        /// missing, when the truth is that the file holds it with the wrong dtype.
        ///
        /// - Throws: `.invalidParameters` ("LAYER: parameter conv.weight has dtype I64;
        ///   expected F16, BF16, F32 or F64").
        public func parameters(expecting names: some Sequence<String>, layer: String) throws -> [String: HostTensor] {
            for name in names {
                if let dtype = otherDTypes[name] {
                    throw NyquistError(
                        .invalidParameters,
                        "\(layer): parameter \(name) has dtype \(dtype); expected \(Safetensors.floatDTypeList)")
                }
            }
            return tensors
        }
    }

    /// Decodes a complete safetensors file held in memory into its float tensors, keyed by name
    /// (integer and boolean tensors are validated and left out; see ``decodeContents(_:limits:)``).
    ///
    /// - Throws: ``NyquistError`` of kind `.invalidFile` naming what is wrong (length field,
    ///   JSON, an entry's fields, an unsupported dtype, offsets that disagree with the shape,
    ///   overlap, leave gaps or do not cover the data section exactly); `.sizeLimit` for a
    ///   tensor over ``maximumDeviceElementCount`` elements or tensors over the memory budget.
    public static func decode(_ bytes: [UInt8], limits: HostLimits = .current) throws -> [String: HostTensor] {
        try decodeContents(bytes, limits: limits).tensors
    }

    /// The `__metadata__` strings of a safetensors file (empty when absent).
    ///
    /// The whole file is validated, so a file whose tensors are malformed throws here too.
    public static func decodeMetadata(_ bytes: [UInt8], limits: HostLimits = .current) throws -> [String: String] {
        try decodeContents(bytes, limits: limits).metadata
    }

    /// Decodes a complete safetensors file held in memory; the errors are those of
    /// ``decode(_:limits:)``.
    public static func decodeContents(_ bytes: [UInt8], limits: HostLimits = .current) throws -> Contents {
        guard bytes.count >= 8 else {
            throw invalid("file is \(bytes.count) bytes, shorter than the 8-byte header length")
        }
        let headerLength = try headerLength(bytes[0..<8])
        guard headerLength <= bytes.count - 8 else {
            throw invalid("header length \(headerLength) exceeds the \(bytes.count - 8) bytes after the length field")
        }
        let dataStart = 8 + headerLength
        let header = try parseHeader(bytes[8..<dataStart], dataSize: bytes.count - dataStart)
        try checkBudget(header.entries, limits: limits, fileData: false)
        var contents = Contents(tensors: [:], metadata: header.metadata)
        for entry in header.entries {
            if floatScalarSizes[entry.dtype] != nil {
                contents.tensors[entry.name] = tensor(bytes, at: dataStart + entry.begin, entry)
            } else {
                contents.otherDTypes[entry.name] = entry.dtype
            }
        }
        return contents
    }

    /// Encodes `tensors` as `F32`, names sorted and data packed in that order, so the same
    /// input always gives the same bytes. The JSON header is padded with spaces to a multiple
    /// of 8 bytes so that the data region is aligned, as the reference writer does.
    ///
    /// - Throws: `.invalidFile` if a tensor is named `__metadata__`, which the format reserves.
    public static func encode(_ tensors: [String: HostTensor], metadata: [String: String] = [:]) throws -> [UInt8] {
        guard tensors[metadataKey] == nil else {
            throw NyquistError(.invalidFile, "cannot write safetensors: the tensor name \(metadataKey) is reserved")
        }
        var json = "{"
        var first = true
        func separator() {
            if !first { json += "," }
            first = false
        }
        if !metadata.isEmpty {
            separator()
            json += jsonString(metadataKey) + ":{"
            json += metadata.keys.sorted().map { key in
                jsonString(key) + ":" + jsonString(metadata[key] ?? "")
            }.joined(separator: ",")
            json += "}"
        }
        let names = tensors.keys.sorted()
        var offset = 0
        for name in names {
            guard let tensor = tensors[name] else { continue }
            let size = tensor.count * 4
            separator()
            json += jsonString(name)
            json += #":{"dtype":"F32","shape":["# + tensor.shape.map(String.init).joined(separator: ",")
            json += #"],"data_offsets":["# + "\(offset),\(offset + size)]}"
            offset += size
        }
        json += "}"

        var header = Array(json.utf8)
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - header.count % 8) % 8))
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 + header.count + offset)
        let length = UInt64(header.count)
        for index in 0..<8 {
            bytes.append(UInt8(truncatingIfNeeded: length >> (8 * UInt64(index))))
        }
        bytes.append(contentsOf: header)
        for name in names {
            guard let tensor = tensors[name] else { continue }
            for value in tensor.values {
                let bits = value.bitPattern
                bytes.append(UInt8(truncatingIfNeeded: bits))
                bytes.append(UInt8(truncatingIfNeeded: bits >> 8))
                bytes.append(UInt8(truncatingIfNeeded: bits >> 16))
                bytes.append(UInt8(truncatingIfNeeded: bits >> 24))
            }
        }
        return bytes
    }

    /// Reads and decodes the safetensors file at `url` into its float tensors (see
    /// ``readContents(contentsOf:limits:)``).
    public static func read(contentsOf url: URL, limits: HostLimits = .current) throws -> [String: HostTensor] {
        try readContents(contentsOf: url, limits: limits).tensors
    }

    /// Reads the safetensors file at `url`.
    ///
    /// Only a regular file is opened (see ``FileIO/RegularFile/open(_:)``). The length field and
    /// the JSON header are read alone first; the tensors' offsets must then cover the rest of
    /// the file exactly and the decoded tensors fit `limits.memoryBudget` before any tensor
    /// data is read. Each float tensor is then read on its own; integer tensors are not read.
    ///
    /// - Throws: `.io` ("cannot read PATH: reason") when the file cannot be read; `.invalidFile`
    ///   or `.sizeLimit` (prefixed with the path) as ``decode(_:limits:)``.
    public static func readContents(contentsOf url: URL, limits: HostLimits = .current) throws -> Contents {
        let file = try FileIO.RegularFile.open(url)
        do {
            guard file.size >= 8 else {
                throw invalid("file is \(file.size) bytes, shorter than the 8-byte header length")
            }
            let headerLength = try headerLength(try file.read(at: 0, count: 8)[...])
            guard headerLength <= file.size - 8 else {
                throw invalid("header length \(headerLength) exceeds the \(file.size - 8) bytes after the length field")
            }
            try limits.checkAllocation(bytes: headerLength, what: "the safetensors header")
            let dataStart = 8 + headerLength
            let header = try parseHeader(try file.read(at: 8, count: headerLength)[...], dataSize: file.size - dataStart)
            try checkBudget(header.entries, limits: limits, fileData: true)
            var contents = Contents(tensors: [:], metadata: header.metadata)
            for entry in header.entries {
                if floatScalarSizes[entry.dtype] != nil {
                    let data = try file.read(at: dataStart + entry.begin, count: entry.end - entry.begin)
                    contents.tensors[entry.name] = tensor(data, at: 0, entry)
                } else {
                    contents.otherDTypes[entry.name] = entry.dtype
                }
            }
            return contents
        } catch let error as NyquistError where error.kind != .io {
            throw NyquistError(error.kind, "\(url.path): \(error.message)")
        }
    }

    /// Encodes `tensors` (see ``encode(_:metadata:)``) and writes them to `url` atomically: on
    /// failure no partial file is left, and an existing file is either kept or fully replaced.
    ///
    /// - Throws: `.io` ("cannot write PATH: reason"), or `.invalidFile` from encoding.
    public static func write(_ tensors: [String: HostTensor], metadata: [String: String] = [:], to url: URL) throws {
        try FileIO.writeAtomically(encode(tensors, metadata: metadata), to: url)
    }

    // MARK: - Parsing

    static func invalid(_ message: String) -> NyquistError {
        NyquistError(.invalidFile, "invalid safetensors file: \(message)")
    }

    /// A tensor name from an untrusted header, escaped so messages stay on one line.
    static func quoted(_ text: String) -> String {
        let short = text.count > 60 ? String(text.prefix(60)) + "..." : text
        return short.debugDescription
    }

    /// JSON string literal: only `"`, `\` and control characters need escaping; everything
    /// else is written as UTF-8, which keeps non-ASCII names readable in the header.
    static func jsonString(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    /// A non-negative integer from a JSON value, or nil for anything else.
    ///
    /// JSONSerialization hands numbers back as `NSNumber`, which bridges `true` to 1 and `3.0`
    /// to 3; booleans must not pass as sizes, integral floats may.
    static func jsonCount(_ value: Any) -> Int? {
        guard let number = value as? NSNumber else { return nil }
        let type = String(cString: number.objCType)
        guard type != "c", type != "B" else { return nil }  // a JSON true/false
        guard let integer = value as? Int, integer >= 0 else { return nil }
        return integer
    }

    /// One validated header entry.
    struct Entry {
        var name: String
        var dtype: String
        var shape: [Int]
        var count: Int
        /// Offsets into the data section.
        var begin: Int
        var end: Int
    }

    /// The header length from the first 8 bytes, at most ``maximumHeaderLength``.
    static func headerLength(_ bytes: ArraySlice<UInt8>) throws -> Int {
        var length: UInt64 = 0
        for (index, byte) in bytes.prefix(8).enumerated() {
            length |= UInt64(byte) << (8 * UInt64(index))
        }
        guard length <= UInt64(maximumHeaderLength) else {
            throw invalid("header length \(length) is implausibly large (limit \(maximumHeaderLength))")
        }
        return Int(length)
    }

    /// Refuses tensors whose decoded values (and, when `fileData`, the largest tensor's bytes
    /// read from the file) exceed the budget.
    static func checkBudget(_ entries: [Entry], limits: HostLimits, fileData: Bool) throws {
        var total = 0
        var largest = 0
        for entry in entries where floatScalarSizes[entry.dtype] != nil {
            // Each count is below 2^31 (checked in parseHeader), and a header of at most 100 MB
            // holds fewer than 2^27 entries, so the sum cannot overflow.
            total += 4 * entry.count
            largest = max(largest, entry.end - entry.begin)
        }
        if fileData { total += largest }
        try limits.checkAllocation(bytes: total, what: "the float tensors of this safetensors file")
    }

    /// Parses and validates the JSON header: every entry's fields, its size against its dtype
    /// and shape, and that the entries' byte ranges tile the `dataSize`-byte data section
    /// exactly, in some order, as the format requires.
    static func parseHeader(
        _ bytes: ArraySlice<UInt8>, dataSize: Int
    ) throws -> (entries: [Entry], metadata: [String: String]) {
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(bytes))
        } catch {
            throw invalid("header is not valid JSON")
        }
        guard let header = object as? [String: Any] else {
            throw invalid("header is not a JSON object")
        }

        var metadata: [String: String] = [:]
        if let raw = header[metadataKey] {
            guard let entries = raw as? [String: Any] else {
                throw invalid("\(metadataKey) is not an object")
            }
            for (key, value) in entries {
                guard let text = value as? String else {
                    throw invalid("\(metadataKey) entry \(quoted(key)) is not a string")
                }
                metadata[key] = text
            }
        }

        var entries: [Entry] = []
        for (name, raw) in header where name != metadataKey {
            let label = "tensor \(quoted(name))"
            guard let entry = raw as? [String: Any] else {
                throw invalid("\(label) is not an object")
            }
            guard let dtypeValue = entry["dtype"] else { throw invalid("\(label) has no \"dtype\"") }
            guard let dtype = dtypeValue as? String else { throw invalid("\(label) has a \"dtype\" that is not a string") }
            guard let scalarSize = floatScalarSizes[dtype] ?? skippedScalarSizes[dtype] else {
                throw invalid(
                    "\(label) has dtype \(quoted(dtype)), which is not supported; floats must be \(floatDTypeList)")
            }
            guard let shapeValue = entry["shape"] else { throw invalid("\(label) has no \"shape\"") }
            guard let shapeItems = shapeValue as? [Any] else { throw invalid("\(label) has a \"shape\" that is not an array") }
            var shape: [Int] = []
            for item in shapeItems {
                guard let size = jsonCount(item) else {
                    throw invalid("\(label) has a shape entry that is not a non-negative integer")
                }
                shape.append(size)
            }
            guard let offsetsValue = entry["data_offsets"] else { throw invalid("\(label) has no \"data_offsets\"") }
            guard let offsetItems = offsetsValue as? [Any], offsetItems.count == 2,
                let begin = jsonCount(offsetItems[0]), let end = jsonCount(offsetItems[1])
            else {
                throw invalid("\(label) has \"data_offsets\" that are not two non-negative integers")
            }
            guard begin <= end else {
                throw invalid("\(label) has data_offsets [\(begin), \(end)] with begin after end")
            }

            if shape.isEmpty { shape = [1] }  // a scalar; Tensor needs rank >= 1
            let count: Int
            switch ShapeCount(shape) {
            case .count(let product): count = product
            case .nonPositive:
                throw invalid("\(label) has shape \(shape) with a zero size; empty tensors are not supported")
            case .overflow: throw invalid("\(label) has shape \(shape) with more elements than can be addressed")
            }
            let (needed, overflow) = count.multipliedReportingOverflow(by: scalarSize)
            guard !overflow, needed == end - begin else {
                throw invalid(
                    "\(label) has shape \(shape) of \(dtype) (\(overflow ? "too many" : String(needed)) bytes) "
                        + "but data_offsets [\(begin), \(end)] span \(end - begin) bytes")
            }
            entries.append(Entry(name: name, dtype: dtype, shape: shape, count: count, begin: begin, end: end))
        }

        // The buffers must be contiguous and cover the data section: sorted by offset, each
        // begins where the one before ends. Names break ties so that messages are stable.
        entries.sort { ($0.begin, $0.name) < ($1.begin, $1.name) }
        var covered = 0
        var previous: Entry?
        for entry in entries {
            let label = "tensor \(quoted(entry.name)) (data_offsets [\(entry.begin), \(entry.end)])"
            if entry.begin < covered, let previous {
                throw invalid(
                    "\(label) overlaps tensor \(quoted(previous.name)) (data_offsets [\(previous.begin), \(previous.end)])")
            }
            if entry.begin > covered {
                let after = previous.map { "after tensor \(quoted($0.name)), which ends at \($0.end)" } ?? "at the start"
                throw invalid(
                    "\(label) leaves a gap of \(entry.begin - covered) bytes \(after); the tensors' data must be contiguous")
            }
            covered = entry.end
            previous = entry
        }
        guard covered == dataSize else {
            let last = previous.map { "tensor \(quoted($0.name)), the last in offset order, ends" } ?? "there are no tensors,"
            let which = covered < dataSize ? "leaving \(dataSize - covered) bytes unused" : "which is too short"
            throw invalid(
                "\(last) at data byte \(covered) (\(HostLimits.format(bytes: covered))) but the data section has "
                    + "\(dataSize) bytes (\(HostLimits.format(bytes: dataSize))), \(which)")
        }
        // Only now that the sizes are known to match the file: the element limit.
        for entry in entries where entry.count > maximumDeviceElementCount {
            throw NyquistError(
                .sizeLimit,
                "safetensors tensor \(quoted(entry.name)) has shape \(entry.shape) of \(entry.count) elements, more "
                    + "than the \(maximumDeviceElementCount) (2^31-1) a tensor may have")
        }
        return (entries, metadata)
    }

    /// The float tensor of `entry`, whose data starts at `start` in `bytes`.
    static func tensor(_ bytes: [UInt8], at start: Int, _ entry: Entry) -> HostTensor {
        let count = entry.count
        let values = bytes.withUnsafeBytes { raw -> [Float] in
            func word<Word: FixedWidthInteger>(_ index: Int, _: Word.Type) -> Word {
                Word(littleEndian: raw.loadUnaligned(fromByteOffset: start + MemoryLayout<Word>.size * index, as: Word.self))
            }
            switch entry.dtype {
            case "F16": return (0..<count).map { halfToFloat(word($0, UInt16.self)) }
            // bfloat16 is the top half of a float32.
            case "BF16": return (0..<count).map { Float(bitPattern: UInt32(word($0, UInt16.self)) << 16) }
            case "F32": return (0..<count).map { Float(bitPattern: word($0, UInt32.self)) }
            default: return (0..<count).map { Float(Double(bitPattern: word($0, UInt64.self))) }
            }
        }
        return HostTensor(unchecked: entry.shape, values)
    }

    /// The float dtypes, for messages.
    static let floatDTypeList = "F16, BF16, F32 or F64"

    /// Bytes per element of the dtypes that load as `Float`.
    static let floatScalarSizes = ["F16": 2, "BF16": 2, "F32": 4, "F64": 8]

    /// Bytes per element of the integer and boolean dtypes that are validated and left out.
    static let skippedScalarSizes = [
        "BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "U32": 4, "I32": 4, "U64": 8, "I64": 8,
    ]

    /// IEEE 754 binary16 to Float, exactly (every half value is a float value), written out
    /// because `Float16` is not available on every platform Swift supports.
    static func halfToFloat(_ bits: UInt16) -> Float {
        let sign: UInt32 = UInt32(bits & 0x8000) << 16
        let exponent = Int((bits >> 10) & 0x1F)
        let fraction = UInt32(bits & 0x3FF)
        switch exponent {
        case 0:
            // Zero or subnormal: fraction * 2^-24.
            let magnitude = Float(fraction) * Float(sign: .plus, exponent: -24, significand: 1)
            return sign == 0 ? magnitude : -magnitude
        case 0x1F:
            return Float(bitPattern: sign | 0x7F80_0000 | (fraction << 13))  // Inf or NaN, payload kept
        default:
            return Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | (fraction << 13))
        }
    }
}
