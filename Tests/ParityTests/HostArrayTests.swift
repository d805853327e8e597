import Nyquist
import NyquistCore
import Testing
import _NyquistTestSupport

/// Tensors over the caller's host arrays (the C API's and Python's host calls): read in place
/// where the device's memory is the host's, copied otherwise; results copied into an array.
@Suite("Host arrays")
struct HostArrayTests {
    @Test("a layer gives the same result on an array read in place, and writes results into arrays")
    func inPlaceAndCopiedInputsAgree() throws {
        let device = try TestDevice.get()
        let host = try randomTensor([2, 3, 9, 10], seed: 11)
        var values = host.values
        let layer = BlurPool2D(try BlurPool2DConfiguration(channels: 3, filterSize: 4))
        let expected = try layer(try DeviceTensor(host, on: device)).toHost()
        let fromCopy = try values.withUnsafeBufferPointer { pointer in
            try layer(try DeviceTensor(copying: try #require(pointer.baseAddress), shape: host.shape, on: device)).toHost()
        }
        #expect(fromCopy.values == expected.values)
        let inPlace = try values.withUnsafeMutableBufferPointer { pointer in
            try DeviceTensor.inPlace(try #require(pointer.baseAddress), shape: host.shape, on: device)
                .map { try layer($0).toHost() }
        }
        // PoCL's CPU device has host-unified memory; a GPU gives nil (the caller copies).
        if let inPlace { #expect(inPlace.values == expected.values) }
        var output = [Float](repeating: .nan, count: expected.count)
        let result = try layer(try DeviceTensor(host, on: device))
        try output.withUnsafeMutableBufferPointer { try result.copy(into: try #require($0.baseAddress)) }
        #expect(output == expected.values)
    }
}
