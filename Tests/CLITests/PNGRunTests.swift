import Foundation
import NyquistCore
import NyquistImage
import Testing

/// `nyquist run` with .png inputs and outputs.
@Suite("nyquist run: PNG files")
struct PNGRunTests {
    /// A random 8-bit image and, independently, its tensor (sample / 255, planar).
    private func randomImage(width: Int, height: Int, layout: PNGImage.Layout, seed: UInt64) throws -> (PNGImage, HostTensor) {
        var generator = SplitMix64(seed: seed)
        let samples = (0..<(width * height * layout.channels)).map { _ in UInt16(generator.next() % 256) }
        let image = try PNGImage(width: width, height: height, layout: layout, samples: samples)
        let channels = layout.channels
        let tensor = try HostTensor(shape: [1, channels, height, width]) { index in
            let plane = width * height
            let (channel, pixel) = (index / plane, index % plane)
            return Float(samples[pixel * channels + channel]) / 255
        }
        return (image, tensor)
    }

    @Test("blur-pool PNG -> PNG matches the reference on the same tensor", arguments: ["opencl", "reference"])
    func blurPoolPNG(backend: String) throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let (image, tensor) = try randomImage(width: 16, height: 11, layout: .rgb, seed: 3)
        try PNG.write(image, to: workspace.url("x.png"))
        try workspace.write(tensor, "x.npy")
        let outcome = try workspace.run(["run", "blur-pool", "--input", "x.png", "--output", "y.png", "--backend", backend])
        #expect(outcome.status == 0, "\(outcome)")
        let reference = try workspace.run(["run", "blur-pool", "--input", "x.npy", "--output", "y.npy", "--backend", "reference"])
        #expect(reference.status == 0, "\(reference)")
        let output = try PNG.read(contentsOf: workspace.url("y.png"))
        let expected = try workspace.read("y.npy")
        #expect(expected.shape == [1, 3, 6, 8])
        #expect(output.width == 8 && output.height == 6 && output.layout == .rgb && output.bitDepth == 8)
        // round(255 * v); a device result a rounding error away from a .5 boundary may differ by 1.
        for channel in 0..<3 {
            for pixel in 0..<48 {
                let value = Double(expected.values[channel * 48 + pixel]) * 255
                let sample = Double(output.samples[pixel * 3 + channel])
                #expect(abs(sample - value) <= 0.5 + 1e-3, "channel \(channel) pixel \(pixel): \(sample) vs \(value)")
            }
        }
    }

    @Test("max-pool of a gray PNG is the window maximum of its samples, exactly")
    func maxPoolGray() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let (image, _) = try randomImage(width: 9, height: 6, layout: .gray, seed: 8)
        try PNG.write(image, to: workspace.url("x.png"))
        let outcome = try workspace.run(["run", "max-pool", "--input", "x.png", "--output", "y.PNG"])
        #expect(outcome.status == 0, "\(outcome)")
        let output = try PNG.read(contentsOf: workspace.url("y.PNG"))
        #expect(output.width == 4 && output.height == 3 && output.layout == .gray)
        for row in 0..<3 {
            for column in 0..<4 {
                let window = [(0, 0), (0, 1), (1, 0), (1, 1)].map { image[2 * row + $0.0, 2 * column + $0.1, 0] }
                #expect(output[row, column, 0] == window.max(), "(\(row), \(column))")
            }
        }
        // PNG in, NPY out: the same values as floats.
        let npy = try workspace.run(["run", "max-pool", "--input", "x.png", "--output", "y.npy", "--backend", "reference"])
        #expect(npy.status == 0, "\(npy)")
        let y = try workspace.read("y.npy")
        #expect(y.shape == [1, 1, 3, 4])
        #expect(y.values == output.samples.map { Float($0) / 255 })
    }

    @Test("adaptive-blur-pool and lift-down-pool read and write PNG")
    func otherRunPaths() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        let (image, _) = try randomImage(width: 10, height: 8, layout: .rgba, seed: 4)
        try PNG.write(image, to: workspace.url("x.png"))
        let adaptive = try workspace.run(
            ["run", "adaptive-blur-pool", "--input", "x.png", "--output", "a.png", "--backend", "reference"])
        #expect(adaptive.status == 0, "\(adaptive)")
        let a = try PNG.read(contentsOf: workspace.url("a.png"))
        #expect(a.width == 5 && a.height == 4 && a.layout == .rgb, "RGBA in, alpha dropped")
        // lift-down-pool writes into an existing --extra folder (it does not create one).
        try FileManager.default.createDirectory(at: workspace.url("bands"), withIntermediateDirectories: true)
        let lift = try workspace.run(
            ["run", "lift-down-pool", "--input", "x.png", "--output", "l.png", "--extra", "bands", "--backend", "reference"])
        #expect(lift.status == 0, "\(lift)")
        let l = try PNG.read(contentsOf: workspace.url("l.png"))
        #expect(l.width == 5 && l.height == 4 && l.layout == .rgb)
        #expect(try workspace.read("bands/ll.npy").shape == [1, 3, 4, 5])
    }

    @Test("bad PNG input: one error line, no output file")
    func badInput() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        try workspace.write(bytes: Array("definitely not a PNG".utf8), "junk.png")
        let junk = try workspace.run(["run", "blur-pool", "--input", "junk.png", "--output", "y.png"])
        expectCLIError(junk, in: workspace, outputs: ["y.png"], mentioning: "junk.png")

        let (image, _) = try randomImage(width: 6, height: 6, layout: .gray, seed: 1)
        let bytes = try PNG.encode(image)
        try workspace.write(bytes: Array(bytes.dropLast(20)), "cut.png")
        let cut = try workspace.run(["run", "max-pool", "--input", "cut.png", "--output", "y.npy"])
        expectCLIError(cut, in: workspace, outputs: ["y.npy"], mentioning: "cut.png")

        var damaged = bytes
        damaged[40] ^= 0x10
        try workspace.write(bytes: damaged, "crc.png")
        let crc = try workspace.run(["run", "avg-pool", "--input", "crc.png", "--output", "y.png", "--backend", "reference"])
        expectCLIError(crc, in: workspace, outputs: ["y.png"], mentioning: "CRC")
    }

    @Test("PNG output that cannot hold the tensor: one error line, no output file")
    func badOutputShape() throws {
        let workspace = try Workspace()
        defer { workspace.remove() }
        var random = SplitMix64(seed: 2)
        try workspace.write(random.tensor([1, 2, 8, 8], range: 0...1), "c2.npy")
        try workspace.write(random.tensor([2, 3, 8, 8], range: 0...1), "n2.npy")
        let channels = try workspace.run(["run", "blur-pool", "--input", "c2.npy", "--output", "y.png"])
        expectCLIError(channels, in: workspace, outputs: ["y.png"], mentioning: "C = 2")
        let batch = try workspace.run(["run", "max-pool", "--input", "n2.npy", "--output", "y.png", "--backend", "reference"])
        expectCLIError(batch, in: workspace, outputs: ["y.png"], mentioning: "N = 2")
        let lift = try workspace.run(["run", "lift-down-pool", "--input", "c2.npy", "--output", "y.png", "--extra", "b"])
        expectCLIError(lift, in: workspace, outputs: ["y.png", "b/ll.npy"], mentioning: "C = 2")
    }
}
