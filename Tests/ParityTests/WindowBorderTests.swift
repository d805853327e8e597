import Nyquist
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

// The window vector kernels read rows through the axis tables and so cover the top and bottom
// border rows themselves; the left and right strips go either to the vector kernel's extra
// side item per row (folded) or to the table kernel. These cases put border rows and columns
// under every padding mode, pad offset and vector width, both ways, on the odd sizes the
// brief names (111x111 has a vector range that is not a whole number of vectors; 7x7, 2x2 and
// 1x1 leave little or no interior), forward and backward against the CPU reference.
@Suite("Window kernels: border rows in the vector kernels")
struct WindowBorderTests {
    static let shapes: [[Int]] = [[1, 3, 111, 111], [2, 3, 7, 7], [1, 2, 2, 2], [1, 1, 1, 1]]

    @Test("every padding mode and vector width vs reference", arguments: [2, 4, 8], [false, true])
    func borderRows(lanes: Int, foldedSides: Bool) throws {
        // A device object of its own, so the plans built under these pins stay out of the
        // shared device's plan cache.
        let device = try Device(TestDevice.get().info)
        let worst = try withPinnedKnobs(
            WindowKnobs(outputsPerItem: lanes, localSize: [64, 8, 1], foldedSides: foldedSides),
            families: try WindowTuning.families().map(\.name), shapeClasses: ["wide", "medium", "narrow"]
        ) {
            try borderRows(on: device)
        }
        print("window kernels, \(lanes) lanes, \(foldedSides ? "folded" : "separate") sides: \(worst)")
    }

    private func borderRows(on device: Device) throws -> WorstErrors {
        var worst = WorstErrors()
        for (index, shape) in Self.shapes.enumerated() {
            let seed = UInt64(1300 + index)
            for (kernel, padding) in [(3, 1), (2, 0), (2, 1)] {
                worst.merge(
                    try maxPoolCase(MaxPool2DConfiguration(kernelSize: kernel, stride: 2, padding: padding))
                        .check(shape: shape, seed: seed, on: device))
                worst.merge(
                    try avgPoolCase(AvgPool2DConfiguration(kernelSize: kernel, stride: 2, padding: padding))
                        .check(shape: shape, seed: seed, on: device))
            }
            for (mode, offset) in paddingOptions {
                for filterSize in [1, 2, 3, 4, 5] {
                    let blur = try BlurPool2DConfiguration(
                        channels: shape[1], filterSize: filterSize, stride: 2, padding: mode, padOffset: offset)
                    worst.merge(try blurPoolCase(blur).check(shape: shape, seed: seed, on: device))
                    let maxBlur = try MaxBlurPool2DConfiguration(
                        channels: shape[1], filterSize: filterSize, stride: 2, padding: mode, padOffset: offset)
                    worst.merge(try maxBlurPoolCase(maxBlur).check(shape: shape, seed: seed, on: device))
                }
            }
        }
        return worst
    }
}
