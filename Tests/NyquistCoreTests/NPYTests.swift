import Foundation
import NyquistCore
import Testing

/// Builds an NPY file by hand: magic, `version`, little-endian header length (2 bytes for 1.x,
/// 4 otherwise), `header` padded with spaces and a newline to 64 bytes, then `data`.
func npyFile(_ header: String, version: (UInt8, UInt8) = (1, 0), data: [UInt8], pad: Bool = true) -> [UInt8] {
    let lengthSize = version.0 == 1 ? 2 : 4
    var text = Array(header.utf8)
    if pad {
        let unpadded = 8 + lengthSize + text.count + 1
        text += Array(repeating: UInt8(ascii: " "), count: (64 - unpadded % 64) % 64) + [UInt8(ascii: "\n")]
    }
    var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version.0, version.1]
    for index in 0..<lengthSize {
        bytes.append(UInt8(truncatingIfNeeded: text.count >> (8 * index)))
    }
    return bytes + text + data
}

/// A well-formed little-endian float32 header for `shape` (a Python tuple literal).
func f4Header(_ shape: String) -> String {
    "{'descr': '<f4', 'fortran_order': False, 'shape': \(shape), }"
}

@Suite("NPY")
struct NPYTests {
    // MARK: Round trip and layout

    @Test(arguments: [[1], [5], [2, 3], [1, 1, 1], [2, 3, 4, 5], [3, 1, 2, 1, 2], [1, 1, 1, 1, 1, 1, 7]])
    func roundTrip(shape: [Int]) throws {
        let special: [Float] = [0, -0.0, .infinity, -.infinity, .nan, .leastNonzeroMagnitude, .greatestFiniteMagnitude, Float.leastNormalMagnitude / 4]
        let tensor = try HostTensor(shape: shape) { index in
            index < special.count ? special[index] : Float(index) * 0.25 - 7
        }
        let decoded = try NPY.decode(NPY.encode(tensor))
        #expect(decoded.shape == shape)
        #expect(bits(decoded) == bits(tensor))
    }

    @Test func encodeFollowsNumpyLayout() throws {
        let tensor = try HostTensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let bytes = NPY.encode(tensor)
        #expect(Array(bytes[0..<8]) == [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
        #expect((10 + headerLength) % 64 == 0)
        let header = String(decoding: bytes[10..<(10 + headerLength)], as: UTF8.self)
        #expect(header.hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"))
        #expect(header.hasSuffix(" \n"))
        #expect(header.dropLast().allSatisfy { $0 != "\n" })
        #expect(Array(bytes[(10 + headerLength)...]) == float32Bytes([1, 2, 3, 4, 5, 6]))

        let vector = NPY.encode(try HostTensor(shape: [5], repeating: 0))
        #expect(vector.count == 128 + 5 * 4)
        #expect(String(decoding: vector[10..<128], as: UTF8.self).hasPrefix("{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }"))
    }

    // MARK: Hand-built files that must be accepted

    @Test func decodesFloat64() throws {
        let doubles: [Double] = [0.5, -2.25, 1e-3, 0.1, 1e300]
        let bytes = npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': (5,), }", data: float64Bytes(doubles))
        let tensor = try NPY.decode(bytes)
        #expect(tensor.shape == [5])
        #expect(tensor.values == [0.5, -2.25, Float(1e-3 as Double), Float(0.1 as Double), .infinity])
    }

    @Test(arguments: [(UInt8(2), UInt8(0)), (3, 0)])
    func decodesVersion2And3(major: UInt8, minor: UInt8) throws {
        let bytes = npyFile(f4Header("(2, 2)"), version: (major, minor), data: float32Bytes([1, 2, 3, 4]))
        #expect(Array(bytes[8...11]) == [UInt8(bytes.count - 12 - 16), 0, 0, 0])
        let tensor = try NPY.decode(bytes)
        #expect(tensor.shape == [2, 2])
        #expect(tensor.values == [1, 2, 3, 4])
    }

    @Test(arguments: [
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
        "{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}",
        "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}",
        "  {  'descr' : '<f4' ,'fortran_order':False,'shape':( 2 , 3 , ) }  ",
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }",
        "{'descr': '<f4', 'fortran_order': False, 'shape': [2, 3], }",
    ])
    func acceptsHeaderVariants(header: String) throws {
        let tensor = try NPY.decode(npyFile(header, data: float32Bytes([0, 1, 2, 3, 4, 5])))
        #expect(tensor.shape == [2, 3])
        #expect(tensor.values == [0, 1, 2, 3, 4, 5])
    }

    @Test func acceptsUnpaddedHeader() throws {
        let tensor = try NPY.decode(npyFile(f4Header("(1,)"), data: float32Bytes([9]), pad: false))
        #expect(tensor.values == [9])
    }

    // MARK: Rejections

    @Test func rejectsBadMagic() {
        expectError(.invalidFile, "magic") { try NPY.decode([]) }
        expectError(.invalidFile, "magic") { try NPY.decode(Array("hello world, not numpy".utf8)) }
        var bytes = npyFile(f4Header("(1,)"), data: float32Bytes([1]))
        bytes[1] = UInt8(ascii: "n")
        expectError(.invalidFile, "magic") { try NPY.decode(bytes) }
    }

    @Test(arguments: [(UInt8(0), UInt8(0)), (1, 1), (2, 1), (4, 0), (255, 255)])
    func rejectsUnsupportedVersion(major: UInt8, minor: UInt8) {
        let bytes = npyFile(f4Header("(1,)"), version: (major, minor), data: float32Bytes([1]))
        expectError(.invalidFile, "version \(major).\(minor)") { try NPY.decode(bytes) }
    }

    @Test func rejectsBadHeaderLength() {
        let good = npyFile(f4Header("(1,)"), data: float32Bytes([1]))
        expectError(.invalidFile, "header length") { try NPY.decode(Array(good[0..<9])) }
        var long = good
        long[8] = 0xFF
        long[9] = 0xFF
        expectError(.invalidFile, "65535") { try NPY.decode(long) }
        var v2 = npyFile(f4Header("(1,)"), version: (2, 0), data: float32Bytes([1]))
        v2[8...11] = [0xFF, 0xFF, 0xFF, 0xFF]
        expectError(.invalidFile, "implausibly large") { try NPY.decode(v2) }
    }

    @Test(arguments: [
        ("", "end of header"),
        ("[1, 2]", "not a Python dict"),
        ("'descr'", "not a Python dict"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "expected ',' or '}'"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}}", "after the literal"),
        ("{'descr: '<f4'}", "expected ':'"),
        ("{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", "expected ',' or '}'"),
        ("{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}", "unexpected character"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}", "expected an integer"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (0x10,)}", "expected an integer"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "integer too large"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unexpected key"),
        ("{'fortran_order': False, 'shape': (1,)}", "no 'descr'"),
        ("{'descr': '<f4', 'shape': (1,)}", "no 'fortran_order'"),
        ("{'descr': '<f4', 'fortran_order': False}", "no 'shape'"),
        ("{1: '<f4', 'fortran_order': False, 'shape': (1,)}", "not a string"),
        ("{'descr': 4, 'fortran_order': False, 'shape': (1,)}", "'descr' is not a string"),
        ("{'descr': [('x', '<f4')], 'fortran_order': False, 'shape': (1,)}", "structured"),
        ("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "True or False"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': 1}", "not a tuple"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (1)}", "not a tuple"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': ('1',)}", "not an integer"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (None,)}", "not an integer"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': ((1,),)}", "not an integer"),
    ])
    func rejectsMalformedHeader(header: String, fragment: String) {
        expectError(.invalidFile, fragment) { try NPY.decode(npyFile(header, data: float32Bytes([1]))) }
    }

    @Test func rejectsDeepNesting() {
        let header = String(repeating: "(", count: 10_000)
        expectError(.invalidFile, "nesting") { try NPY.decode(npyFile(header, version: (2, 0), data: [])) }
    }

    @Test(arguments: [
        ("<i4", "\"<i4\""), ("<f2", "\"<f2\""), ("|f4", "\"|f4\""), ("=f4", "\"=f4\""), ("<c8", "\"<c8\""),
        ("|u1", "\"|u1\""), ("<F4", "\"<F4\""), ("", "\"\""),
    ])
    func rejectsUnsupportedDtype(descr: String, shown: String) {
        let header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (1,), }"
        expectError(.invalidFile, "not supported", shown) { try NPY.decode(npyFile(header, data: float32Bytes([1]))) }
    }

    @Test(arguments: [">f4", ">f8"])
    func rejectsBigEndian(descr: String) {
        let header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (1,), }"
        expectError(.invalidFile, "big-endian") { try NPY.decode(npyFile(header, data: [0, 0, 0, 0, 0, 0, 0, 0])) }
    }

    @Test func rejectsFortranOrder() {
        let header = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }"
        expectError(.invalidFile, "Fortran") { try NPY.decode(npyFile(header, data: float32Bytes([1, 2, 3, 4]))) }
    }

    @Test func rejectsRankZero() {
        expectError(.invalidFile, "rank-0") { try NPY.decode(npyFile(f4Header("()"), data: float32Bytes([1]))) }
    }

    @Test(arguments: ["(0,)", "(2, 0)", "(-1,)", "(3, -2)"])
    func rejectsNonPositiveSizes(shape: String) {
        expectError(.invalidFile, "must be positive") { try NPY.decode(npyFile(f4Header(shape), data: [])) }
    }

    @Test func rejectsElementCountOverflow() {
        // 2^40 * 2^40 overflows Int; 2^62 elements fit but 2^62 * 4 bytes do not.
        expectError(.invalidFile, "more elements") {
            try NPY.decode(npyFile(f4Header("(1099511627776, 1099511627776)"), data: []))
        }
        expectError(.invalidFile, "more bytes") { try NPY.decode(npyFile(f4Header("(4611686018427387904,)"), data: [])) }
        expectError(.invalidFile, "too short") { try NPY.decode(npyFile(f4Header("(65536, 65536, 65536)"), data: [])) }
    }

    @Test func rejectsWrongDataLength() {
        expectError(.invalidFile, "too short", "24 bytes", "20") {
            try NPY.decode(npyFile(f4Header("(2, 3)"), data: float32Bytes([1, 2, 3, 4, 5])))
        }
        expectError(.invalidFile, "too long", "24 bytes", "28") {
            try NPY.decode(npyFile(f4Header("(2, 3)"), data: float32Bytes([1, 2, 3, 4, 5, 6, 7])))
        }
        expectError(.invalidFile, "too short") {
            try NPY.decode(npyFile("{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", data: float32Bytes([1, 2])))
        }
    }

    // MARK: Fixtures written by numpy (generate_fixtures.py)

    @Test func fixtureFloat32Rank4() throws {
        let tensor = try NPY.read(contentsOf: fixtureURL("f32_2x3x4x5.npy"))
        #expect(tensor.shape == [2, 3, 4, 5])
        // Same formula as the script: 0.5 * i - 3 for flat C-order index i.
        #expect(tensor.values == (0..<120).map { 0.5 * Float($0) - 3 })
    }

    @Test func fixtureFloat64() throws {
        let tensor = try NPY.read(contentsOf: fixtureURL("f64_3x4.npy"))
        #expect(tensor.shape == [3, 4])
        // 0.1 * i - 1 computed in float64, then rounded to float32.
        #expect(tensor.values == (0..<12).map { Float(0.1 * Double($0) - 1) })
    }

    @Test func fixtureVector() throws {
        let tensor = try NPY.read(contentsOf: fixtureURL("f32_vector7.npy"))
        #expect(tensor.shape == [7])
        #expect(tensor.values == (0..<7).map { Float($0 * $0) })
    }

    @Test func fixtureVersion2() throws {
        let url = fixtureURL("f32_v2_2x2.npy")
        let bytes = try Array(Data(contentsOf: url))
        #expect(bytes[6] == 2 && bytes[7] == 0)
        let tensor = try NPY.read(contentsOf: url)
        #expect(tensor.shape == [2, 2])
        #expect(tensor.values == [1, 2, 3, 4])
    }

    @Test(arguments: [
        ("i32_2x3.npy", "\"<i4\""), ("f32_bigendian_2x3.npy", "big-endian"), ("f32_fortran_3x4.npy", "Fortran"),
        ("f32_scalar.npy", "rank-0"),
    ])
    func fixtureRejected(name: String, fragment: String) {
        expectError(.invalidFile, name, fragment) { try NPY.read(contentsOf: fixtureURL(name)) }
    }

    @Test func encodeMatchesNumpyBytes() throws {
        // numpy.save of float32 data writes exactly what we write, header padding included.
        let numpyBytes = try Array(Data(contentsOf: fixtureURL("f32_2x3x4x5.npy")))
        let tensor = try HostTensor(shape: [2, 3, 4, 5]) { 0.5 * Float($0) - 3 }
        #expect(NPY.encode(tensor) == numpyBytes)
        let vector = try HostTensor(shape: [7]) { Float($0 * $0) }
        #expect(NPY.encode(vector) == Array(try Data(contentsOf: fixtureURL("f32_vector7.npy"))))
    }

    // MARK: Fuzz

    @Test func truncationsAlwaysThrow() throws {
        for file in [npyFile(f4Header("(2, 3)"), data: float32Bytes([1, 2, 3, 4, 5, 6])),
                     npyFile(f4Header("(3,)"), version: (2, 0), data: float32Bytes([1, 2, 3])),
                     try Array(Data(contentsOf: fixtureURL("f64_3x4.npy")))]
        {
            #expect(throws: Never.self) { try NPY.decode(file) }
            for length in 0..<file.count {
                expectError(.invalidFile) { try NPY.decode(Array(file[0..<length])) }
            }
        }
    }

    @Test func randomByteFlipsNeverCrash() throws {
        var random = SplitMix64(seed: 0x5EED_0001)
        let file = npyFile(f4Header("(2, 3)"), data: float32Bytes([1, 2, 3, 4, 5, 6]))
        var accepted = 0
        for _ in 0..<5_000 {
            var bytes = file
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
            }
            do {
                let tensor = try NPY.decode(bytes)
                #expect(tensor.count == tensor.shape.reduce(1, *))
                accepted += 1
            } catch let error as NyquistError {
                #expect(error.kind == .invalidFile)
            }
        }
        #expect(accepted > 0)  // flips in the data are still valid files
    }

    @Test func randomHeadersNeverCrash() {
        // Headers drawn from the characters a header is made of hit the parser's corners far
        // more often than random bytes do.
        var random = SplitMix64(seed: 0x5EED_0002)
        let alphabet = Array("{}()[],:'\" 0123456789-+LTrueFalsNonedscrfothap_<>|=f48i\n\\".utf8)
        let template = Array(f4Header("(2, 3)").utf8)
        for round in 0..<5_000 {
            var header: [UInt8]
            if round % 2 == 0 {
                header = template
                for _ in 0..<Int.random(in: 1...3, using: &random) {
                    let index = Int.random(in: 0..<header.count, using: &random)
                    switch Int.random(in: 0..<3, using: &random) {
                    case 0: header[index] = alphabet.randomElement(using: &random) ?? 0
                    case 1: header.remove(at: index)
                    default: header.insert(alphabet.randomElement(using: &random) ?? 0, at: index)
                    }
                }
            } else {
                header = (0..<Int.random(in: 0...80, using: &random)).map { _ in alphabet.randomElement(using: &random) ?? 0 }
            }
            let bytes = npyFile(String(decoding: header, as: UTF8.self), data: float32Bytes([1, 2, 3, 4, 5, 6]))
            do {
                _ = try NPY.decode(bytes)
            } catch let error as NyquistError {
                #expect(error.kind == .invalidFile)
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
    }

    @Test func randomBytesNeverCrash() {
        var random = SplitMix64(seed: 0x5EED_0003)
        for _ in 0..<2_000 {
            var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [UInt8.random(in: 1...3, using: &random), 0]
            bytes += (0..<Int.random(in: 0...200, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            do {
                _ = try NPY.decode(bytes)
            } catch let error as NyquistError {
                #expect(error.kind == .invalidFile)
            } catch {
                Issue.record("unexpected error \(error)")
            }
        }
    }
}
