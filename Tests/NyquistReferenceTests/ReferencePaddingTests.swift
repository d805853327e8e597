import NyquistCore
import Testing

@testable import NyquistReference

/// The reference's own padding, checked against SPEC.md section 0's wording.
@Suite("Reference padding")
struct PaddingTests {
    let samples = [10, 11, 12, 13]

    @Test("reflect mirrors without repeating the edge: -1 -> 1, H -> H-2")
    func reflect() throws {
        #expect(try ReferencePadding.reflectPad(samples, before: 3, after: 2) == [13, 12, 11, 10, 11, 12, 13, 12, 11])
        #expect(throws: NyquistError.self) { try ReferencePadding.reflectPad(samples, before: 4, after: 0) }
        #expect(try ReferencePadding.reflectPad([7], before: 0, after: 0) == [7])
    }

    @Test("replicate clamps, circular wraps (more than once if needed), zero fills")
    func otherModes() throws {
        #expect(ReferencePadding.replicatePad(samples, before: 2, after: 3) == [10, 10, 10, 11, 12, 13, 13, 13, 13])
        #expect(ReferencePadding.circularPad(samples, before: 2, after: 1) == [12, 13, 10, 11, 12, 13, 10])
        #expect(ReferencePadding.circularPad([1, 2], before: 5, after: 5) == [2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1])
        #expect(ReferencePadding.constantPad(samples, before: 1, after: 2, fill: 0) == [0, 10, 11, 12, 13, 0, 0])
    }

    @Test("Source positions are the padding of 0..<n", arguments: PaddingMode.allCases)
    func sourcePositions(mode: PaddingMode) throws {
        let positions = try ReferencePadding.sourcePositions(size: 5, before: 2, after: 3, mode: mode)
        let values = try ReferencePadding.pad([50, 51, 52, 53, 54], before: 2, after: 3, mode: mode, fill: -1)
        #expect(positions.map { $0.map { 50 + $0 } ?? -1 } == values)
    }
}
