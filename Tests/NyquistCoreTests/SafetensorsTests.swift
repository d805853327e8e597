import Foundation
import NyquistCore
import Testing

/// Builds a safetensors file by hand: little-endian u64 length of `json`, `json`, `data`.
func safetensorsFile(_ json: String, data: [UInt8]) -> [UInt8] {
    let header = Array(json.utf8)
    return withUnsafeBytes(of: UInt64(header.count).littleEndian, Array.init) + header + data
}

/// A file with one tensor "t" described by `entry` (the JSON object's contents) and `data`.
func singleTensorFile(_ entry: String, data: [UInt8]) -> [UInt8] {
    safetensorsFile("{\"t\":{\(entry)}}", data: data)
}

@Suite("Safetensors")
struct SafetensorsTests {
    func sample() throws -> [String: HostTensor] {
        [
            "blur.weight": try HostTensor(shape: [4, 1, 3, 3]) { Float($0) * 0.5 - 9 },
            "a": try HostTensor(shape: [1], values: [.nan]),
            "z.bias": try HostTensor(shape: [3], values: [-0.0, .infinity, Float.leastNormalMagnitude / 4]),
            "lift.predict": try HostTensor(shape: [2, 3, 1, 2, 1]) { Float($0) },
        ]
    }

    // MARK: Round trip and layout

    @Test func roundTrip() throws {
        let tensors = try sample()
        let metadata = ["format": "pt", "note": "quotes \" and \\ and\nnewline, ünïcödé"]
        let bytes = try Safetensors.encode(tensors, metadata: metadata)
        let decoded = try Safetensors.decode(bytes)
        #expect(Set(decoded.keys) == Set(tensors.keys))
        for (name, tensor) in tensors {
            #expect(decoded[name]?.shape == tensor.shape)
            #expect(decoded[name].map(bits) == bits(tensor))
        }
        #expect(try Safetensors.decodeMetadata(bytes) == metadata)
        #expect(try Safetensors.decodeMetadata(Safetensors.encode(tensors)) == [:])
    }

    @Test func roundTripOddNames() throws {
        let names = ["", "with \"quotes\"", "back\\slash", "tab\tand\u{01}control", "日本語", "__metadata", "a/b.c"]
        var tensors: [String: HostTensor] = [:]
        for (index, name) in names.enumerated() {
            tensors[name] = try HostTensor(shape: [1], values: [Float(index)])
        }
        let decoded = try Safetensors.decode(Safetensors.encode(tensors))
        #expect(decoded == tensors)
    }

    @Test func encodeIsDeterministicAndAligned() throws {
        let tensors = try sample()
        let bytes = try Safetensors.encode(tensors, metadata: ["beta": "2", "alpha": "1"])
        #expect(try Safetensors.encode(tensors, metadata: ["alpha": "1", "beta": "2"]) == bytes)
        let length = bytes[0..<8].reversed().reduce(0) { $0 << 8 | Int($1) }
        #expect(length % 8 == 0)
        let header = String(decoding: bytes[8..<(8 + length)], as: UTF8.self)
        // Names appear sorted, data is packed in that order from offset 0 without gaps.
        let positions = ["\"__metadata__\"", "\"a\"", "\"blur.weight\"", "\"lift.predict\"", "\"z.bias\""].map {
            header.range(of: $0)?.lowerBound
        }
        #expect(positions.allSatisfy { $0 != nil })
        #expect(positions.compactMap { $0 } == positions.compactMap { $0 }.sorted())
        #expect(header.contains(#""a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#))
        #expect(header.contains(#""blur.weight":{"dtype":"F32","shape":[4,1,3,3],"data_offsets":[4,148]}"#))
        #expect(bytes.count == 8 + length + 4 * (1 + 36 + 12 + 3))
        // Python's json module parses it too (valid JSON is the whole point of the header).
        let object = try JSONSerialization.jsonObject(with: Data(header.utf8)) as? [String: Any]
        #expect(object?.count == 5)
    }

    @Test func encodeRejectsReservedName() throws {
        let tensor = try HostTensor(shape: [1], values: [1])
        expectError(.invalidFile, "__metadata__", "reserved") { try Safetensors.encode(["__metadata__": tensor]) }
    }

    // MARK: Fixture written with struct + json (generate_fixtures.py)

    @Test func fixture() throws {
        let url = fixtureURL("params.safetensors")
        let tensors = try Safetensors.read(contentsOf: url)
        #expect(Set(tensors.keys) == ["bias", "scale", "weight"])
        // bias: F64 [3], 0.1 * i rounded to float32.
        #expect(tensors["bias"]?.shape == [3])
        #expect(tensors["bias"]?.values == (0..<3).map { Float(0.1 * Double($0)) })
        // scale: F32 shape [] becomes [1].
        #expect(tensors["scale"]?.shape == [1])
        #expect(tensors["scale"]?.values == [2])
        // weight: F32 [2, 3], i - 2.5.
        #expect(tensors["weight"]?.shape == [2, 3])
        #expect(tensors["weight"]?.values == (0..<6).map { Float($0) - 2.5 })
        let metadata = try Safetensors.decodeMetadata(Array(Data(contentsOf: url)))
        #expect(metadata == ["format": "pt", "source": "nyquist fixture"])
    }

    // MARK: Hand-built files that must be accepted

    @Test func acceptsVariants() throws {
        // Integral floats as sizes, extra entry fields, spaces around the JSON.
        let file = safetensorsFile(
            #" { "t" : {"dtype":"F64","shape":[2.0],"data_offsets":[0,16.0],"extra":null} , "__metadata__":{} }  "#,
            data: float64Bytes([1.5, -3]))
        let tensors = try Safetensors.decode(file)
        #expect(tensors["t"]?.values == [1.5, -3])
        #expect(try Safetensors.decode(safetensorsFile("{}", data: [])).isEmpty)
    }

    // MARK: Rejections

    @Test func rejectsShortFile() {
        for length in 0..<8 {
            expectError(.invalidFile, "shorter than the 8-byte") { try Safetensors.decode(Array(repeating: 0, count: length)) }
        }
    }

    @Test func rejectsBadHeaderLength() {
        var file = safetensorsFile("{}", data: [])
        file[0] = 3
        expectError(.invalidFile, "exceeds") { try Safetensors.decode(file) }
        expectError(.invalidFile, "implausibly large") { try Safetensors.decode(Array(repeating: 0xFF, count: 64)) }
        expectError(.invalidFile, "implausibly large") {
            try Safetensors.decode(withUnsafeBytes(of: UInt64(100_000_001).littleEndian, Array.init))
        }
    }

    @Test(arguments: [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("{\"t\": }", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ("\"text\"", "not"),
        ("null", "not"),
        ("{\"t\": 3}", "tensor \"t\" is not an object"),
        ("{\"t\": []}", "not an object"),
        ("{\"__metadata__\": []}", "__metadata__ is not an object"),
        ("{\"__metadata__\": {\"k\": 1}}", "__metadata__ entry \"k\" is not a string"),
    ])
    func rejectsMalformedHeader(json: String, fragment: String) {
        expectError(.invalidFile, fragment) { try Safetensors.decode(safetensorsFile(json, data: [])) }
    }

    @Test(arguments: [
        (#""shape":[1],"data_offsets":[0,4]"#, "no \"dtype\""),
        (#""dtype":"F32","data_offsets":[0,4]"#, "no \"shape\""),
        (#""dtype":"F32","shape":[1]"#, "no \"data_offsets\""),
        (#""dtype":5,"shape":[1],"data_offsets":[0,4]"#, "\"dtype\" that is not a string"),
        (#""dtype":"F32","shape":1,"data_offsets":[0,4]"#, "\"shape\" that is not an array"),
        (#""dtype":"F32","shape":[-1],"data_offsets":[0,4]"#, "not a non-negative integer"),
        (#""dtype":"F32","shape":[1.5],"data_offsets":[0,4]"#, "not a non-negative integer"),
        (#""dtype":"F32","shape":[true],"data_offsets":[0,4]"#, "not a non-negative integer"),
        (#""dtype":"F32","shape":["1"],"data_offsets":[0,4]"#, "not a non-negative integer"),
        (#""dtype":"F32","shape":[1e30],"data_offsets":[0,4]"#, "not a non-negative integer"),
        (#""dtype":"F32","shape":[1],"data_offsets":[0]"#, "not two non-negative integers"),
        (#""dtype":"F32","shape":[1],"data_offsets":[0,4,8]"#, "not two non-negative integers"),
        (#""dtype":"F32","shape":[1],"data_offsets":"0,4""#, "not two non-negative integers"),
        (#""dtype":"F32","shape":[1],"data_offsets":[-4,0]"#, "not two non-negative integers"),
        (#""dtype":"F32","shape":[1],"data_offsets":[0,false]"#, "not two non-negative integers"),
        (#""dtype":"F32","shape":[1],"data_offsets":[4,0]"#, "begin after end"),
        (#""dtype":"F32","shape":[1],"data_offsets":[4,8]"#, "gap of 4 bytes at the start"),
        (#""dtype":"F32","shape":[2],"data_offsets":[0,8]"#, "ends at data byte 8"),
        (#""dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]"#, "not two non-negative integers"),
        (#""dtype":"F32","shape":[2],"data_offsets":[0,4]"#, "span 4 bytes"),
        (#""dtype":"F64","shape":[1],"data_offsets":[0,4]"#, "8 bytes"),
        (#""dtype":"F32","shape":[],"data_offsets":[0,0]"#, "span 0 bytes"),
        (#""dtype":"F32","shape":[0],"data_offsets":[0,0]"#, "zero size"),
        (#""dtype":"F32","shape":[4,0,2],"data_offsets":[0,0]"#, "zero size"),
        (#""dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]"#, "more elements"),
        (#""dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]"#, "too many bytes"),
    ])
    func rejectsMalformedEntry(entry: String, fragment: String) {
        expectError(.invalidFile, "tensor \"t\"", fragment) {
            try Safetensors.decode(singleTensorFile(entry, data: float32Bytes([1])))
        }
    }

    @Test(arguments: ["F8_E4M3", "F8_E5M2", "C64", "f32", ""])
    func rejectsUnsupportedDtype(dtype: String) {
        let file = singleTensorFile(#""dtype":"\#(dtype)","shape":[1],"data_offsets":[0,4]"#, data: float32Bytes([1]))
        expectError(.invalidFile, "\"\(dtype)\"", "not supported") { try Safetensors.decode(file) }
    }

    /// Half and bfloat16 bit patterns with their values worked out by hand from the formats'
    /// definitions (sign, 5- or 8-bit exponent, 10- or 7-bit fraction).
    @Test func decodesHalfAndBFloat16Exactly() throws {
        let halves: [(UInt16, Float)] = [
            (0x3C00, 1), (0xC000, -2), (0x7BFF, 65504), (0x3555, 0.333251953125), (0x0400, 0x1p-14),
            (0x0001, 0x1p-24), (0x03FF, 1023 * 0x1p-24), (0x8000, -0.0), (0x7C00, .infinity), (0xFC00, -.infinity),
        ]
        let bfloats: [(UInt16, Float)] = [(0x3F80, 1), (0xC0A0, -5), (0x4049, 3.140625), (0x0000, 0), (0xFF80, -.infinity)]
        func bytes(_ words: [UInt16]) -> [UInt8] { words.flatMap { [UInt8($0 & 0xFF), UInt8($0 >> 8)] } }
        let json = #"{"h":{"dtype":"F16","shape":[\#(halves.count)],"data_offsets":[0,\#(2 * halves.count)]},"#
            + #""b":{"dtype":"BF16","shape":[\#(bfloats.count)],"data_offsets":[\#(2 * halves.count),\#(2 * halves.count + 2 * bfloats.count)]}}"#
        let decoded = try Safetensors.decode(safetensorsFile(json, data: bytes(halves.map(\.0) + bfloats.map(\.0))))
        #expect(decoded["h"]?.values == halves.map(\.1))
        #expect(decoded["h"]?.values[7].sign == .minus, "negative zero keeps its sign")
        #expect(decoded["b"]?.values == bfloats.map(\.1))
        // A half NaN stays NaN.
        let nan = try Safetensors.decode(singleTensorFile(#""dtype":"F16","shape":[1],"data_offsets":[0,2]"#, data: bytes([0x7E00])))
        #expect(nan["t"]?.values[0].isNaN == true)
    }

    /// A PyTorch BatchNorm state_dict carries an int64 num_batches_tracked: the file loads, the
    /// integer buffer is checked and left out, the float tensors are kept.
    @Test(arguments: [("I64", 8), ("I32", 4), ("U8", 1), ("BOOL", 1), ("I16", 2), ("U64", 8)])
    func skipsIntegerBuffers(dtype: String, size: Int) throws {
        let json = #"{"bn.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
            + #""bn.num_batches_tracked":{"dtype":"\#(dtype)","shape":[],"data_offsets":[8,\#(8 + size)]}}"#
        let decoded = try Safetensors.decode(safetensorsFile(json, data: float32Bytes([1.5, -2]) + [UInt8](repeating: 7, count: size)))
        #expect(Set(decoded.keys) == ["bn.weight"])
        #expect(decoded["bn.weight"]?.values == [1.5, -2])
        // Skipped entries are still validated: a size that disagrees with the dtype is an error.
        let wrong = #"{"n":{"dtype":"\#(dtype)","shape":[3],"data_offsets":[0,\#(size)]}}"#
        expectError(.invalidFile, "tensor \"n\"", "span") {
            try Safetensors.decode(safetensorsFile(wrong, data: [UInt8](repeating: 0, count: size)))
        }
    }

    // MARK: Fuzz

    @Test func truncationsAlwaysThrow() throws {
        for file in [try Safetensors.encode(sample(), metadata: ["k": "v"]),
                     try Array(Data(contentsOf: fixtureURL("params.safetensors")))]
        {
            #expect(throws: Never.self) { try Safetensors.decode(file) }
            for length in 0..<file.count {
                expectError(.invalidFile) { try Safetensors.decode(Array(file[0..<length])) }
            }
        }
    }

    @Test func randomByteFlipsNeverCrash() throws {
        var random = SplitMix64(seed: 0x5AFE_0001)
        let file = try Safetensors.encode(sample(), metadata: ["k": "v"])
        var accepted = 0
        for round in 0..<5_000 {
            var bytes = file
            // Half the rounds aim at the header, where the interesting parsing is.
            let limit = round % 2 == 0 ? min(bytes.count, 8 + 200) : bytes.count
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                bytes[Int.random(in: 0..<limit, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            do {
                _ = try Safetensors.decode(bytes)
                accepted += 1
            } catch let error as NyquistError {
                #expect(error.kind == .invalidFile)
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
        #expect(accepted > 0)
    }

    @Test func randomHeadersNeverCrash() {
        var random = SplitMix64(seed: 0x5AFE_0002)
        let alphabet = Array(#"{}[],:" 0123456789-.eE+tdypeshaF3264I_ofnulrBt"#.utf8)
        let template = Array(#"{"t":{"dtype":"F32","shape":[2,1],"data_offsets":[0,8]},"__metadata__":{"a":"b"}}"#.utf8)
        for _ in 0..<5_000 {
            var header = template
            for _ in 0..<Int.random(in: 1...3, using: &random) {
                let index = Int.random(in: 0..<header.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: header[index] = alphabet.randomElement(using: &random) ?? 0
                case 1: header.remove(at: index)
                default: header.insert(alphabet.randomElement(using: &random) ?? 0, at: index)
                }
            }
            let bytes = safetensorsFile(String(decoding: header, as: UTF8.self), data: float32Bytes([1, 2]))
            do {
                _ = try Safetensors.decode(bytes)
            } catch let error as NyquistError {
                #expect(error.kind == .invalidFile)
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
    }
}
