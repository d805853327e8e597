import Dispatch
import NyquistCore
import Synchronization
import Testing
import _NyquistTestSupport

@testable import Nyquist

// Bitwise determinism (issue 17, item 6): every output and gradient of every kernel family is
// the same bit pattern under every launch-parameter candidate the tuner can choose (and the
// knobs a database entry may set beyond them: TIPS band sizes, AdaptiveBlurPool's gradient
// kernels), from run to run, and with several threads calling one Device. The parity suites
// compare each candidate with the reference within a tolerance; this suite compares bits, so a
// tuning run can never change what `nyquist run` writes. Shapes are small (CI runs on 2 cores)
// but have N and C that divide no work-group and odd sizes that reach every border path.
/// A tensor's values as bit patterns (widened so that Double results fit the same list).
private func bits(_ tensor: DeviceTensor) throws -> [UInt64] {
    try tensor.toHost().values.map { UInt64($0.bitPattern) }
}

@Suite("Determinism across launch parameters, runs and threads", .serialized)
struct DeterminismTests {
    /// Named results of one run, as Float bit patterns (Double results as their bits too).
    typealias Results = [(name: String, bits: [UInt64])]

    /// Runs `body` once per candidate (pinned for each of `families` and every shape class in
    /// `classes`, on a Device of its own) and expects every result to have the first
    /// candidate's bits; then runs the last candidate's call again, and from three threads at
    /// once, and expects the same bits.
    static func expectIdentical<Knobs: LaunchKnobs>(
        families: [String], classes: [String], candidates: [Knobs], label: String,
        _ body: @Sendable (Device) throws -> Results
    ) throws {
        let device = try TestDevice.fresh()
        #expect(!candidates.isEmpty, "\(label): no candidates")
        var first: (Knobs, Results)? = nil
        try LaunchVariantParityTests.forEachPinned(candidates, families: families, shapeClasses: classes) { candidate in
            let results = try body(device)
            if let (reference, expected) = first {
                compare(results, expected, "\(label): \(candidate) against \(reference)")
            } else {
                first = (candidate, results)
            }
        }
        guard let (_, expected) = first, let last = candidates.last else { return }
        // The last candidate again, then from three threads at once; each pins it, since pins
        // hold only on the task or thread that sets them.
        @Sendable func lastPinned() throws -> Results {
            try withPinnedKnobs(last, families: families, shapeClasses: classes) { try body(device) }
        }
        let again = try lastPinned()
        let lastLabel = "\(label): \(last)"
        compare(again, expected, "\(lastLabel), second run")
        let threaded = Mutex<[Int: Result<Results, any Error>]>([:])
        DispatchQueue.concurrentPerform(iterations: 3) { index in
            let result = Result { try lastPinned() }
            threaded.withLock { $0[index] = result }
        }
        for index in 0..<3 {
            let result = threaded.withLock { $0[index] }
            switch result {
            case .success(let results): compare(results, expected, "\(lastLabel), thread \(index)")
            case .failure(let error): Issue.record("\(lastLabel), thread \(index): \(error)")
            case nil: Issue.record("\(lastLabel), thread \(index) returned nothing")
            }
        }
    }

    static func compare(_ actual: Results, _ expected: Results, _ label: String) {
        #expect(actual.map(\.name) == expected.map(\.name), "\(label): different results")
        for (result, reference) in zip(actual, expected) where result.bits != reference.bits {
            let differing = zip(result.bits, reference.bits).filter { $0 != $1 }.count
            let counts = result.bits.count == reference.bits.count ? "" : " (count \(result.bits.count))"
            Issue.record("\(label): \(result.name) differs in \(differing) of \(reference.bits.count) values\(counts)")
        }
    }

    static let shapes: [[Int]] = [[3, 5, 9, 11], [2, 3, 20, 17]]

    @Test("Window families (BlurPool, MaxBlurPool, AvgPool, MaxPool) under every window candidate")
    func window() throws {
        let inputs = try Self.shapes.enumerated().map { try randomTensor($0.element, seed: UInt64(300 + $0.offset)) }
        // One pin covers the four window families: each candidate is pinned for all of them.
        try Self.expectIdentical(
            families: WindowLaunch.allCases.map(\.rawValue), classes: ["wide", "medium", "narrow"],
            candidates: WindowKnobs.candidates, label: "window"
        ) { device in
            var results: Results = []
            for (index, x) in inputs.enumerated() {
                let channels = x.shape[1]
                let layers: [(String, any PoolingLayer)] = [
                    ("blur", try BlurPool2D(channels: channels)),
                    ("blur k5 zero", try BlurPool2D(channels: channels, filterSize: 5, padding: .zero)),
                    ("max-blur", try MaxBlurPool2D(channels: channels)), ("avg", try AvgPool2D(kernelSize: 3, stride: 2, padding: 1)),
                    ("max", try MaxPool2D(kernelSize: 3, stride: 2, padding: 1)),
                ]
                let input = try DeviceTensor(x, on: device)
                for (name, layer) in layers {
                    results += try Self.layerResults(layer, input, seed: UInt64(310 + index), "\(name) \(x.shape)")
                }
            }
            return results
        }
    }

    static func layerResults<Layer: PoolingLayer>(_ layer: Layer, _ input: DeviceTensor, seed: UInt64, _ label: String)
        throws -> Results
    {
        let (output, saved) = try layer.forwardTraining(input)
        let gradOutput = try DeviceTensor(try randomTensor(output.shape, seed: seed), on: input.device)
        let gradients = try layer.backward(gradOutput, saved)
        return [("\(label) forward", try bits(output)), ("\(label) grad input", try bits(gradients.input))]
    }

    @Test("APSPool2D under every group size and gather/scatter work-group shape")
    func aps() throws {
        let family = PolyphaseLaunch.apsFamily
        let inputs = try (Self.shapes + [[2, 3, 33, 10]]).enumerated().map {
            try randomTensor($0.element, seed: UInt64(320 + $0.offset))
        }
        try Self.expectIdentical(
            families: [family], classes: ["large", "small"],
            candidates: APSKnobs.candidates, label: "aps"
        ) { device in
            var results: Results = []
            for (index, x) in inputs.enumerated() {
                for norm in [PolyphaseNorm.l2, .l1] {
                    let layer = try APSPool2D(channels: x.shape[1], filterSize: index == 0 ? 3 : 1, norm: norm)
                    let input = try DeviceTensor(x, on: device)
                    let (training, saved) = try layer.forwardTraining(input, indices: nil)
                    let (output, indices) = (training.output, training.indices)
                    let gradOutput = try DeviceTensor(try randomTensor(output.shape, seed: UInt64(330 + index)), on: device)
                    let gradInput = try DeviceTensor(shape: x.shape, on: device)
                    try layer.backward(gradOutput, saved, into: gradInput)
                    let label = "\(norm) \(x.shape)"
                    results += [
                        ("\(label) output", try bits(output)), ("\(label) indices", try bits(indices)),
                        ("\(label) grad input", try bits(gradInput)),
                    ]
                }
            }
            return results
        }
    }

    /// The TIPS forward candidates, each also with the backward's band sizes: 0 (the unfused
    /// passes), 1 (bands of 3 rows), 1000 and the built-in 4096.
    static var tipsCandidates: [TIPSKnobs] {
        let forward = TIPSKnobs.candidates
        return forward + [0, 1, 1000].map { bandElements in
            var launch = forward[bandElements % forward.count]
            launch.bandElements = bandElements
            return launch
        }
    }

    @Test("TIPSPool2D (output, psi, tau, losses, gradients) under every group size, batching and band size")
    func tips() throws {
        let inputs = try (Self.shapes + [[1, 2, 40, 7]]).enumerated().map {
            try randomTensor($0.element, seed: UInt64(340 + $0.offset))
        }
        try Self.expectIdentical(
            families: [PolyphaseLaunch.tipsFamily], classes: [PolyphaseLaunch.tipsShapeClass],
            candidates: Self.tipsCandidates, label: "tips"
        ) { device in
            var results: Results = []
            for (index, x) in inputs.enumerated() {
                let layer = try TIPSPool2D(channels: x.shape[1], kernelSize: index == 1 ? 5 : 3, seed: 7, on: device)
                let input = try DeviceTensor(x, on: device)
                let label = "\(x.shape)"
                let inference = try layer(input).output
                let shift = MapShift(dy: 1, dx: -2, fill: index == 0 ? .zero : .circular)
                let (outputs, saved) = try layer.forwardTraining(input, undoShift: shift)
                let losses = try #require(try outputs.losses, "\(label): training forward gives the losses")
                let psi = try #require(outputs.psi, "\(label): training forward gives psi")
                let gradOutput = try DeviceTensor(try randomTensor(inference.shape, seed: UInt64(350 + index)), on: device)
                let gradients = try layer.backward(
                    TIPSPool2DOutputGradients(output: gradOutput, lossWeights: TIPSLossWeights(fm: 0.5, undo: 2)), saved)
                results += [
                    ("\(label) inference output", try bits(inference)), ("\(label) output", try bits(outputs.output)),
                    ("\(label) psi", try bits(psi)), ("\(label) tau", try bits(outputs.tau)),
                    ("\(label) losses", [losses.fm.bitPattern, losses.undo?.bitPattern ?? 0]),
                    ("\(label) grad input", try bits(gradients.input)),
                ]
                for name in gradients.parameters.keys.sorted() {
                    results.append(("\(label) grad \(name)", try bits(try #require(gradients.parameters[name]))))
                }
            }
            return results
        }
    }

    @Test("LiftDownPool2D and LiftUpPool2D (bands, regularisers, gradients) under every run length")
    func lift() throws {
        let cases: [([Int], Int)] = [([3, 5, 9, 11], 5), ([2, 3, 6, 37], 3), ([1, 2, 35, 8], 7)]
        let inputs = try cases.enumerated().map { try randomTensor($0.element.0, seed: UInt64(360 + $0.offset)) }
        try Self.expectIdentical(
            families: [LiftLaunch.family], classes: ["wide", "narrow"], candidates: LiftKnobs.candidates, label: "lift"
        ) { device in
            var results: Results = []
            for (index, x) in inputs.enumerated() {
                let config = try LiftPoolConfiguration(channels: x.shape[1], kernelSize: cases[index].1)
                let params = LiftPoolParityTests.parameters(config, seed: UInt64(370 + index))
                let pool = try LiftDownPool2D(config, parameters: params, on: device)
                let label = "\(x.shape)"
                let (bands, saved) = try pool.forwardTraining(try DeviceTensor(x, on: device))
                let regularisers = try #require(try bands.regularisers, "\(label): training forward gives the regularisers")
                results += try [("output", bands.output), ("LL", bands.ll), ("LH", bands.lh), ("HL", bands.hl), ("HH", bands.hh)]
                    .map { ("\(label) \($0.0)", try bits($0.1)) }
                results.append(("\(label) regularisers", [regularisers.cu.bitPattern, regularisers.cp.bitPattern]))
                let upstream = try (0..<5).map {
                    try DeviceTensor(try randomTensor(bands.ll.shape, seed: UInt64(380 + index * 5 + $0)), on: device)
                }
                let gradients = try pool.backward(
                    LiftDownPool2DOutputGradients(
                        output: upstream[0], ll: upstream[1], lh: upstream[2], hl: upstream[3], hh: upstream[4],
                        regulariserLoss: 1.3), saved)
                results.append(("\(label) grad input", try bits(gradients.input)))
                for name in gradients.parameters.keys.sorted() {
                    results.append(("\(label) grad \(name)", try bits(try #require(gradients.parameters[name]))))
                }
                let unpool = LiftUpPool2D(inverting: pool)
                let (reconstruction, upSaved) = try unpool.forwardTraining(
                    LiftUpPool2DInput(bands, height: x.shape[2], width: x.shape[3]))
                results.append(("\(label) up output", try bits(reconstruction)))
                let gradUp = try DeviceTensor(try randomTensor(x.shape, seed: UInt64(395 + index)), on: device)
                let upGradients = try unpool.backward(gradUp, upSaved)
                for (band, tensor) in upGradients.bands.enumerated() {
                    results.append(("\(label) up grad band \(band)", try bits(tensor)))
                }
                for name in upGradients.parameters.keys.sorted() {
                    results.append(("\(label) up grad \(name)", try bits(try #require(upGradients.parameters[name]))))
                }
            }
            return results
        }
    }

    /// Every predictor candidate, alternately with the one-element gradient kernels
    /// (rowGradients false, the GPU default) and the row kernels (the CPU default), so every
    /// result of both gradient paths is compared with the first candidate's.
    static var adaptiveCandidates: [AdaptiveKnobs] {
        AdaptiveKnobs.candidates.enumerated().map { index, candidate in
            var launch = candidate
            launch.rowGradients = index % 2 == 1
            return launch
        }
    }

    @Test("AdaptiveBlurPool2D (output, filters, batch statistics, gradients) under every predictor candidate and gradient kernel")
    func adaptive() throws {
        let cases: [(shape: [Int], k: Int, groups: Int, softmax: AdaptiveSoftmax)] = [
            // N 9: more samples than one round of the one-element weight gradient's groups (8).
            ([3, 5, 9, 11], 3, 5, .joint), ([2, 4, 7, 12], 5, 2, .perGroup), ([9, 2, 6, 10], 3, 1, .joint),
        ]
        let inputs = try cases.enumerated().map { try randomTensor($0.element.shape, seed: UInt64(400 + $0.offset)) }
        try Self.expectIdentical(
            families: [AdaptiveLaunch.family], classes: [AdaptiveLaunch.shapeClass], candidates: Self.adaptiveCandidates,
            label: "adaptive"
        ) { device in
            var results: Results = []
            for (index, spec) in cases.enumerated() {
                let config = try AdaptiveBlurPool2DConfiguration(
                    channels: spec.shape[1], kernelSize: spec.k, stride: 2, groups: spec.groups, padding: .reflect,
                    softmax: spec.softmax)
                let layer = try AdaptiveBlurPool2D(
                    config, parameters: try adaptiveTestParameters(config, seed: UInt64(410 + index)), on: device)
                let input = try DeviceTensor(inputs[index], on: device)
                let label = "\(spec.shape)"
                let (inference, inferenceFilters) = try layer.forwardWithFilters(input)
                let (output, filters, saved) = try layer.forwardTraining(input, withFilters: true, frozenStatistics: false)
                let gradOutput = try DeviceTensor(try randomTensor(output.shape, seed: UInt64(420 + index)), on: device)
                let gradients = try layer.backward(gradOutput, saved)
                results += [
                    ("\(label) inference output", try bits(inference)), ("\(label) inference filters", try bits(inferenceFilters)),
                    ("\(label) output", try bits(output)), ("\(label) predictor map", try bits(saved.predictor)),
                    ("\(label) batch mean", try bits(saved.batchMean)), ("\(label) batch variance", try bits(saved.batchVariance)),
                    ("\(label) grad input", try bits(gradients.input)),
                ]
                if let filters { results.append(("\(label) filters", try bits(filters))) }
                for name in gradients.parameters.keys.sorted() {
                    results.append(("\(label) grad \(name)", try bits(try #require(gradients.parameters[name]))))
                }
            }
            return results
        }
    }

    @Test("two threads measuring on one Device each count exactly their own kernels")
    func measureSessionsPerThread() throws {
        let device = try TestDevice.fresh()
        let host = try randomTensor([2, 3, 20, 17], seed: 440)
        let blur = try BlurPool2D(channels: 3)
        let maxPool = try MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
        // Each body enqueues several launches of its own kernels only (tensors are made inside:
        // they are not Sendable); alone, its session lists them (the expected list).
        let bodies: [@Sendable () throws -> Void] = [
            {
                let x = try DeviceTensor(host, on: device)
                let y = try blur(x)
                for _ in 0..<20 { try blur.forward(x, into: y) }
            },
            {
                let x = try DeviceTensor(host, on: device)
                let y = try maxPool(x)
                for _ in 0..<20 { try maxPool.forward(x, into: y) }
            },
        ]
        let expected = try bodies.map { body in try device.context.measureLaunches(body).launches.map(\.kernel) }
        #expect(Set(expected[0]).isDisjoint(with: Set(expected[1])), "the two bodies must run different kernels")
        for round in 0..<3 {
            let sessions = Mutex<[Int: Result<[String], any Error>]>([:])
            DispatchQueue.concurrentPerform(iterations: 2) { index in
                let result = Result { try device.context.measureLaunches(bodies[index]).launches.map(\.kernel) }
                sessions.withLock { $0[index] = result }
            }
            for index in 0..<2 {
                switch sessions.withLock({ $0[index] }) {
                case .success(let kernels):
                    #expect(kernels == expected[index], "round \(round), thread \(index): \(kernels.count) launches")
                case .failure(let error): Issue.record("round \(round), thread \(index): \(error)")
                case nil: Issue.record("round \(round), thread \(index) returned nothing")
                }
            }
        }
        // A nested session on the same thread still counts nothing of its own; the outer one all.
        let outer = try device.context.measureLaunches {
            try device.context.measureLaunches(bodies[0]).launches.count
        }
        #expect(outer.value == 0)
        #expect(outer.launches.map(\.kernel) == expected[0])
    }
}
