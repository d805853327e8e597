import Nyquist
import NyquistCore
import NyquistOperators
import Testing
import _NyquistTestSupport

/// Every operator of the registry, built by name with the same options and parameters on the
/// device and in the CPU reference, agrees in forward, training forward and backward: the
/// registry wires each name to the matching layer, reference, results and gradient names.
///
/// The tolerances are each family's parity tolerances (see the family's parity tests and
/// docs/parity.md for why each holds).
@Suite("Registry parity")
struct RegistryParityTests {
    /// Forward and backward tolerances, relative to max |reference| (window operators: to
    /// max(|reference|, |input|), as in their own parity tests).
    static func tolerances(_ name: String) -> (forward: Double, backward: Double, windowFloor: Bool) {
        switch name {
        case "tips-pool": (PolyphaseTolerance.tipsForward, PolyphaseTolerance.tipsBackward, false)
        case "lift-down-pool", "lift-up-pool": (LiftPoolParityTests.tolerance, LiftPoolParityTests.backwardTolerance, false)
        case "adaptive-blur-pool": (AdaptiveParityTests.tolerance, AdaptiveParityTests.gradientTolerance, false)
        default: (Tolerance.window, Tolerance.window, true)
        }
    }

    /// The named inputs of `descriptor` for a main input of `shape`, random from `seed`.
    static func inputs(_ descriptor: OperatorDescriptor, shape: [Int], seed: UInt64) throws -> [String: HostTensor] {
        var inputs = ["input": try randomTensor(shape, seed: seed)]
        for (offset, name) in descriptor.extraInputs(shape.count).enumerated() where name != "indices" {
            inputs[name] = try randomTensor(shape, seed: seed + UInt64(offset) + 1)
        }
        return inputs
    }

    static let cases: [(name: String, shape: [Int], options: [String: String])] =
        OperatorRegistry.all.map { ($0.name, [2, 3, 7, 9], [:]) } + [
            ("lift-down-pool", [2, 3, 9], [:]),
            ("lift-up-pool", [2, 3, 4, 5], ["height": "7", "width": "9"]),
            ("lift-up-pool", [2, 3, 5], ["width": "9"]),
            ("tips-pool", [2, 3, 7, 9], ["lambda-fm": "0.5", "lambda-undo": "0.25", "seed": "3"]),
            ("max-pool", [2, 3, 7, 9], ["kernel": "3", "stride": "2", "pad": "1"]),
            ("adaptive-blur-pool", [2, 4, 7, 9], ["filters": "true", "groups": "2", "softmax": "per-group"]),
            ("adaptive-blur-pool", [2, 4, 7, 9], ["filters": "true", "statistics": "running"]),
        ]

    @Test("device layer and reference agree", arguments: cases.indices)
    func agree(_ index: Int) throws {
        let (name, shape, values) = Self.cases[index]
        let device = try TestDevice.get()
        let descriptor = try OperatorRegistry.named(name)
        let options = OperatorOptions(values)
        let parameters = try descriptor.parameters(options, inputShape: shape)
        let layer = try descriptor.makeLayer(options, inputShape: shape, parameters: parameters, on: device)
        let reference = try descriptor.makeReference(options, inputShape: shape, parameters: parameters)
        let hostInputs = try Self.inputs(descriptor, shape: shape, seed: UInt64(index) + 11)
        let deviceInputs = try hostInputs.mapValues { try DeviceTensor($0, on: device) }
        let (forwardTolerance, backwardTolerance, windowFloor) = Self.tolerances(name)
        let label = "\(name) \(shape) \(values)"
        let inputMagnitude = Double(hostInputs["input"]?.values.map { abs($0) }.max() ?? 0)

        func compare(_ what: String, _ actual: DeviceTensor, _ expected: HostTensor, _ tolerance: Double, floor: Double) throws {
            let host = try actual.toHost()
            #expect(host.shape == expected.shape, "\(label) \(what): shape \(host.shape), expected \(expected.shape)")
            guard host.shape == expected.shape else { return }
            let discrepancy = Discrepancy(actual: host.values, expected: expected.values, magnitudeFloor: windowFloor ? floor : 0)
            #expect(discrepancy.within(tolerance), "\(label) \(what): \(discrepancy)")
        }

        // Inference forward.
        let deviceForward = try layer(deviceInputs)
        let hostForward = try reference(hostInputs)
        let inferenceNames = try descriptor.resultNames(options, inputShape: shape, training: false)
        #expect(
            Set(["output"] + deviceForward.extras.keys) == Set(inferenceNames)
                && Set(["output"] + hostForward.extras.keys) == Set(inferenceNames),
            "\(label): inference results \(deviceForward.extras.keys.sorted()), reference \(hostForward.extras.keys.sorted()), named \(inferenceNames)")
        try compare("forward", deviceForward.output, hostForward.output, forwardTolerance, floor: inputMagnitude)
        // Training forward: every extra and scalar the reference names, the same on the device.
        let (deviceTraining, saved) = try layer.forwardTraining(deviceInputs)
        let (hostTraining, hostSaved) = try reference.forwardTraining(hostInputs)
        try compare("training output", deviceTraining.output, hostTraining.output, forwardTolerance, floor: inputMagnitude)
        let trainingNames = try descriptor.resultNames(options, inputShape: shape, training: true)
        #expect(
            Set(deviceTraining.extras.keys) == Set(hostTraining.extras.keys)
                && Set(["output"] + hostTraining.extras.keys) == Set(trainingNames)
                && Set(hostTraining.extras.keys).isSubset(of: descriptor.extraOutputs(shape.count)),
            "\(label): extras \(deviceTraining.extras.keys.sorted()) vs reference \(hostTraining.extras.keys.sorted())")
        #expect(
            deviceTraining.output.shape == (try descriptor.outputShape(options, inputShape: shape)), "\(label): output shape")
        let resultShapes = try descriptor.resultShapes(options, inputShape: shape)
        for (extra, tensor) in deviceTraining.extras {
            #expect(tensor.shape == resultShapes[extra], "\(label): \(extra) has shape \(tensor.shape), resultShapes says \(resultShapes[extra] ?? [])")
        }
        for (extra, expected) in hostTraining.extras {
            guard let actual = deviceTraining.extras[extra] else { continue }
            try compare("training \(extra)", actual, expected, forwardTolerance, floor: inputMagnitude)
        }
        let deviceScalars = try deviceTraining.scalars
        let hostScalars = try hostTraining.scalars
        #expect(
            Set(deviceScalars.keys) == Set(hostScalars.keys),
            "\(label): scalars \(deviceScalars.keys.sorted()) vs reference \(hostScalars.keys.sorted())")
        for (scalar, expected) in hostScalars {
            let actual = deviceScalars[scalar] ?? .nan
            #expect(abs(actual - expected) <= forwardTolerance * max(abs(expected), 1e-3), "\(label) \(scalar): \(actual) vs \(expected)")
        }
        // Backward from one random output gradient.
        let gradOutput = try randomTensor(hostTraining.output.shape, seed: UInt64(index) + 101)
        let gradients = try layer.backward(try DeviceTensor(gradOutput, on: device), saved)
        let expected = try reference.backward(gradOutput, hostSaved)
        let gradMagnitude = Double(gradOutput.values.map { abs($0) }.max() ?? 0)
        try compare("gradient of the input", gradients.input, expected.input, backwardTolerance, floor: gradMagnitude)
        #expect(Set(gradients.extras.keys) == Set(expected.extras.keys), "\(label): input gradients by name")
        for (extra, value) in expected.extras {
            guard let actual = gradients.extras[extra] else { continue }
            try compare("gradient of \(extra)", actual, value, backwardTolerance, floor: gradMagnitude)
        }
        #expect(Set(gradients.parameters.keys) == Set(expected.parameters.keys), "\(label): parameter gradients by name")
        #expect(
            Set(["input"] + gradients.extras.keys + gradients.parameters.keys)
                == Set(try descriptor.gradientNames(inputShape: shape)),
            "\(label): gradient names")
        #expect(Set(try layer.parameters().keys) == Set(descriptor.parameterNames), "\(label): parameters by name")
        for (parameter, value) in expected.parameters {
            guard let actual = gradients.parameters[parameter] else { continue }
            try compare("gradient of \(parameter)", actual, value, backwardTolerance, floor: gradMagnitude)
        }
        // Backward from gradients of every result that takes one, and of the scalar results.
        let differentiable = descriptor.differentiableOutputs(shape.count)
        guard !differentiable.isEmpty || !descriptor.scalarGradientNames.isEmpty else { return }
        var hostGradients = OperatorOutputGradients(output: gradOutput)
        var deviceGradients = OperatorOutputGradients(output: try DeviceTensor(gradOutput, on: device))
        for (offset, extra) in differentiable.enumerated() {
            let shape = try #require(resultShapes[extra], "\(label): no shape for \(extra)")
            let value = try randomTensor(shape, seed: UInt64(index) + 201 + UInt64(offset))
            hostGradients.extras[extra] = value
            deviceGradients.extras[extra] = try DeviceTensor(value, on: device)
        }
        for (offset, scalar) in descriptor.scalarGradientNames.enumerated() {
            hostGradients.scalars[scalar] = 0.3 + 0.2 * Double(offset)
            deviceGradients.scalars[scalar] = 0.3 + 0.2 * Double(offset)
        }
        let allGradients = try layer.backward(deviceGradients, saved)
        let allExpected = try reference.backward(hostGradients, hostSaved)
        try compare("gradient of the input from every result", allGradients.input, allExpected.input, backwardTolerance, floor: gradMagnitude)
        for (parameter, value) in allExpected.parameters {
            let actual = try #require(allGradients.parameters[parameter], "\(label): no gradient of \(parameter)")
            try compare("gradient of \(parameter) from every result", actual, value, backwardTolerance, floor: gradMagnitude)
        }
    }

    @Test("gradients of results backward does not take are refused, naming those it takes")
    func refusedResultGradients() throws {
        let device = try TestDevice.get()
        let shape = [1, 2, 6, 6]
        let x = try randomTensor(shape, seed: 1)
        let aps = try OperatorRegistry.named("aps-pool").makeLayer(OperatorOptions([:]), inputShape: shape, on: device)
        let (values, saved) = try aps.forwardTraining(try DeviceTensor(x, on: device))
        let indices = try #require(values.extras["indices"])
        do {
            _ = try aps.backward(OperatorOutputGradients(output: values.output, extras: ["indices": indices]), saved)
            Issue.record("aps-pool took a gradient of its indices")
        } catch let error as NyquistError {
            #expect(error.message.contains("indices") && error.message.contains("output"), "\(error.message)")
        }
        let lift = try OperatorRegistry.named("lift-down-pool").makeLayer(OperatorOptions([:]), inputShape: shape, on: device)
        let (bands, liftSaved) = try lift.forwardTraining(try DeviceTensor(x, on: device))
        #expect(throws: NyquistError.self) {
            try lift.backward(OperatorOutputGradients(output: bands.output, scalars: ["c_u": 1]), liftSaved)
        }
        #expect(throws: NyquistError.self) {
            try lift.backward(OperatorOutputGradients(output: bands.output, scalars: ["loss": .nan]), liftSaved)
        }
    }

    @Test("new parameters loaded into a device layer give the reference's results with those parameters")
    func loadedParameters() throws {
        let device = try TestDevice.get()
        for name in ["lift-down-pool", "tips-pool", "adaptive-blur-pool"] {
            let descriptor = try OperatorRegistry.named(name)
            let shape = [2, 4, 6, 7]
            let x = try randomTensor(shape, seed: 5)
            let layer = try descriptor.makeLayer(OperatorOptions(["seed": "1"]), inputShape: shape, on: device)
            let replaced = try descriptor.parameters(OperatorOptions(["seed": "2"]), inputShape: shape)
            let original = try descriptor.parameters(OperatorOptions(["seed": "1"]), inputShape: shape)
            #expect(replaced != original, "\(name): the two seeds give the same parameters")
            try layer.loadParameters(replaced)
            let reference = try descriptor.makeReference(OperatorOptions(["seed": "1"]), inputShape: shape, parameters: replaced)
            let actual = try layer(try DeviceTensor(x, on: device)).output.toHost()
            let expected = try reference(x).output
            let error = actual.maxRelativeError(from: expected)
            #expect(error <= Self.tolerances(name).forward, "\(name): error \(error) after loading new parameters")
            #expect(throws: NyquistError.self) { try layer.loadParameters(["conv.weight": try randomTensor([1], seed: 1)]) }
        }
    }

    @Test("unknown operators and options are refused with the valid names")
    func refusals() throws {
        #expect(throws: NyquistError.self) { try OperatorRegistry.named("mean-pool") }
        let blur = try OperatorRegistry.named("blur-pool")
        do {
            _ = try blur.makeReference(OperatorOptions(["norm": "l1"]), inputShape: [1, 3, 8, 8])
            Issue.record("blur-pool accepted --norm")
        } catch let error as NyquistError {
            #expect(error.message.contains("--norm") && error.message.contains("--filter-size"), "\(error.message)")
        }
        #expect(throws: NyquistError.self) {
            try blur.makeReference(OperatorOptions(["filter-size": "four"]), inputShape: [1, 3, 8, 8])
        }
        #expect(throws: NyquistError.self) {
            try OperatorRegistry.named("aps-pool").makeReference(OperatorOptions(["norm": "l3"]), inputShape: [1, 3, 8, 8])
        }
        #expect(throws: NyquistError.self) { try blur.makeReference(OperatorOptions(), inputShape: [3, 8, 8]) }
    }
}
