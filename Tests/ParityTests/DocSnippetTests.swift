// docs/guide.md: imports begin
import Foundation
import Nyquist
import NyquistCore
import NyquistReference
// docs/guide.md: imports end
import COpenCL
import NyquistOperators
import Testing

// Every ```swift block of docs/*.md and README.md, verbatim between markers
// `// <file>: <name> begin` / `// <file>: <name> end`, each in a test that runs it and checks
// what the page says it gives. `docSnippetsMatchPages` fails when a block has no identical copy
// here (or in ReadmeExampleTests.swift), or a copy here has no block left on its page, so an
// example on a page cannot stop compiling or running without a test failing.
//
// To add an example to a page: paste it here between new markers, inside a test function, with
// whatever it needs (imports above, a device) written in the example itself.

@Suite("Documentation examples")
struct DocSnippetTests {
    @Test("guide: choosing a device")
    func devices() throws {
        // docs/guide.md: devices begin
        let device = try Device.default()       // NYQUIST_DEVICE, else the first GPU, else any device
        for info in try Device.all() {          // every device of every OpenCL platform
            print(info.index, info.name, info.typeName, info.driverVersion)
        }
        let first = try Device(named: "0")      // an index from `nyquist devices`, or a name substring
        print(device.name, first.name)
        // docs/guide.md: devices end
        #expect(first.info.index == 0)
    }

    @Test("guide: tensors and .npy files")
    func tensors() throws {
        // docs/guide.md: tensors begin
        let device = try Device.default()
        let host = try HostTensor(shape: [2, 3, 8, 8], generator: { Float($0 % 7) })
        let x = try DeviceTensor(host, on: device)      // upload
        let back = try x.toHost()                       // download (waits for pending kernels)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("guide-x.npy")
        try NPY.write(back, to: url)                    // float32 .npy
        let fromFile = try NPY.read(contentsOf: url)    // float32 or float64 .npy, C order
        print(fromFile.shape, fromFile == host)
        // docs/guide.md: tensors end
        #expect(fromFile == host)
        try? FileManager.default.removeItem(at: url)
    }

    @Test("guide: MaxPool2D, AvgPool2D, BlurPool2D, MaxBlurPool2D")
    func windowLayers() throws {
        // docs/guide.md: window layers begin
        let device = try Device.default()
        let x = try DeviceTensor(HostTensor(shape: [2, 4, 9, 9], generator: { Float($0 % 5) }), on: device)
        let blur = try BlurPool2D(channels: 4, filterSize: 4, stride: 2, padding: .reflect)
        let maxBlur = try MaxBlurPool2D(channels: 4)            // 2x2 max at stride 1, then BlurPool
        let maxPool = try MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
        let avgPool = try AvgPool2D(kernelSize: 2)              // stride defaults to the kernel
        let y = try blur(x)                                     // inference: 2 x 4 x 5 x 5
        let (output, saved) = try maxBlur.forwardTraining(x)    // keeps what backward needs
        let gradOutput = try DeviceTensor(HostTensor(shape: output.shape, repeating: 1), on: device)
        let gradients = try maxBlur.backward(gradOutput, saved) // gradients.input: 2 x 4 x 9 x 9
        let preallocated = try DeviceTensor(shape: maxPool.outputShape(for: x).dimensions, on: device)
        try maxPool.forward(x, into: preallocated)              // writes into a tensor you own
        print(y.shape, output.shape, gradients.input.shape, try avgPool(x).shape)
        // docs/guide.md: window layers end
        #expect(y.shape == [2, 4, 5, 5])
        #expect(output.shape == [2, 4, 4, 4])
        #expect(gradients.input.shape == [2, 4, 9, 9])
        #expect(preallocated.shape == [2, 4, 5, 5])
        #expect(try avgPool(x).shape == [2, 4, 4, 4])
        // The blur's output gradient of ones spreads a total of (number of outputs) back.
        let total = try gradients.input.toHost().values.reduce(0, +)
        #expect(abs(total - Float(output.count)) < 1e-3)
    }

    @Test("guide: APSPool2D with a shortcut reusing the phases")
    func aps() throws {
        // docs/guide.md: aps begin
        let device = try Device.default()
        let x = try DeviceTensor(HostTensor(shape: [2, 4, 8, 8], generator: { Float(($0 * 7) % 11) }), on: device)
        let mainBranch = try APSPool2D(channels: 4, filterSize: 3, norm: .l2)  // circular pre-blur, k = 3
        let shortcut = try APSPool2D(channels: 4)                              // plain APS, l2 norm
        let y = try mainBranch(x)                            // y.output; y.indices: shape [N], one phase 0...3 per sample
        let residual = try shortcut(x, indices: y.indices)   // samples the main branch's phases
        let (training, saved) = try mainBranch.forwardTraining(x)  // saved: the input and the phases
        let gradOutput = try DeviceTensor(HostTensor(shape: training.output.shape, repeating: 1), on: device)
        let gradients = try mainBranch.backward(gradOutput, saved)  // to the chosen phase, through the blur
        print(try y.indices.toHost().values, y.output.shape, residual.output.shape, gradients.input.shape)
        // docs/guide.md: aps end
        #expect(y.indices.shape == [2])
        #expect(y.output.shape == [2, 4, 4, 4] && residual.output.shape == [2, 4, 4, 4])
        #expect(gradients.input.shape == [2, 4, 8, 8])
        #expect(Array(y.extras.keys) == ["indices"])
        // The shortcut really sampled the given phase: compare with the reference.
        let chosen = try y.indices.toHost().values.map { Int($0) }
        #expect(try residual.indices.toHost().values.map { Int($0) } == chosen)
        #expect(try saved.indices?.toHost().values.map { Int($0) } == chosen)
        let expected = try Reference.apsPool2D(try x.toHost(), APSPool2DConfiguration(channels: 4), indices: chosen)
        #expect(try residual.output.toHost() == expected.output)
    }

    @Test("guide: TIPSPool2D with its losses")
    func tips() throws {
        // docs/guide.md: tips begin
        let device = try Device.default()
        let x = try DeviceTensor(HostTensor(shape: [2, 3, 8, 8], generator: { Float(($0 * 5) % 13) / 13 }), on: device)
        let tips = try TIPSPool2D(channels: 3, kernelSize: 3, seed: 0, on: device)  // PyTorch's default init, seeded
        let y = try tips(x)                        // y.output 2 x 3 x 4 x 4, y.tau 2 x 3 x 4 (no psi, no losses)
        var shifts = try ShiftGenerator(seed: 42, maxShiftH: 2, maxShiftW: 2, fill: .circular)
        let (training, saved) = try tips.forwardTraining(x, undoShift: shifts.next())
        // training.psi: 2 x 3 x 8 x 8; training.losses: .fm (L_FM) and .undo (L_undo)
        let gradOutput = try DeviceTensor(HostTensor(shape: training.output.shape, repeating: 1), on: device)
        let lossWeights = try TIPSLossWeights(fm: 1, undo: 0.35)
        let gradients = try tips.backward(TIPSPool2DOutputGradients(output: gradOutput, lossWeights: lossWeights), saved)
        print(y.tau.shape, try training.scalars, gradients.parameters.keys.sorted())
        // docs/guide.md: tips end
        #expect(y.output.shape == [2, 3, 4, 4] && y.tau.shape == [2, 3, 4])
        #expect(try y.psi == nil && y.losses == nil && y.scalars.isEmpty)
        #expect(training.psi?.shape == [2, 3, 8, 8])
        let losses = try #require(try training.losses)
        let undo = try #require(losses.undo)
        #expect(try training.scalars == ["fm": losses.fm, "undo": undo])
        // tau is a softmax of 4 entries: ||tau||_2 lies in [0.5, 1], so L_FM lies in [0, 0.5].
        #expect(losses.fm >= 0 && losses.fm <= 0.5)
        #expect(gradients.parameters.keys.sorted() == ["conv1.weight", "conv2.weight"])
    }

    @Test("guide: LiftDownPool2D and LiftUpPool2D")
    func lift() throws {
        // docs/guide.md: lift begin
        let device = try Device.default()
        let x = try DeviceTensor(HostTensor(shape: [1, 2, 7, 8], generator: { Float($0 % 9) / 9 }), on: device)
        let pool = try LiftDownPool2D(channels: 2, kernelSize: 5, lambdaU: 0.01, lambdaP: 0.1, seed: 0, on: device)
        let bands = try pool(x)                                  // output, ll, lh, hl, hh: 1 x 2 x 4 x 4
        let unpool = LiftUpPool2D(inverting: pool)               // shares the pool's P and U
        let back = try unpool(LiftUpPool2DInput(bands, height: 7, width: 8))  // x again, to rounding
        let (trained, saved) = try pool.forwardTraining(x)       // trained.regularisers: cu, cp, loss
        let gradOutput = try DeviceTensor(HostTensor(shape: trained.output.shape, repeating: 1), on: device)
        let gradients = try pool.backward(LiftDownPool2DOutputGradients(output: gradOutput, regulariserLoss: 1), saved)
        let (_, upSaved) = try unpool.forwardTraining(LiftUpPool2DInput(bands, height: 7, width: 8))
        let gradBack = try DeviceTensor(HostTensor(shape: back.shape, repeating: 1), on: device)
        let bandGradients = try unpool.backward(gradBack, upSaved)  // .bands: LL, LH, HL, HH; .parameters
        print(try trained.scalars, back.shape, gradients.parameters.keys.sorted(), bandGradients.bands.count)
        // docs/guide.md: lift end
        #expect(bands.ll.shape == [1, 2, 4, 4])
        let original = try x.toHost().values
        let reconstructed = try back.toHost().values
        #expect(zip(original, reconstructed).allSatisfy { abs($0 - $1) < 1e-5 }, "LiftUpPool must invert LiftDownPool")
        let regularisers = try #require(try trained.regularisers)
        #expect(abs(regularisers.loss - (0.01 * regularisers.cu + 0.1 * regularisers.cp)) < 1e-9)
        #expect(try trained.scalars == ["c_u": regularisers.cu, "c_p": regularisers.cp, "loss": regularisers.loss])
        #expect(gradients.parameters.count == 8 && gradients.input.shape == [1, 2, 7, 8])
        #expect(bandGradients.bands.count == 4 && bandGradients.bands.allSatisfy { $0.shape == [1, 2, 4, 4] })
        #expect(bandGradients.parameters.count == 8)
    }

    @Test("guide: AdaptiveBlurPool2D")
    func adaptive() throws {
        // docs/guide.md: adaptive begin
        let device = try Device.default()
        let x = try DeviceTensor(HostTensor(shape: [2, 8, 9, 9], generator: { Float(($0 * 3) % 17) / 17 }), on: device)
        let pool = try AdaptiveBlurPool2D(
            channels: 8, kernelSize: 3, stride: 2, groups: 4, padding: .reflect, softmax: .joint, seed: 0, on: device)
        let y = try pool(x)                                 // inference, running statistics: 2 x 8 x 5 x 5
        let (_, filters) = try pool.forwardWithFilters(x)   // filters: 2 x 36 x 5 x 5 (G*k*k per position)
        let (output, saved) = try pool.forwardTraining(x)   // batch statistics; updates the running ones
        let gradOutput = try DeviceTensor(HostTensor(shape: output.shape, repeating: 1), on: device)
        let gradients = try pool.backward(gradOutput, saved)  // .input; .parameters conv.weight, bn.weight, bn.bias
        let (_, _, frozen) = try pool.forwardTraining(x, withFilters: false, frozenStatistics: true)  // eval-mode BatchNorm
        let fineTuning = try pool.backward(gradOutput, frozen)
        print(y.shape, filters.shape, gradients.parameters.keys.sorted(), fineTuning.input.shape)
        // docs/guide.md: adaptive end
        #expect(y.shape == [2, 8, 5, 5] && filters.shape == [2, 36, 5, 5])
        #expect(gradients.parameters.keys.sorted() == ["bn.bias", "bn.weight", "conv.weight"])
        #expect(fineTuning.input.shape == [2, 8, 9, 9])
        // The training forward moved the running mean away from its initial zeros.
        #expect(try pool.hostParameters.runningMean.values.contains { $0 != 0 })
        #expect(try pool.parameterValues()["bn.running_mean"] == pool.hostParameters.runningMean)
    }

    @Test("guide: loading PyTorch weights from safetensors")
    func weights() throws {
        // docs/guide.md: weights begin
        let device = try Device.default()
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("guide-model.safetensors")
        let adaptiveConfiguration = try AdaptiveBlurPool2DConfiguration(channels: 8, kernelSize: 3, groups: 4)
        let tipsConfiguration = try TIPSPool2DConfiguration(channels: 8)
        let liftConfiguration = try LiftPoolConfiguration(channels: 8)
        var model: [String: HostTensor] = [:]   // what the Python snippet would have written
        for (name, tensor) in AdaptiveBlurPool2DParameters<Float>(configuration: adaptiveConfiguration, seed: 1).stateDict {
            model["layer2.0.pasa." + name] = tensor
        }
        for (name, tensor) in tipsConfiguration.defaultParameters(seed: 2) { model["layer3.0.tips." + name] = tensor }
        for (name, tensor) in try LiftPoolParameters<Float>(liftConfiguration, seed: 3).stateDict() {
            model["layer1.lift." + name] = tensor
        }
        try Safetensors.write(model, to: url)

        // Every layer with parameters reads the file itself and selects its tensors by prefix.
        let adaptive = try AdaptiveBlurPool2D(channels: 8, kernelSize: 3, groups: 4, on: device)
        try adaptive.load(safetensors: url, prefix: "layer2.0.pasa.")
        let tips = try TIPSPool2D(channels: 8, on: device)
        try tips.load(safetensors: url, prefix: "layer3.0.tips.")
        let lift = try LiftDownPool2D(channels: 8, on: device)
        try lift.load(safetensors: url, prefix: "layer1.lift.")
        // And back: the same names under a prefix, for PyTorch's load_state_dict.
        let saved = FileManager.default.temporaryDirectory.appendingPathComponent("guide-tips.safetensors")
        try tips.saveParameters(safetensors: saved, prefix: "layer3.0.tips.")
        print(try adaptive.hostParameters.convWeight.shape, tips.parameters.keys.sorted(), lift.parameters.count)
        // docs/guide.md: weights end
        defer {
            try? FileManager.default.removeItem(at: url)
            try? FileManager.default.removeItem(at: saved)
        }
        #expect(try adaptive.hostParameters == AdaptiveBlurPool2DParameters<Float>(configuration: adaptiveConfiguration, seed: 1))
        #expect(try tips.parameterValues() == tipsConfiguration.defaultParameters(seed: 2))
        #expect(try lift.weights.toHost() == LiftPoolParameters<Float>(liftConfiguration, seed: 3))
        // The file written back holds the TIPS tensors of the model under the same names.
        let written = try Safetensors.read(contentsOf: saved)
        #expect(written == model.filter { $0.key.hasPrefix("layer3.0.tips.") })
    }

    @Test("guide: the CPU reference")
    func reference() throws {
        // docs/guide.md: reference begin
        let x = try HostTensor(shape: [1, 2, 6, 6], generator: { Float($0 % 4) })
        let configuration = try BlurPool2DConfiguration(channels: 2, filterSize: 3, stride: 2, padding: .zero)
        let y = try Reference.blurPool2D(x, configuration)                   // 1 x 2 x 3 x 3, Float
        let (_, saved) = try Reference.blurPool2DTraining(x.converted(to: Double.self), configuration)
        let gradient = try Reference.blurPool2DBackward(
            gradOutput: Tensor<Double>(shape: [1, 2, 3, 3], repeating: 1), saved: saved, configuration)
        let (aps, indices) = try Reference.apsPool2D(x, APSPool2DConfiguration(channels: 2))
        let onDevice = try BlurPool2D(configuration)(DeviceTensor(x, on: Device.default())).toHost()
        print(y.shape, gradient.shape, aps.shape, indices, onDevice.shape)
        // docs/guide.md: reference end
        #expect(y.shape == [1, 2, 3, 3] && gradient.shape == [1, 2, 6, 6] && aps.shape == [1, 2, 3, 3])
        #expect(zip(y.values, onDevice.values).allSatisfy { abs($0 - $1) <= 1e-5 * 3 })
    }
}

/// One ```swift block of a page, or one marked copy in a test file, with its indentation removed.
struct SwiftBlock: CustomStringConvertible {
    let file: String
    let name: String
    let line: Int
    let lines: [String]

    var description: String { "\(file):\(line) (\(name))" }

    /// The non-blank lines, without their common leading spaces and without trailing spaces
    /// (a page shows code at column 0 that a test holds indented; blank lines carry no code).
    static func normalised<S: StringProtocol>(_ lines: [S]) -> [String] {
        let stripped = lines.map { String($0).replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression) }
            .filter { !$0.isEmpty }
        let indent = stripped.map { $0.prefix { $0 == " " }.count }.min() ?? 0
        return stripped.map { String($0.dropFirst(indent)) }
    }
}

/// The package root, from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent()

/// Every ```swift block of README.md and docs/*.md.
func documentedSwiftBlocks() throws -> [SwiftBlock] {
    let docs = packageRoot.appendingPathComponent("docs")
    let pages = try FileManager.default.contentsOfDirectory(atPath: docs.path).filter { $0.hasSuffix(".md") }.sorted()
        .map { "docs/\($0)" }
    var blocks: [SwiftBlock] = []
    for page in ["README.md"] + pages {
        let text = try String(contentsOf: packageRoot.appendingPathComponent(page), encoding: .utf8)
        let lines = text.components(separatedBy: "\n")
        var start: Int?
        for (index, line) in lines.enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if start == nil, trimmed == "```swift" {
                start = index
            } else if let open = start, trimmed == "```" {
                blocks.append(
                    SwiftBlock(
                        file: page, name: "block", line: open + 1,
                        lines: SwiftBlock.normalised(Array(lines[(open + 1)..<index]))))
                start = nil
            }
        }
        if let open = start { Issue.record("\(page):\(open + 1): a ```swift block is never closed") }
    }
    return blocks
}

/// Every marked copy (`// <file>: <name> begin` ... `// <file>: <name> end`) in the test files
/// that hold the pages' examples. Marked parts with the same file and name are joined in order,
/// so that one example can open with imports (at file scope) and go on inside a test function.
func markedSwiftBlocks() throws -> [SwiftBlock] {
    var joined: [SwiftBlock] = []
    for part in try markedParts() {
        if let index = joined.firstIndex(where: { $0.file == part.file && $0.name == part.name }) {
            let first = joined[index]
            joined[index] = SwiftBlock(file: first.file, name: first.name, line: first.line, lines: first.lines + part.lines)
        } else {
            joined.append(part)
        }
    }
    return joined
}

/// The marked parts, one per begin/end pair, in file order.
func markedParts() throws -> [SwiftBlock] {
    let folder = packageRoot.appendingPathComponent("Tests/ParityTests")
    var blocks: [SwiftBlock] = []
    for file in ["DocSnippetTests.swift", "ReadmeExampleTests.swift"] {
        let lines = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8).components(separatedBy: "\n")
        var open: (key: String, line: Int)?
        for (index, line) in lines.enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard trimmed.hasPrefix("// "), trimmed.hasSuffix(" begin") || trimmed.hasSuffix(" end") else { continue }
            let isBegin = trimmed.hasSuffix(" begin")
            let key = String(trimmed.dropFirst(3).dropLast(isBegin ? 6 : 4))
            guard key.contains(".md: ") else { continue }
            if isBegin {
                if let open { Issue.record("\(file):\(open.line + 1): marker \(open.key) is never ended") }
                open = (key, index)
            } else if let current = open, current.key == key {
                let parts = key.components(separatedBy: ": ")
                blocks.append(
                    SwiftBlock(
                        file: parts[0], name: parts.dropFirst().joined(separator: ": "), line: current.line + 1,
                        lines: SwiftBlock.normalised(Array(lines[(current.line + 1)..<index]))))
                open = nil
            } else {
                Issue.record("\(file):\(index + 1): end marker \(key) without its begin marker")
            }
        }
    }
    return blocks
}

@Test("Every Swift example of README.md and docs/*.md is a tested snippet, verbatim")
func docSnippetsMatchPages() throws {
    let pages = try documentedSwiftBlocks()
    let copies = try markedSwiftBlocks()
    #expect(pages.count >= 10, "found only \(pages.count) ```swift blocks: is the extraction broken?")
    for block in pages {
        let matches = copies.filter { $0.file == block.file && $0.lines == block.lines }
        #expect(
            !matches.isEmpty,
            """
            \(block.file):\(block.line): this ```swift block has no identical copy between `// \(block.file): <name> begin/end` \
            markers in Tests/ParityTests/DocSnippetTests.swift; paste it into a test there (or fence non-Swift text as ```text)
            """)
    }
    for copy in copies {
        #expect(
            pages.contains { $0.file == copy.file && $0.lines == copy.lines },
            "Tests/ParityTests marker \(copy.file): \(copy.name) (line \(copy.line)) matches no ```swift block of \(copy.file) any more")
    }
}

extension DocSnippetTests {
    @Test("layers: the registry builds a device layer and its reference by name")
    func registry() throws {
        // docs/layers.md: registry begin
        let device = try Device.default()
        let x = try HostTensor(shape: [1, 3, 8, 8], generator: { Float($0 % 5) })
        let blur = try OperatorRegistry.named("blur-pool")
        let options = OperatorOptions(["filter-size": "5"])
        let layer = try blur.makeLayer(options, inputShape: x.shape, on: device)
        let reference = try blur.makeReference(options, inputShape: x.shape)
        let y = try layer(DeviceTensor(x, on: device)).output.toHost()   // 1 x 3 x 4 x 4
        let expected = try reference(x).output                           // the same on the CPU reference
        // docs/layers.md: registry end
        #expect(y.shape == [1, 3, 4, 4])
        #expect(y.maxRelativeError(from: expected) <= Tolerance.window)
    }
}

extension DocSnippetTests {
    @Test("guide: the application's own context, queue and buffers")
    func callerObjects() throws {
        // docs/guide.md: caller objects begin
        let deviceID = try Device.default().info.handle
        var id: cl_device_id? = deviceID
        var status: cl_int = CL_SUCCESS
        // The application's own objects (any in-order queue of the context will do).
        guard let context = clCreateContext(nil, 1, &id, nil, nil, &status),
            let queue = clCreateCommandQueue(context, deviceID, 0, &status),
            let memory = clCreateBuffer(context, cl_mem_flags(CL_MEM_READ_WRITE), 1 * 3 * 4 * 4 * 4, nil, &status)
        else { throw NyquistError(.device, "OpenCL status \(status)") }
        defer { clReleaseMemObject(memory); clReleaseCommandQueue(queue); clReleaseContext(context) }

        let device = try Device(wrapping: context, device: deviceID, queue: queue)
        let x = try DeviceTensor(HostTensor(shape: [1, 3, 8, 8], generator: { Float($0 % 7) }), on: device)
        let y = try DeviceTensor(wrapping: memory, shape: [1, 3, 4, 4], on: device)   // the application's buffer
        let (_, done) = try device.submit(after: []) { try BlurPool2D(channels: 3).forward(x, into: y) }
        // ... more of the application's commands on `queue`, or wait for this one:
        var completion: cl_event? = done
        clWaitForEvents(1, &completion)
        if let done { clReleaseEvent(done) }
        // docs/guide.md: caller objects end
        let expected = try Reference.blurPool2D(x.toHost(), BlurPool2D(channels: 3).configuration)
        #expect(try y.toHost().maxRelativeError(from: expected) <= Tolerance.window)
    }
}
