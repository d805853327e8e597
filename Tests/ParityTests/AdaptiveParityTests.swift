import Foundation
import Nyquist
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

/// One AdaptiveBlurPool parity case: a configuration and an input shape.
struct AdaptiveParityCase: CustomStringConvertible, Sendable {
    let config: AdaptiveBlurPool2DConfiguration
    let shape: [Int]
    var description: String { "\(config) on \(shape)" }

    /// k 3/5/7 x stride 1/2 x both softmax modes, with the padding mode, the group count
    /// (1, 2, 4, 8, C) and the shape (odd, even, non-square, C = 5 not a multiple of anything)
    /// taken in turn so that every value of each option appears.
    static func grid() throws -> [AdaptiveParityCase] {
        let shapes: [[Int]] = [[3, 5, 7, 9], [1, 8, 8, 8], [2, 8, 9, 6], [1, 1, 5, 5], [2, 4, 10, 7]]
        var cases: [AdaptiveParityCase] = []
        var turn = 0
        for k in [3, 5, 7] {
            for stride in [1, 2] {
                for softmax in AdaptiveSoftmax.allCases {
                    for _ in 0..<2 {
                        let shape = shapes[turn % shapes.count]
                        let c = shape[1]
                        let choices = [1, 2, 4, 8, c].filter { c % $0 == 0 }
                        let groups = choices[(turn / 5 + turn) % choices.count]
                        let mode = PaddingMode.allCases[(turn + turn / 8) % PaddingMode.allCases.count]
                        turn += 1
                        let config = try AdaptiveBlurPool2DConfiguration(
                            channels: c, kernelSize: k, stride: stride, groups: groups, padding: mode, softmax: softmax)
                        // Reflect needs every side > k/2: skip what the shape-error tests cover.
                        guard (try? config.outputShape(for: Shape4D(shape))) != nil else { continue }
                        cases.append(AdaptiveParityCase(config: config, shape: shape))
                    }
                }
            }
        }
        return cases
    }
}

/// Random parameters with a non-trivial BatchNorm, in Float.
func adaptiveTestParameters(_ config: AdaptiveBlurPool2DConfiguration, seed: UInt64) throws
    -> AdaptiveBlurPool2DParameters<Float>
{
    var parameters = AdaptiveBlurPool2DParameters<Float>(configuration: config, seed: seed)
    let p = config.predictorChannels
    parameters.convWeight.values = parameters.convWeight.values.map { $0 * 3 }
    parameters.bnWeight = try randomTensor([p], seed: seed + 1, range: 0.5...1.5)
    parameters.bnBias = try randomTensor([p], seed: seed + 2, range: -0.5...0.5)
    parameters.runningMean = try randomTensor([p], seed: seed + 3, range: -0.2...0.2)
    parameters.runningVar = try randomTensor([p], seed: seed + 4, range: 0.5...2)
    return parameters
}

/// The parity report's pass name for one compared quantity of a training or frozen case.
func adaptiveReportPass(_ name: String, frozen: Bool) -> String {
    let mode = frozen ? "frozen BatchNorm" : "training"
    switch name {
    case "output": return frozen ? "frozen BatchNorm forward" : "training forward"
    case "grad input": return frozen ? "frozen BatchNorm backward" : "backward"
    default:
        if name.hasPrefix("grad ") { return "\(frozen ? "frozen BatchNorm " : "")backward: \(name.dropFirst(5))" }
        return "\(mode) forward: \(name)"
    }
}

@Suite("AdaptiveBlurPool parity", .parityReport)
struct AdaptiveParityTests {
    /// Relative to max|y_ref|. The logits are sums of C*k*k products in Float (at most 8*49 here),
    /// the softmax amplifies their error by at most the logit spread, and the filtering adds k*k
    /// products: 1e-4 bounds this with a wide margin; the measured errors are printed.
    static let tolerance = 1e-4

    @Test("Inference forward and filters match the reference", arguments: try AdaptiveParityCase.grid())
    func inference(_ testCase: AdaptiveParityCase) throws {
        let device = try TestDevice.get()
        let config = testCase.config
        let parameters = try adaptiveTestParameters(config, seed: UInt64(testCase.shape.reduce(0, +) * 31 + config.groups))
        let x = try randomTensor(testCase.shape, seed: UInt64(config.kernelSize * 7 + config.stride))
        let expected = try Reference.adaptiveBlurPool2D(x, parameters: parameters, config)
        let layer = try AdaptiveBlurPool2D(config, parameters: parameters, on: device)
        let input = try DeviceTensor(x, on: device)
        let output = try GuardedTensor(shape: expected.output.shape, on: device)
        let filters = try GuardedTensor(shape: expected.filters.shape, on: device)
        try layer.forward(input, into: output.tensor, filters: filters.tensor)
        let outputError = Discrepancy(actual: try output.tensor.toHost().values, expected: expected.output.values)
        let filterError = Discrepancy(actual: try filters.tensor.toHost().values, expected: expected.filters.values)
        #expect(outputError.within(Self.tolerance), "\(testCase) output: \(outputError)")
        #expect(filterError.within(Self.tolerance), "\(testCase) filters: \(filterError)")
        ParityReport.record(
            .adaptive, "AdaptiveBlurPool2D", "forward", tolerance: Self.tolerance, outputError, shape: testCase.shape,
            label: "\(testCase)")
        ParityReport.record(
            .adaptive, "AdaptiveBlurPool2D", "forward: filters", tolerance: Self.tolerance, filterError, shape: testCase.shape,
            label: "\(testCase)")
        #expect(try output.damagedGuards().isEmpty, "\(testCase): output written out of bounds")
        #expect(try filters.damagedGuards().isEmpty, "\(testCase): filters written out of bounds")
        // Without the filters the output is the same (the other program variant).
        let plain = try layer(input).toHost()
        #expect(plain.values == (try output.tensor.toHost().values), "\(testCase): filter-writing variant differs")
        print("adaptive parity \(testCase): output relative \(outputError.relativeError), filters \(filterError.relativeError)")
    }

    @Test("Inference allocates only its output: no k*k x input unfold, no full-resolution predictor map")
    func allocatesOnlyOutput() throws {
        // A context of its own: other tests run in parallel on the shared one.
        let device = try TestDevice.fresh()
        let layer = try AdaptiveBlurPool2D(channels: 16, kernelSize: 5, groups: 8, on: device)
        let x = try DeviceTensor(randomTensor([2, 16, 32, 32], seed: 4), on: device)
        _ = try layer(x)  // builds the program and the constant padding tables
        let before = device.context.statistics
        let tensorsBefore = device.memoryStatistics.requests
        let y = try layer(x)
        let after = device.context.statistics
        #expect(y.shape == [2, 16, 16, 16])
        #expect(device.memoryStatistics.requests - tensorsBefore == 1, "only the output may be allocated")
        #expect(after.launches - before.launches == 1, "one fused kernel")
        #expect(after.builds == before.builds, "the second call must not rebuild")
        let output = try GuardedTensor(shape: y.shape, on: device)
        let guardedBefore = device.memoryStatistics.requests
        try layer.forward(x, into: output.tensor)
        #expect(device.memoryStatistics.requests == guardedBefore, "forward(into:) allocates nothing")
        // With the filters: exactly the output and the filters.
        let withFiltersBefore = device.memoryStatistics.requests
        let (_, filters) = try layer.forwardWithFilters(x)
        #expect(device.memoryStatistics.requests - withFiltersBefore == 2)
        #expect(filters.shape == [2, 200, 16, 16])
    }

    @Test("Per-group filters preserve a constant input on the device")
    func constantPreserved() throws {
        let device = try TestDevice.get()
        let layer = try AdaptiveBlurPool2D(channels: 6, kernelSize: 3, groups: 3, softmax: .perGroup, seed: 5, on: device)
        let x = try DeviceTensor(HostTensor(shape: [2, 6, 9, 10], repeating: 0.5), on: device)
        let y = try layer(x).toHost()
        #expect(y.values.allSatisfy { abs($0 - 0.5) < 1e-6 })
    }

    @Test("Typed errors: G not dividing C, wrong channels, misshapen parameters, too small for reflect")
    func errors() throws {
        let device = try TestDevice.get()
        #expect(throws: NyquistError.self) { try AdaptiveBlurPool2D(channels: 6, groups: 4, on: device) }
        let layer = try AdaptiveBlurPool2D(channels: 4, kernelSize: 5, groups: 2, on: device)
        #expect(throws: NyquistError.self) { try layer(DeviceTensor(randomTensor([1, 3, 8, 8], seed: 1), on: device)) }
        #expect(throws: NyquistError.self) { try layer(DeviceTensor(randomTensor([1, 4, 2, 8], seed: 1), on: device)) }
        var bad = try layer.hostParameters
        bad.bnWeight = try HostTensor(shape: [49], repeating: 1)
        #expect(throws: NyquistError.self) { try layer.setParameters(bad) }
        let x = try DeviceTensor(randomTensor([1, 4, 8, 8], seed: 1), on: device)
        #expect(throws: NyquistError.self) { try layer.forward(x, into: DeviceTensor(shape: [1, 4, 8, 8], on: device)) }
    }

    /// Gradients go through BatchNorm's batch statistics (sums over all positions that cancel to
    /// a small result), so they are compared against max|reference| with a looser bound.
    static let gradientTolerance = 1e-3

    static let trainingCases: [(shape: [Int], k: Int, stride: Int, groups: Int, mode: PaddingMode, softmax: AdaptiveSoftmax)] = [
        ([2, 5, 7, 9], 3, 2, 5, .reflect, .joint),
        ([1, 8, 8, 8], 5, 1, 8, .circular, .perGroup),
        ([3, 4, 6, 5], 3, 2, 2, .zero, .perGroup),
        ([2, 8, 9, 6], 7, 2, 4, .replicate, .joint),
        ([2, 1, 5, 5], 3, 1, 1, .reflect, .perGroup),
        ([1, 8, 10, 7], 5, 2, 1, .zero, .joint),
        ([1, 70, 5, 4], 3, 2, 2, .reflect, .joint),
        // Rows wide enough for the weight gradient's 8-column chunks (the last one overlapping).
        ([2, 3, 5, 23], 3, 2, 3, .reflect, .joint),
        ([1, 2, 4, 30], 5, 1, 2, .circular, .perGroup),
    ]

    @Test("Training forward, running statistics and backward match the reference", arguments: 0..<9)
    func training(_ index: Int) throws {
        let spec = Self.trainingCases[index]
        let device = try TestDevice.get()
        let config = try AdaptiveBlurPool2DConfiguration(
            channels: spec.shape[1], kernelSize: spec.k, stride: spec.stride, groups: spec.groups, padding: spec.mode,
            softmax: spec.softmax)
        let label = "\(config) on \(spec.shape)"
        let parameters = try adaptiveTestParameters(config, seed: UInt64(100 + index))
        let x = try randomTensor(spec.shape, seed: UInt64(200 + index))
        let expected = try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, config)
        let layer = try AdaptiveBlurPool2D(config, parameters: parameters, on: device)
        let input = try DeviceTensor(x, on: device)
        let (output, filters, saved) = try layer.forwardTraining(input, withFilters: true, frozenStatistics: false)
        var worst: [String: Double] = [:]
        func compare(_ name: String, _ actual: HostTensor, _ reference: HostTensor, _ tolerance: Double) {
            #expect(actual.shape == reference.shape, "\(label) \(name) shape")
            let error = Discrepancy(actual: actual.values, expected: reference.values)
            #expect(error.within(tolerance), "\(label) \(name): \(error)")
            ParityReport.record(
                .adaptive, "AdaptiveBlurPool2D", adaptiveReportPass(name, frozen: false), tolerance: tolerance, error,
                shape: spec.shape, label: label)
            worst[name] = error.relativeError
        }
        compare("output", try output.toHost(), expected.output, Self.tolerance)
        if let filters { compare("filters", try filters.toHost(), expected.filters, Self.tolerance) }
        compare("batch mean", try saved.batchMean.toHost(), expected.batchMean, Self.tolerance)
        compare("batch variance", try saved.batchVariance.toHost(), expected.batchVariance, Self.tolerance)
        compare("running_mean", try layer.hostParameters.runningMean, expected.updatedParameters.runningMean, Self.tolerance)
        compare("running_var", try layer.hostParameters.runningVar, expected.updatedParameters.runningVar, Self.tolerance)
        // The device tensors of `parameters` hold the same running statistics as the host copy.
        let deviceParameters = try layer.parameterValues()
        #expect(try deviceParameters["bn.running_mean"] == layer.hostParameters.runningMean, "\(label) device running_mean")
        #expect(try deviceParameters["bn.running_var"] == layer.hostParameters.runningVar, "\(label) device running_var")

        let g = try randomTensor(expected.output.shape, seed: UInt64(300 + index))
        let expectedGradients = try Reference.adaptiveBlurPool2DBackward(gradOutput: g, saved: expected.saved, config)
        let gradOutput = try DeviceTensor(g, on: device)
        let gradients = try layer.backward(gradOutput, saved)
        compare("grad input", try gradients.input.toHost(), expectedGradients.input, Self.gradientTolerance)
        for (name, reference) in expectedGradients.parameters {
            guard let actual = gradients.parameters[name] else {
                Issue.record("\(label): no gradient for \(name)")
                continue
            }
            compare("grad \(name)", try actual.toHost(), reference, Self.gradientTolerance)
        }
        // Deterministic: a second backward is bitwise identical.
        let again = try layer.backward(gradOutput, saved)
        #expect(try again.input.toHost() == gradients.input.toHost(), "\(label): backward is not deterministic")
        for name in ["conv.weight", "bn.weight", "bn.bias"] {
            #expect(try again.parameters[name]?.toHost() == gradients.parameters[name]?.toHost(), "\(label) \(name)")
        }
        print("adaptive training parity \(label): " + worst.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
    }

    @Test("Frozen BatchNorm (eval mode with gradients) matches the reference", arguments: [0, 1, 3, 6])
    func frozen(_ index: Int) throws {
        let spec = Self.trainingCases[index]
        let device = try TestDevice.get()
        let config = try AdaptiveBlurPool2DConfiguration(
            channels: spec.shape[1], kernelSize: spec.k, stride: spec.stride, groups: spec.groups, padding: spec.mode,
            softmax: spec.softmax)
        let label = "\(config) on \(spec.shape) frozen"
        let parameters = try adaptiveTestParameters(config, seed: UInt64(400 + index))
        let x = try randomTensor(spec.shape, seed: UInt64(500 + index))
        let expected = try Reference.adaptiveBlurPool2D(x, parameters: parameters, config)
        let layer = try AdaptiveBlurPool2D(config, parameters: parameters, on: device)
        let (output, filters, saved) = try layer.forwardTraining(
            DeviceTensor(x, on: device), withFilters: true, frozenStatistics: true)
        #expect(try layer.hostParameters == parameters, "\(label): frozen statistics must not be updated")
        var worst: [String: Double] = [:]
        func compare(_ name: String, _ actual: HostTensor, _ reference: HostTensor, _ tolerance: Double) {
            let error = Discrepancy(actual: actual.values, expected: reference.values)
            #expect(actual.shape == reference.shape && error.within(tolerance), "\(label) \(name): \(error)")
            ParityReport.record(
                .adaptive, "AdaptiveBlurPool2D", adaptiveReportPass(name, frozen: true), tolerance: tolerance, error,
                shape: spec.shape, label: label)
            worst[name] = error.relativeError
        }
        compare("output", try output.toHost(), expected.output, Self.tolerance)
        if let filters { compare("filters", try filters.toHost(), expected.filters, Self.tolerance) }
        let g = try randomTensor(expected.output.shape, seed: UInt64(600 + index))
        let expectedGradients = try Reference.adaptiveBlurPool2DBackward(
            gradOutput: g, saved: .init(input: x, parameters: parameters, batchStatistics: false), config)
        let gradients = try layer.backward(DeviceTensor(g, on: device), saved)
        compare("grad input", try gradients.input.toHost(), expectedGradients.input, Self.gradientTolerance)
        for (name, reference) in expectedGradients.parameters {
            if let actual = gradients.parameters[name] {
                compare("grad \(name)", try actual.toHost(), reference, Self.gradientTolerance)
            } else {
                Issue.record("\(label): no gradient for \(name)")
            }
        }
        print("adaptive frozen parity \(label): " + worst.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
    }

    @Test("Training needs more than one position per channel; backward checks the gradient shape")
    func trainingErrors() throws {
        let device = try TestDevice.get()
        let layer = try AdaptiveBlurPool2D(channels: 2, kernelSize: 3, stride: 1, groups: 2, padding: .zero, on: device)
        #expect(throws: NyquistError.self) {
            try layer.forwardTraining(DeviceTensor(HostTensor(shape: [1, 2, 1, 1], repeating: 1), on: device))
        }
        let (_, saved) = try layer.forwardTraining(DeviceTensor(randomTensor([1, 2, 4, 4], seed: 2), on: device))
        #expect(throws: NyquistError.self) {
            try layer.backward(DeviceTensor(shape: [1, 2, 2, 2], on: device), saved)
        }
        // Saved state of a layer with other groups: refused, not read out of bounds.
        let other = try AdaptiveBlurPool2D(channels: 2, kernelSize: 3, stride: 1, groups: 1, padding: .zero, on: device)
        #expect(throws: NyquistError.self) {
            try other.backward(DeviceTensor(shape: [1, 2, 4, 4], on: device), saved)
        }
    }

    @Test("Training allocates the predictor map, four G*k*k vectors and the output; running stats update in place")
    func trainingAllocations() throws {
        let device = try TestDevice.fresh()
        let layer = try AdaptiveBlurPool2D(channels: 8, kernelSize: 5, groups: 2, on: device)
        let x = try DeviceTensor(randomTensor([2, 8, 12, 12], seed: 9), on: device)
        _ = try layer.forwardTraining(x)  // builds the programs and the padding tables
        let before = device.memoryStatistics.requests
        let (_, filters, saved) = try layer.forwardTraining(x, withFilters: false, frozenStatistics: false)
        #expect(filters == nil)
        #expect(device.memoryStatistics.requests - before == 6, "map, mean, var, scale, shift, output")
        #expect(saved.predictor.shape == [2, 50, 12, 12])
        // Inference after training uses the updated running statistics.
        let expected = try Reference.adaptiveBlurPool2D(try x.toHost(), parameters: layer.hostParameters, layer.configuration)
        let error = Discrepancy(actual: try layer(x).toHost().values, expected: expected.output.values)
        #expect(error.within(Self.tolerance), "\(error)")
    }

    @Test("load(safetensors:prefix:) reads a PyTorch-named state_dict")
    func loadSafetensors() throws {
        let device = try TestDevice.get()
        let config = try AdaptiveBlurPool2DConfiguration(channels: 4, kernelSize: 3, groups: 2)
        let parameters = try adaptiveTestParameters(config, seed: 77)
        var file: [String: HostTensor] = ["fc.weight": try HostTensor(shape: [2], repeating: 0)]
        for (name, tensor) in parameters.stateDict { file["layer1.pasa." + name] = tensor }
        file["layer1.pasa.bn.num_batches_tracked"] = try HostTensor(shape: [1], values: [5])
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("adaptive-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try Safetensors.write(file, to: url)
        let layer = try AdaptiveBlurPool2D(config, parameters: AdaptiveBlurPool2DParameters(configuration: config), on: device)
        try layer.load(safetensors: url, prefix: "layer1.pasa.")
        #expect(try layer.hostParameters == parameters)
        #expect(try layer.parameterValues() == parameters.stateDict)
        #expect(throws: NyquistError.self) { try layer.load(safetensors: url) }  // unprefixed: unexpected keys
    }
}
