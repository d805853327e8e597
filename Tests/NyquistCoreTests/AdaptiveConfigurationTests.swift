import NyquistCore
import Testing

@Suite("AdaptiveBlurPool configuration and parameters")
struct AdaptiveConfigurationTests {
    @Test func defaultsAndValidation() throws {
        let config = try AdaptiveBlurPool2DConfiguration(channels: 64)
        #expect(config.kernelSize == 3 && config.stride == 2 && config.groups == 8)
        #expect(config.padding == .reflect && config.softmax == .joint)
        #expect(config.predictorChannels == 72 && config.channelsPerGroup == 8)
        #expect(try AdaptiveBlurPool2DConfiguration(channels: 12).groups == 4)
        #expect(try AdaptiveBlurPool2DConfiguration(channels: 3).groups == 1)
        #expect(AdaptiveSoftmax(rawValue: "per-group") == .perGroup)
        expectError(.invalidConfiguration, "groups 3", "channels 8") {
            try AdaptiveBlurPool2DConfiguration(channels: 8, groups: 3)
        }
        expectError(.invalidConfiguration, "kernel size 4") { try AdaptiveBlurPool2DConfiguration(channels: 8, kernelSize: 4) }
        expectError(.invalidConfiguration, "stride") { try AdaptiveBlurPool2DConfiguration(channels: 8, stride: 0) }
        expectError(.invalidConfiguration, "groups") { try AdaptiveBlurPool2DConfiguration(channels: 8, groups: 0) }
        expectError(.invalidConfiguration, "channels") { try AdaptiveBlurPool2DConfiguration(channels: 0) }
    }

    @Test func outputShapes() throws {
        let config = try AdaptiveBlurPool2DConfiguration(channels: 4, kernelSize: 5, groups: 2)
        #expect(try config.outputShape(for: Shape4D(n: 2, c: 4, h: 7, w: 8)) == Shape4D(n: 2, c: 4, h: 4, w: 4))
        #expect(try config.filterShape(for: Shape4D(n: 2, c: 4, h: 7, w: 8)) == Shape4D(n: 2, c: 50, h: 4, w: 4))
        let unit = try AdaptiveBlurPool2DConfiguration(channels: 4, stride: 1, padding: .zero)
        #expect(try unit.outputShape(for: Shape4D(n: 1, c: 4, h: 1, w: 3)) == Shape4D(n: 1, c: 4, h: 1, w: 3))
        expectError(.invalidShape, "reflect", "H = 2") { try config.outputShape(for: Shape4D(n: 1, c: 4, h: 2, w: 8)) }
        expectError(.invalidShape, "5 channels") { try config.outputShape(for: Shape4D(n: 1, c: 5, h: 8, w: 8)) }
        // 16 x 50 x 2048 x 2048 predictor values: inference is fine, training refuses with a typed error.
        let large = try Shape4D(n: 16, c: 4, h: 2048, w: 2048)
        #expect(try config.outputShape(for: large) == Shape4D(n: 16, c: 4, h: 1024, w: 1024))
        expectError(.sizeLimit, "predictor map") { try config.checkTrainingMap(for: large) }
        try config.checkTrainingMap(for: Shape4D(n: 2, c: 4, h: 7, w: 8))
    }

    @Test func kaimingInitialisation() throws {
        let config = try AdaptiveBlurPool2DConfiguration(channels: 16, kernelSize: 3, groups: 8)
        let parameters = AdaptiveBlurPool2DParameters<Float>(configuration: config, seed: 7)
        #expect(parameters.convWeight.shape == [72, 16, 3, 3])
        let values = parameters.convWeight.values.map { Double($0) }
        let mean = values.reduce(0, +) / Double(values.count)
        let std = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)).squareRoot()
        let expected = (2.0 / (72.0 * 9.0)).squareRoot()  // fan_out = 72 * 3 * 3
        #expect(abs(std / expected - 1) < 0.03, "std \(std), expected \(expected)")
        #expect(abs(mean) < 0.05 * expected)
        #expect(parameters.bnWeight.values.allSatisfy { $0 == 1 } && parameters.bnBias.values.allSatisfy { $0 == 0 })
        #expect(parameters.runningMean.values.allSatisfy { $0 == 0 } && parameters.runningVar.values.allSatisfy { $0 == 1 })
        #expect(AdaptiveBlurPool2DParameters<Float>(configuration: config, seed: 7) == parameters)
        #expect(AdaptiveBlurPool2DParameters<Float>(configuration: config, seed: 8) != parameters)
    }

    @Test func stateDictRoundTripAndErrors() throws {
        let config = try AdaptiveBlurPool2DConfiguration(channels: 4, groups: 2)
        let parameters = AdaptiveBlurPool2DParameters<Float>(configuration: config, seed: 1)
        var file = try Safetensors.decode(Safetensors.encode(parameters.stateDict))
        file["bn.num_batches_tracked"] = try HostTensor(shape: [1], values: [3])
        #expect(try AdaptiveBlurPool2DParameters(stateDict: file, configuration: config) == parameters)

        var prefixed: [String: HostTensor] = ["other.weight": try HostTensor(shape: [1], values: [0])]
        for (name, tensor) in parameters.stateDict { prefixed["layer1.pasa." + name] = tensor }
        #expect(try AdaptiveBlurPool2DParameters(stateDict: prefixed, configuration: config, prefix: "layer1.pasa.") == parameters)

        var missing = file
        missing["bn.running_var"] = nil
        expectError(.invalidParameters, "bn.running_var", "missing") {
            try AdaptiveBlurPool2DParameters(stateDict: missing, configuration: config)
        }
        var misshapen = file
        misshapen["conv.weight"] = try HostTensor(shape: [18, 4, 3, 2], repeating: 0)
        expectError(.invalidParameters, "conv.weight", "[18, 4, 3, 3]") {
            try AdaptiveBlurPool2DParameters(stateDict: misshapen, configuration: config)
        }
        var unexpected = file
        unexpected["conv.bias"] = try HostTensor(shape: [18], repeating: 0)
        expectError(.invalidParameters, "conv.bias") {
            try AdaptiveBlurPool2DParameters(stateDict: unexpected, configuration: config)
        }
        var negative = file
        negative["bn.running_var"] = try HostTensor(shape: [18], repeating: -1)
        expectError(.invalidParameters, "bn.running_var") {
            try AdaptiveBlurPool2DParameters(stateDict: negative, configuration: config)
        }
        let other = try AdaptiveBlurPool2DConfiguration(channels: 4, groups: 4)
        expectError(.invalidParameters, "conv.weight") { try AdaptiveBlurPool2DParameters(stateDict: file, configuration: other) }
    }
}
