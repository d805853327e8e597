import NyquistCore
import Testing

@Suite("LiftPool configuration and parameters")
struct LiftPoolConfigurationTests {
    @Test func defaultsAndShapes() throws {
        let config = try LiftPoolConfiguration(channels: 3)
        #expect(config.kernelSize == 5 && config.lambdaU == 0.01 && config.lambdaP == 0.1)
        #expect(try config.outputShape(for: Shape4D(n: 2, c: 3, h: 7, w: 8)) == Shape4D(n: 2, c: 3, h: 4, w: 4))
        #expect(try config.outputShape(for: Shape4D(n: 1, c: 3, h: 1, w: 1)) == Shape4D(n: 1, c: 3, h: 1, w: 1))
        #expect(try config.outputShape1D(for: [2, 3, 9]) == [2, 3, 5])
        expectError(.invalidShape, "rank 3") { try config.outputShape1D(for: [2, 3, 9, 1]) }
        expectError(.invalidShape, "4 channels") { try config.outputShape(for: Shape4D(n: 1, c: 4, h: 2, w: 2)) }
        expectError(.invalidConfiguration, "kernel size 4") { try LiftPoolConfiguration(channels: 1, kernelSize: 4) }
        expectError(.invalidConfiguration, "channels") { try LiftPoolConfiguration(channels: 0) }
        expectError(.invalidConfiguration, "lambda") { try LiftPoolConfiguration(channels: 1, lambdaU: -1) }
        let bands = try Shape4D(n: 1, c: 3, h: 3, w: 4)
        #expect(try config.checkInverse(bandShape: bands, targetHeight: 5, targetWidth: 8) == Shape4D(n: 1, c: 3, h: 5, w: 8))
        expectError(.invalidShape, "target H = 4") { try config.checkInverse(bandShape: bands, targetHeight: 4, targetWidth: 8) }
        if let oversized {
            expectError(.sizeLimit) { try config.outputShape(for: Shape4D(n: oversized.n, c: 3, h: oversized.h, w: oversized.w)) }
        }
    }

    @Test func parametersRoundTripAndValidate() throws {
        let config = try LiftPoolConfiguration(channels: 3, kernelSize: 3)
        let params = LiftPoolParameters<Float>(config, seed: 7)
        #expect(params == LiftPoolParameters<Float>(config, seed: 7))
        #expect(params != LiftPoolParameters<Float>(config, seed: 8))
        #expect(params.predict.convWeight.allSatisfy { abs($0) <= 1 / Float(3).squareRoot() })
        let dict = try params.stateDict()
        #expect(dict.count == 8)
        #expect(dict["predict.0.weight"]?.shape == [3, 1, 3])
        #expect(dict["update.2.weight"]?.shape == [3, 1, 1])
        #expect(dict["update.2.bias"]?.shape == [3])
        #expect(try LiftPoolParameters<Float>(config, stateDict: dict) == params)
        let bytes = try Safetensors.encode(dict)
        #expect(try LiftPoolParameters<Float>(config, stateDict: Safetensors.decode(bytes)) == params)
        var missing = dict
        missing["update.0.bias"] = nil
        expectError(.invalidParameters, "update.0.bias", "missing") { try LiftPoolParameters<Float>(config, stateDict: missing) }
        var misshapen = dict
        misshapen["predict.0.weight"] = try HostTensor(shape: [3, 1, 5], repeating: 0)
        expectError(.invalidParameters, "predict.0.weight", "[3, 1, 5]") {
            try LiftPoolParameters<Float>(config, stateDict: misshapen)
        }
        var flat = params.predict
        flat.scale = [1]
        expectError(.invalidParameters, "predict.2.weight") { try LiftPoolParameters<Float>(config, predict: flat, update: params.update) }
        #expect(params.converted(to: Double.self).converted(to: Float.self) == params)
    }
}
