import Foundation
// README.md: example begin
import Nyquist
import NyquistCore
// README.md: example end
import Testing

/// The README's Swift example, verbatim between the markers (its imports above, its code here),
/// so the first code a newcomer copies is known to compile and run; `docSnippetsMatchPages`
/// (DocSnippetTests.swift) checks that the README still shows exactly this code.
@Test("README example runs and gives the documented shapes")
func readmeExample() throws {
    // README.md: example begin
    let device = try Device.default()                       // NYQUIST_DEVICE=1 or =NVIDIA picks another
    let x = try DeviceTensor(HostTensor(shape: [8, 64, 56, 56], repeating: 1), on: device)
    let pool = try BlurPool2D(channels: 64, filterSize: 4, stride: 2, padding: .reflect)
    let y = try pool(x)                                     // inference: 8 x 64 x 28 x 28
    let (output, saved) = try pool.forwardTraining(x)       // keeps what backward needs
    let gradOutput = try DeviceTensor(HostTensor(shape: output.shape, repeating: 1), on: device)
    let gradients = try pool.backward(gradOutput, saved)    // gradients.input: 8 x 64 x 56 x 56
    print(try y.toHost().shape, try gradients.input.toHost().shape)
    // README.md: example end
    #expect(y.shape == [8, 64, 28, 28])
    #expect(gradients.input.shape == [8, 64, 56, 56])
    // A constant map stays constant through a normalised blur with reflect padding.
    #expect(try y.toHost().values.allSatisfy { $0 == 1 })
}
