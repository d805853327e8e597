import Foundation
#if canImport(FoundationXML)
    import FoundationXML
#endif
import NyquistCore
import NyquistImage
import Testing

@Suite("nyquist picture")
struct PictureTests {
    /// The PNG files index.md shows or names (`![...](file.png)` and `` `file.png` ``).
    private func filesNamed(in index: String) -> Set<String> {
        var names = Set<String>()
        for separator in ["(", "`"] {
            for piece in index.components(separatedBy: separator).dropFirst() {
                let candidate = piece.prefix { $0 != ")" && $0 != "`" && $0 != " " }
                if candidate.hasSuffix(".png") || candidate.hasSuffix(".svg") { names.insert(String(candidate)) }
            }
        }
        return names
    }

    private static let operators = [
        "max-pool", "avg-pool", "blur-pool", "max-blur-pool", "adaptive-blur-pool", "lift-down-pool", "aps-pool",
        "tips-pool",
    ]

    @Test("every picture index.md names is written, decodes and has the expected size", arguments: ["reference", "opencl"])
    func zonePlatePictures(backend: String) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let size = backend == "reference" ? 32 : 16
        // The chart runs nyquist eval at size 64: seconds on OpenCL, minutes on the reference.
        let withChart = backend == "opencl"
        let outcome = try workspace.run(
            ["picture", "--size", "\(size)", "--output", "out", "--backend", backend] + (withChart ? [] : ["--no-chart"]))
        #expect(outcome.status == 0, "\(outcome)")
        #expect(outcome.standardOutput.contains("wrote \(withChart ? 15 : 14) pictures"), "\(outcome)")
        #expect(outcome.standardError.contains("picture [12/12]"), "progress goes to stderr: \(outcome)")
        let index = try String(contentsOf: workspace.url("out/index.md"), encoding: .utf8)
        let named = filesNamed(in: index)
        let written = Set(try FileManager.default.contentsOfDirectory(atPath: workspace.url("out").path)).subtracting(["index.md"])
        #expect(named == written)
        #expect(written.count == (withChart ? 15 : 14))
        if withChart {
            let svg = try Data(contentsOf: workspace.url("out/equivariance.svg"))
            let parser = XMLParser(data: svg)
            #expect(parser.parse(), "equivariance.svg is not well-formed XML")
            for name in Self.operators {
                #expect(String(decoding: svg, as: UTF8.self).contains(name), "the chart's legend lacks \(name)")
            }
        }
        for name in written where name.hasSuffix(".png") {
            let image = try PNG.read(contentsOf: workspace.url("out/\(name)"))
            #expect(image.layout == .rgb && image.bitDepth == 8, "\(name)")
            let panel = name == "input.png" || Self.operators.contains(String(name.dropLast(4)))
            switch name {
            case _ where panel:
                #expect(image.width == size && image.height == size, "\(name) is \(image.width)x\(image.height)")
            case "operators.png", "adaptive-filters.png":
                #expect(image.width > 3 * size && image.height > 2 * size, "\(name) is \(image.width)x\(image.height)")
            case "lift-bands-input.png", "lift-bands-pink-noise.png":
                #expect(image.width > size && image.height > size, "\(name) is \(image.width)x\(image.height)")
            default:
                #expect(image.width > 0 && image.height > 0)
            }
        }
        // input.png is the zone plate, gray = round(255 * v).
        let input = try PNG.read(contentsOf: workspace.url("out/input.png"))
        let zonePlate = try TestImages.zonePlate(size: size)
        for pixel in 0..<(size * size) {
            let expected = UInt16((zonePlate.values[pixel] * 255).rounded())
            #expect(input.samples[3 * pixel] == expected && input.samples[3 * pixel + 2] == expected, "pixel \(pixel)")
        }
        // max-pool.png: every 2x2 block is the maximum of the input's block (8-bit values: max
        // commutes with the monotonic mapping, so the check is exact).
        let maxPool = try PNG.read(contentsOf: workspace.url("out/max-pool.png"))
        for row in 0..<size {
            for column in 0..<size {
                let (top, left) = (row / 2 * 2, column / 2 * 2)
                let window = [(0, 0), (0, 1), (1, 0), (1, 1)].map { input[top + $0.0, left + $0.1, 0] }
                #expect(maxPool[row, column, 1] == window.max(), "(\(row), \(column))")
            }
        }
    }

    @Test("a constant image stays constant through avg-pool, blur-pool and max-pool")
    func constantImage() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let image = try PNGImage(width: 20, height: 16, layout: .gray, samples: [UInt16](repeating: 100, count: 320))
        try PNG.write(image, to: workspace.url("flat.png"))
        let outcome = try workspace.run(["picture", "--image", "flat.png", "--output", "out", "--backend", "reference", "--no-chart"])
        #expect(outcome.status == 0, "\(outcome)")
        for name in ["avg-pool", "blur-pool", "max-pool", "input"] {
            let picture = try PNG.read(contentsOf: workspace.url("out/\(name).png"))
            #expect(picture.width == 20 && picture.height == 16, "\(name)")
            #expect(picture.samples.allSatisfy { $0 == 100 }, "\(name) is not constant 100")
        }
    }

    @Test("bad options and inputs: one error line, no output folder")
    func errors() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        try workspace.write(bytes: Array("not a png".utf8), "junk.png")
        let small = try PNGImage(width: 4, height: 9, layout: .gray, samples: [UInt16](repeating: 0, count: 36))
        try PNG.write(small, to: workspace.url("small.png"))
        for arguments in [
            ["--image", "junk.png"], ["--image", "small.png"], ["--size", "4"], ["--size", "2000"],
            ["--backend", "cuda"], ["--backend", "reference", "--device", "0"], ["--image", "small.png", "--size", "16"],
        ] {
            let outcome = try workspace.run(["picture", "--output", "out"] + arguments)
            expectCLIError(outcome, in: workspace, outputs: ["out"])
        }
    }
}
