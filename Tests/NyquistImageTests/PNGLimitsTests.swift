import Foundation
import NyquistCore
import NyquistImage
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The PNG decode budget and the file checks, with explicit small limits so that no test
/// allocates much or depends on the machine's default.
@Suite("PNG limits")
struct PNGLimitsTests {
    let small = HostLimits(memoryBudget: 64 << 20, pngDecodeBudget: 1 << 20)

    @Test func ihdrOverBudgetIsRefusedBeforeInflating() {
        // 30000x30000 gray declared over five bytes of data: refused from IHDR alone.
        let file = HandPNG.file(width: 30_000, height: 30_000, raw: [0, 1, 2, 3, 4])
        expectError(.sizeLimit, "30000x30000", "decoding needs 2.5 GiB", "PNG decode budget of 1.0 MiB",
            "NYQUIST_PNG_DECODE_BUDGET") {
            try PNG.decode(file, name: "bomb.png", limits: small)
        }
        // The default budget (at most 256 MiB) refuses it too.
        expectError(.sizeLimit, "30000x30000") { try PNG.decode(file) }
    }

    @Test func realDeflateBombIsRefused() throws {
        // A genuine 512x512 gray image of zeros: about a kilobyte that inflates to 257 KiB.
        let image = try PNGImage(width: 512, height: 512, layout: .gray, samples: Array(repeating: 0, count: 512 * 512))
        let file = try PNG.encode(image)
        #expect(file.count < 4 << 10)
        let tight = HostLimits(memoryBudget: 64 << 20, pngDecodeBudget: 256 << 10)
        expectError(.sizeLimit, "512x512", "needs 768.5 KiB", "256.0 KiB") { try PNG.decode(file, limits: tight) }
        #expect(try PNG.decode(file, limits: small) == image)
    }

    @Test func budgetCountsPaletteExpansion() throws {
        // 16x16 palette: 16 * 17 inflated bytes + 16 * 16 * 4 samples * 2 bytes = 2320 bytes.
        let plte = HandPNG.chunk("PLTE", [0, 0, 0])
        let file = HandPNG.file(
            width: 16, height: 16, colour: 3, raw: Array(repeating: 0, count: 16 * 17), beforeData: plte)
        expectError(.sizeLimit, "16x16", "2.3 KiB") {
            try PNG.decode(file, limits: HostLimits(memoryBudget: 1 << 20, pngDecodeBudget: 2319))
        }
        #expect(try PNG.decode(file, limits: HostLimits(memoryBudget: 1 << 20, pngDecodeBudget: 2320)).width == 16)
    }

    @Test func tensorConversionHonoursTheMemoryBudget() throws {
        let image = try PNGImage(width: 8, height: 8, layout: .rgb, samples: Array(repeating: 7, count: 192))
        expectError(.sizeLimit, "8x8 RGB", "needs 768 bytes") { try image.tensor(limits: HostLimits(memoryBudget: 767)) }
        #expect(try image.tensor(limits: HostLimits(memoryBudget: 768)).shape == [1, 3, 8, 8])
    }

    @Test func refusesNonRegularFiles() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("nyquist-png-limits-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let fifo = directory.appendingPathComponent("pipe.png")
        #expect(mkfifo(fifo.path, 0o600) == 0)
        expectError(.io, fifo.path, "is a FIFO, not a regular file") { try PNG.read(contentsOf: fifo) }
        expectError(.io, "is a character device") { try PNG.read(contentsOf: URL(fileURLWithPath: "/dev/zero")) }
        expectError(.io, "is a directory") { try PNG.read(contentsOf: directory) }
    }
}
