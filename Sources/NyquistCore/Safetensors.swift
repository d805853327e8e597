import Foundation

/// The safetensors format (Hugging Face), in which PyTorch `state_dict`s are shared: learnable
/// parameters load from it without renaming (SPEC.md section 0).
///
/// Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping each tensor
/// name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the first
/// byte after the header), an optional `"__metadata__"` object of strings, then the data.
///
/// Reading converts `F16`, `BF16` and `F32` exactly and `F64` rounded to `Float`. Integer and
/// boolean tensors (`I8` ... `I64`, `U8` ... `U64`, `BOOL`) are validated and then left out of
/// the result: a PyTorch `state_dict` carries such buffers (BatchNorm's `num_batches_tracked`
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

    /// Decodes a complete safetensors file into its tensors, keyed by name.
    ///
    /// - Throws: ``NyquistError`` of kind `.invalidFile` naming what is wrong (length field,
    ///   JSON, an entry's fields, an unsupported dtype, offsets that disagree with the shape or
    ///   leave the data region).
    public static func decode(_ bytes: [UInt8]) throws -> [String: HostTensor] {
        try parse(bytes).tensors
    }

    /// The `__metadata__` strings of a safetensors file (empty when absent).
    ///
    /// The whole file is validated, so a file whose tensors are malformed throws here too.
    public static func decodeMetadata(_ bytes: [UInt8]) throws -> [String: String] {
        try parse(bytes).metadata
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

    /// Reads and decodes the safetensors file at `url`.
    ///
    /// - Throws: `.io` ("cannot read PATH: reason") when the file cannot be read, `.invalidFile`
    ///   (prefixed with the path) when its contents are malformed or unsupported.
    public static func read(contentsOf url: URL) throws -> [String: HostTensor] {
        let bytes = try FileIO.readBytes(contentsOf: url)
        do {
            return try decode(bytes)
        } catch let error as NyquistError {
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

    static func parse(_ bytes: [UInt8]) throws -> (tensors: [String: HostTensor], metadata: [String: String]) {
        guard bytes.count >= 8 else {
            throw invalid("file is \(bytes.count) bytes, shorter than the 8-byte header length")
        }
        var length: UInt64 = 0
        for index in 0..<8 {
            length |= UInt64(bytes[index]) << (8 * UInt64(index))
        }
        guard length <= UInt64(maximumHeaderLength) else {
            throw invalid("header length \(length) is implausibly large (limit \(maximumHeaderLength))")
        }
        let headerLength = Int(length)
        guard headerLength <= bytes.count - 8 else {
            throw invalid("header length \(headerLength) exceeds the \(bytes.count - 8) bytes after the length field")
        }
        let dataStart = 8 + headerLength
        let dataSize = bytes.count - dataStart

        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: Data(bytes[8..<dataStart]))
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

        var tensors: [String: HostTensor] = [:]
        for (name, raw) in header where name != metadataKey {
            let label = "tensor \(quoted(name))"
            guard let entry = raw as? [String: Any] else {
                throw invalid("\(label) is not an object")
            }
            guard let dtypeValue = entry["dtype"] else { throw invalid("\(label) has no \"dtype\"") }
            guard let dtype = dtypeValue as? String else { throw invalid("\(label) has a \"dtype\" that is not a string") }
            guard let scalarSize = floatScalarSizes[dtype] ?? skippedScalarSizes[dtype] else {
                throw invalid(
                    "\(label) has dtype \(quoted(dtype)), which is not supported; floats must be F16, BF16, F32 or F64")
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
            guard end <= dataSize else {
                throw invalid("\(label) has data_offsets [\(begin), \(end)] beyond the \(dataSize)-byte data region")
            }

            if shape.isEmpty { shape = [1] }  // a scalar; Tensor needs rank >= 1
            var count = 1
            for size in shape {
                guard size > 0 else {
                    throw invalid("\(label) has shape \(shape) with a zero size; empty tensors are not supported")
                }
                let (product, overflow) = count.multipliedReportingOverflow(by: size)
                guard !overflow else { throw invalid("\(label) has shape \(shape) with more elements than can be addressed") }
                count = product
            }
            let (needed, overflow) = count.multipliedReportingOverflow(by: scalarSize)
            guard !overflow, needed == end - begin else {
                throw invalid(
                    "\(label) has shape \(shape) of \(dtype) (\(overflow ? "too many" : String(needed)) bytes) "
                        + "but data_offsets [\(begin), \(end)] span \(end - begin) bytes")
            }

            if skippedScalarSizes[dtype] != nil { continue }  // an integer buffer: checked, not a parameter
            let start = dataStart + begin
            let values = bytes.withUnsafeBytes { raw -> [Float] in
                func word<Word: FixedWidthInteger>(_ index: Int, _: Word.Type) -> Word {
                    Word(littleEndian: raw.loadUnaligned(fromByteOffset: start + MemoryLayout<Word>.size * index, as: Word.self))
                }
                switch dtype {
                case "F16": return (0..<count).map { halfToFloat(word($0, UInt16.self)) }
                // bfloat16 is the top half of a float32.
                case "BF16": return (0..<count).map { Float(bitPattern: UInt32(word($0, UInt16.self)) << 16) }
                case "F32": return (0..<count).map { Float(bitPattern: word($0, UInt32.self)) }
                default: return (0..<count).map { Float(Double(bitPattern: word($0, UInt64.self))) }
                }
            }
            tensors[name] = HostTensor(unchecked: shape, values)
        }
        return (tensors, metadata)
    }

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
