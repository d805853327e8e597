import Foundation
import Nyquist
import NyquistCore
import Testing
import _NyquistTestSupport

// The one `Layer` API every operator shares: the three calls, the names of the other results
// (`output.extras`, `output.scalars`), the gradients (`gradients.extras`, `gradients.parameters`),
// and the parameters' round trip through safetensors. The values themselves are compared with
// the reference by the parity suites; here a generic function drives each layer only through
// the protocol, so a layer whose conformance drifts from what the documentation promises fails.

/// What one layer's three calls must give, by name and shape.
struct LayerExpectations {
    /// Shape of `output.output` (inference and training).
    var output: [Int]
    /// `output.extras` after inference, by name with their shapes.
    var inferenceExtras: [String: [Int]] = [:]
    /// `output.extras` after training.
    var trainingExtras: [String: [Int]] = [:]
    /// The names in `output.scalars` after training (inference has none).
    var trainingScalars: Set<String> = []
    /// Shape of `gradients.input`.
    var gradientInput: [Int]
    /// `gradients.extras` by name with their shapes.
    var gradientExtras: [String: [Int]] = [:]
    /// The names of `layer.parameters`; `gradients.parameters` holds these minus `buffers`.
    var parameters: Set<String> = []
    /// Parameters that are buffers (BatchNorm's running statistics): no gradient.
    var buffers: Set<String> = []
}

/// The shapes of named tensors.
func shapes(_ tensors: [String: DeviceTensor]) -> [String: [Int]] {
    tensors.mapValues(\.shape)
}

/// Runs `layer(input)`, `layer.forwardTraining(input)` (or `train`) and `layer.backward` (from
/// the gradients `outputGradients` builds for the training output) through the `Layer` protocol
/// only, and checks shapes and names against `expected`. Returns the training output and the
/// gradients for further checks.
@discardableResult
func exerciseLayer<L: Layer>(
    _ layer: L, _ input: L.Input, _ label: String, expected: LayerExpectations,
    train: ((L.Input) throws -> (output: L.Output, saved: L.Saved))? = nil,
    outputGradients: (L.Output) throws -> L.OutputGradients
) throws -> (output: L.Output, gradients: L.Gradients) {
    #expect(Set(layer.parameters.keys) == expected.parameters, "\(label): parameters")

    let inference = try layer(input)
    #expect(inference.output.shape == expected.output, "\(label): inference output shape")
    #expect(shapes(inference.extras) == expected.inferenceExtras, "\(label): inference extras")
    let inferenceScalars = try inference.scalars
    #expect(inferenceScalars.isEmpty, "\(label): inference has no scalar results, got \(inferenceScalars)")

    let (output, saved) = try train?(input) ?? layer.forwardTraining(input)
    #expect(output.output.shape == expected.output, "\(label): training output shape")
    #expect(shapes(output.extras) == expected.trainingExtras, "\(label): training extras")
    let scalars = try output.scalars
    #expect(Set(scalars.keys) == expected.trainingScalars, "\(label): training scalars \(scalars)")
    #expect(scalars.values.allSatisfy { $0.isFinite }, "\(label): scalars \(scalars)")

    let gradients = try layer.backward(outputGradients(output), saved)
    #expect(gradients.input.shape == expected.gradientInput, "\(label): input gradient shape")
    #expect(shapes(gradients.extras) == expected.gradientExtras, "\(label): gradient extras")
    let trainable = expected.parameters.subtracting(expected.buffers)
    #expect(Set(gradients.parameters.keys) == trainable, "\(label): parameter gradients")
    for (name, gradient) in gradients.parameters {
        #expect(gradient.shape == layer.parameters[name]?.shape, "\(label): gradient of \(name) has the parameter's shape")
    }
    return (output, gradients)
}

/// A device tensor of ones shaped like `tensor`.
func ones(like tensor: DeviceTensor) throws -> DeviceTensor {
    try DeviceTensor(HostTensor(shape: tensor.shape, repeating: 1), on: tensor.device)
}

/// The host values of every tensor of an output (the main one under "output"), for bitwise
/// comparisons.
func hostValues(_ output: some LayerOutput) throws -> [String: [Float]] {
    var values = try output.extras.mapValues { try $0.toHost().values }
    values["output"] = try output.output.toHost().values
    return values
}

@Suite("Layer API")
struct LayerAPITests {
    @Test("BlurPool2D through the protocol: a tensor out, no extras, no parameters")
    func windowLayer() throws {
        let device = try TestDevice.get()
        let x = try DeviceTensor(randomTensor([2, 3, 9, 8], seed: 1), on: device)
        let pool = try BlurPool2D(channels: 3, filterSize: 3, stride: 2, padding: .reflect)
        try exerciseLayer(
            pool, x, "blur-pool", expected: LayerExpectations(output: [2, 3, 5, 4], gradientInput: [2, 3, 9, 8])
        ) { try ones(like: $0) }
        // A parameter-free layer saves an empty file and loads it.
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("layer-api-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try pool.saveParameters(safetensors: url)
        #expect(try Safetensors.read(contentsOf: url).isEmpty)
        try pool.load(safetensors: url)
    }

    @Test("APSPool2D through the protocol: indices in extras; a given index tensor comes back as the output's")
    func aps() throws {
        let device = try TestDevice.get()
        let x = try DeviceTensor(randomTensor([3, 4, 7, 10], seed: 2), on: device)
        let pool = try APSPool2D(channels: 4, filterSize: 3, norm: .l1)
        let extras = ["indices": [3]]
        let (output, _) = try exerciseLayer(
            pool, x, "aps-pool",
            expected: LayerExpectations(
                output: [3, 4, 4, 5], inferenceExtras: extras, trainingExtras: extras, gradientInput: [3, 4, 7, 10])
        ) { try ones(like: $0.output) }
        #expect(output.extras["indices"] === output.indices)
        let (given, saved) = try pool.forwardTraining(x, indices: output.indices)
        #expect(given.indices === output.indices && saved.indices === output.indices)
    }

    @Test("TIPSPool2D through the protocol: tau (and psi after training) in extras, fm (and undo with a shift) in scalars")
    func tips() throws {
        let device = try TestDevice.get()
        let x = try DeviceTensor(randomTensor([2, 3, 7, 10], seed: 3), on: device)
        let pool = try TIPSPool2D(channels: 3, kernelSize: 5, seed: 4, on: device)
        let parameters: Set = ["conv1.weight", "conv2.weight"]
        var expected = LayerExpectations(
            output: [2, 3, 4, 5], inferenceExtras: ["tau": [2, 3, 4]],
            trainingExtras: ["tau": [2, 3, 4], "psi": [2, 3, 8, 10]], trainingScalars: ["fm"],
            gradientInput: [2, 3, 7, 10], parameters: parameters)
        let (plain, _) = try exerciseLayer(pool, x, "tips-pool", expected: expected) {
            TIPSPool2DOutputGradients(output: try ones(like: $0.output), lossWeights: try TIPSLossWeights(fm: 0.5))
        }
        #expect(try plain.losses?.undo == nil)
        #expect(try plain.scalars["fm"] == plain.losses?.fm)
        // With a shift the training forward also gives L_undo, and backward can weigh it.
        expected.trainingScalars = ["fm", "undo"]
        let shift = MapShift(dy: 1, dx: -2, fill: .circular)
        let (shifted, _) = try exerciseLayer(
            pool, x, "tips-pool with an undo shift", expected: expected,
            train: { try pool.forwardTraining($0, undoShift: shift) }
        ) { TIPSPool2DOutputGradients(output: try ones(like: $0.output), lossWeights: try TIPSLossWeights(fm: 0.5, undo: 2)) }
        #expect(try shifted.scalars["undo"] == shifted.losses?.undo)
        #expect(shifted.extras["psi"] === shifted.psi && shifted.extras["tau"] === shifted.tau)
        // An L_undo weight without a saved target is refused.
        let (_, noTarget) = try pool.forwardTraining(x)
        let refused = #expect(throws: NyquistError.self) {
            try pool.backward(
                TIPSPool2DOutputGradients(output: try ones(like: plain.output), lossWeights: try TIPSLossWeights(undo: 1)),
                noTarget)
        }
        #expect(refused?.kind == .invalidConfiguration)
    }

    static let liftParameters: Set = [
        "predict.0.weight", "predict.0.bias", "predict.2.weight", "predict.2.bias", "update.0.weight", "update.0.bias",
        "update.2.weight", "update.2.bias",
    ]

    @Test("LiftDownPool2D through the protocol: the bands in extras, c_u, c_p and loss in scalars after training")
    func liftDown() throws {
        let device = try TestDevice.get()
        let x = try DeviceTensor(randomTensor([2, 3, 9, 6], seed: 5), on: device)
        let pool = try LiftDownPool2D(channels: 3, kernelSize: 3, lambdaU: 0.3, lambdaP: 0.7, seed: 6, on: device)
        let band = [2, 3, 5, 3]
        let bands = ["ll": band, "lh": band, "hl": band, "hh": band]
        let (output, _) = try exerciseLayer(
            pool, x, "lift-down-pool",
            expected: LayerExpectations(
                output: band, inferenceExtras: bands, trainingExtras: bands, trainingScalars: ["c_u", "c_p", "loss"],
                gradientInput: [2, 3, 9, 6], parameters: Self.liftParameters)
        ) { LiftDownPool2DOutputGradients(output: try ones(like: $0.output), hh: try ones(like: $0.hh)) }
        let regularisers = try #require(try output.regularisers)
        #expect(try output.scalars == ["c_u": regularisers.cu, "c_p": regularisers.cp, "loss": regularisers.loss])
        #expect(abs(regularisers.loss - (0.3 * regularisers.cu + 0.7 * regularisers.cp)) <= 1e-12 * max(regularisers.loss, 1))
        #expect(output.extras["ll"] === output.ll && output.extras["hh"] === output.hh)
        #expect(zip(output.bands, [output.ll, output.lh, output.hl, output.hh]).allSatisfy { $0 === $1 })
    }

    @Test("LiftUpPool2D through the protocol: bands in, their gradients out (lh, hl, hh in extras)")
    func liftUp() throws {
        let device = try TestDevice.get()
        let x = try DeviceTensor(randomTensor([2, 3, 9, 6], seed: 7), on: device)
        let pool = try LiftDownPool2D(channels: 3, kernelSize: 5, seed: 8, on: device)
        let unpool = LiftUpPool2D(inverting: pool)
        let band = [2, 3, 5, 3]
        let input = LiftUpPool2DInput(try pool(x), height: 9, width: 6)
        let (_, gradients) = try exerciseLayer(
            unpool, input, "lift-up-pool",
            expected: LayerExpectations(
                output: [2, 3, 9, 6], gradientInput: band, gradientExtras: ["lh": band, "hl": band, "hh": band],
                parameters: Self.liftParameters)
        ) { try ones(like: $0) }
        #expect(gradients.bands.count == 4 && gradients.input === gradients.bands[0])
        #expect(gradients.extras["lh"] === gradients.bands[1] && gradients.extras["hh"] === gradients.bands[3])
        // The default target size is twice the bands'.
        #expect(try unpool(LiftUpPool2DInput(ll: input.ll, lh: input.lh, hl: input.hl, hh: input.hh)).shape == [2, 3, 10, 6])
        // The inverse shares its parameters with the pool.
        #expect(Set(unpool.parameters.keys) == Set(pool.parameters.keys))
        for (name, tensor) in unpool.parameters { #expect(tensor === pool.parameters[name], "\(name)") }
    }

    @Test("AdaptiveBlurPool2D through the protocol: five PyTorch-named parameters, gradients of the three learnable ones")
    func adaptive() throws {
        let device = try TestDevice.get()
        let x = try DeviceTensor(randomTensor([2, 4, 9, 8], seed: 9), on: device)
        let pool = try AdaptiveBlurPool2D(channels: 4, kernelSize: 3, stride: 2, groups: 2, seed: 10, on: device)
        try exerciseLayer(
            pool, x, "adaptive-blur-pool",
            expected: LayerExpectations(
                output: [2, 4, 5, 4], gradientInput: [2, 4, 9, 8],
                parameters: ["conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
                buffers: ["bn.running_mean", "bn.running_var"])
        ) { try ones(like: $0) }
        #expect(pool.parameters["conv.weight"]?.shape == [18, 4, 3, 3])
        #expect(pool.parameters["bn.running_var"]?.shape == [18])
        // The device parameters hold the host copy's values (after the training forward's update).
        let values = try pool.parameterValues()
        #expect(try values == pool.hostParameters.stateDict)
    }

    // MARK: Parameters through safetensors

    /// Saves `source`'s parameters under `prefix`, loads them into `fresh` (built from another
    /// seed) and checks that `fresh` then gives `source`'s outputs bit for bit (and did not before).
    func roundTrip<L: Layer>(_ source: L, into fresh: L, _ input: L.Input, prefix: String, _ label: String) throws {
        let expected = try hostValues(source(input))
        #expect(try hostValues(fresh(input)) != expected, "\(label): the layers should differ before loading")
        #expect(try fresh.parameterValues() != source.parameterValues(), "\(label): seeds should differ")
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("layer-api-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try source.saveParameters(safetensors: url, prefix: prefix)
        let file = try Safetensors.read(contentsOf: url)
        #expect(Set(file.keys) == Set(source.parameters.keys.map { prefix + $0 }), "\(label): names in the file")
        try fresh.load(safetensors: url, prefix: prefix)
        #expect(try fresh.parameterValues() == source.parameterValues(), "\(label): loaded parameters")
        #expect(try hostValues(fresh(input)) == expected, "\(label): outputs after loading")
    }

    @Test("saveParameters then load(safetensors:) into a layer with another seed gives identical outputs", arguments: ["", "layer2.1.pool."])
    func saveAndLoad(prefix: String) throws {
        let device = try TestDevice.get()
        let x = try DeviceTensor(randomTensor([2, 4, 9, 10], seed: 11), on: device)
        try roundTrip(
            TIPSPool2D(channels: 4, kernelSize: 3, seed: 12, on: device),
            into: TIPSPool2D(channels: 4, kernelSize: 3, seed: 13, on: device), x, prefix: prefix, "tips-pool")
        try roundTrip(
            LiftDownPool2D(channels: 4, kernelSize: 5, seed: 14, on: device),
            into: LiftDownPool2D(channels: 4, kernelSize: 5, seed: 15, on: device), x, prefix: prefix, "lift-down-pool")
        // Running statistics other than the initial ones, so that the buffers matter too.
        let adaptive = try AdaptiveBlurPool2D(channels: 4, kernelSize: 5, groups: 2, seed: 16, on: device)
        _ = try adaptive.forwardTraining(x)
        try roundTrip(
            adaptive, into: AdaptiveBlurPool2D(channels: 4, kernelSize: 5, groups: 2, seed: 17, on: device), x, prefix: prefix,
            "adaptive-blur-pool")
    }

    /// `loadParameters` with `stateDict` must throw `.invalidParameters` and leave `layer`'s
    /// parameters as they were.
    func refusesLoad<L: Layer>(_ layer: L, _ stateDict: [String: HostTensor], _ label: String) throws {
        let before = try layer.parameterValues()
        let error = #expect(throws: NyquistError.self, "\(label)") { try layer.loadParameters(stateDict) }
        #expect(error?.kind == .invalidParameters, "\(label): \(String(describing: error))")
        #expect(try layer.parameterValues() == before, "\(label): the parameters must be left as they were")
    }

    @Test("a missing, misshapen or unexpected tensor is refused and leaves the parameters unchanged")
    func loadErrors() throws {
        let device = try TestDevice.get()
        let layers: [(String, any Layer, [String: HostTensor])] = [
            ("tips-pool", try TIPSPool2D(channels: 3, on: device), try TIPSPool2D(channels: 3, seed: 1, on: device).parameterValues()),
            (
                "lift-down-pool", try LiftDownPool2D(channels: 3, on: device),
                try LiftDownPool2D(channels: 3, seed: 1, on: device).parameterValues()
            ),
            (
                "adaptive-blur-pool", try AdaptiveBlurPool2D(channels: 4, groups: 2, on: device),
                try AdaptiveBlurPool2D(channels: 4, groups: 2, seed: 1, on: device).parameterValues()
            ),
        ]
        for (label, layer, good) in layers {
            let name = try #require(good.keys.sorted().first)
            var missing = good
            missing[name] = nil
            try refusesLoad(layer, missing, "\(label) without \(name)")
            var misshapen = good
            misshapen[name] = try HostTensor(shape: [1], values: [0])
            try refusesLoad(layer, misshapen, "\(label) with \(name) misshapen")
            var unexpected = good
            unexpected["other.weight"] = try HostTensor(shape: [1], values: [0])
            try refusesLoad(layer, unexpected, "\(label) with an unexpected tensor")
            // The good dictionary loads.
            try layer.loadParameters(good)
            #expect(try layer.parameterValues() == good, "\(label)")
        }
    }
}
