import Foundation
import Nyquist
import NyquistCore
import Testing

/// The README's Swift example, verbatim between the markers, so the first code a newcomer
/// copies is known to compile and run.
@Test("README example runs and gives the documented shapes")
func readmeExample() throws {
    // README begin
    let device = try Device.default()                       // NYQUIST_DEVICE=1 or =NVIDIA picks another
    let x = try DeviceTensor(HostTensor(shape: [8, 64, 56, 56], repeating: 1), on: device)
    let pool = try BlurPool2D(channels: 64, filterSize: 4, stride: 2, padding: .reflect)
    let y = try pool(x)                                     // inference: 8 x 64 x 28 x 28
    let (output, saved) = try pool.forwardTraining(x)       // keeps what backward needs
    let gradOutput = try DeviceTensor(HostTensor(shape: output.shape, repeating: 1), on: device)
    let gradients = try pool.backward(gradOutput, saved)    // gradients.input: 8 x 64 x 56 x 56
    print(try y.toHost().shape, try gradients.input.toHost().shape)
    // README end
    #expect(y.shape == [8, 64, 28, 28])
    #expect(gradients.input.shape == [8, 64, 56, 56])
    // A constant map stays constant through a normalised blur with reflect padding.
    #expect(try y.toHost().values.allSatisfy { $0 == 1 })
}

/// Guards against the README and this test drifting apart.
@Test("README snippet and test agree")
func readmeMatchesTest() throws {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
    let test = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
    let begin = try #require(test.range(of: "// README begin\n"))
    let end = try #require(test.range(of: "    // README end"))
    let lines = test[begin.upperBound..<end.lowerBound].split(separator: "\n").map {
        $0.trimmingCharacters(in: .whitespaces)
    }
    for line in lines {
        #expect(readme.contains(line), "README lacks: \(line)")
    }
}
