import Foundation
import Nyquist
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

/// A fresh folder under the system's temporary directory, removed by the caller.
private func temporaryFolder() throws -> String {
    let path = NSTemporaryDirectory() + "nyquist-tuning-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite("Launch-parameter tuning")
struct TuningTests {
    /// The window families and the built-in default each must fall back to.
    static let family = "window-forward"

    @Test("database round trip through a file")
    func roundTrip() throws {
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = try #require(TuningDatabase.path(deviceName: "pthread-haswell-AMD EPYC / x", directory: folder))
        #expect(path == folder + "/tuning/pthread-haswell-AMD_EPYC___x.json")
        let database = TuningDatabase(
            device: "pthread-haswell-AMD EPYC / x",
            entries: [
                "window-forward/wide": AnyLaunchKnobs(WindowKnobs(outputsPerItem: 8, localSize: [64, 1, 1])),
                "window-backward/narrow": AnyLaunchKnobs(WindowKnobs(outputsPerItem: 2)),
            ])
        try database.save(path: path)
        #expect(TuningDatabase.load(path: path, deviceName: "pthread-haswell-AMD EPYC / x") == database)
        // Entries measured on another device never apply.
        #expect(TuningDatabase.load(path: path, deviceName: "NVIDIA H100") == nil)
    }

    @Test("the device reads tuned entries, and ignores broken files and unusable values")
    func deviceLookup() throws {
        let device = try Device(TestDevice.get().info)
        let folder = try temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let builtIn = WindowKnobs.builtIn(shapeClass: "wide", on: device)
        let tuned = WindowKnobs(outputsPerItem: builtIn.outputsPerItem == 2 ? 4 : 2, localSize: [16, 4, 1])
        func knobs(_ shapeClass: String, family: String = Self.family) -> WindowKnobs {
            device.knobs(WindowKnobs.self, family: family, shapeClass: shapeClass)
        }
        let path = folder + "/tuning/device.json"
        try TuningDatabase(
            device: device.name,
            entries: [
                "window-forward/wide": AnyLaunchKnobs(tuned),
                "window-forward/medium": AnyLaunchKnobs(WindowKnobs(outputsPerItem: 3)),
                "window-forward/narrow": AnyLaunchKnobs(WindowKnobs(outputsPerItem: 8, localSize: [0, 1, 1])),
                "window-backward/wide": AnyLaunchKnobs(LiftKnobs(run: 2)),  // another family's knobs
            ]
        ).save(path: path)
        device.reloadTuningDatabase(path: path)
        #expect(knobs("wide") == tuned)
        #expect(knobs("medium") == WindowKnobs.builtIn(shapeClass: "medium", on: device))
        #expect(knobs("narrow") == WindowKnobs.builtIn(shapeClass: "narrow", on: device))
        #expect(knobs("wide", family: "window-backward") == builtIn)

        // Pins win over the file, only inside their closure; knobs that cannot be launched, or
        // that are another family's, are refused.
        let pinned = WindowKnobs(outputsPerItem: 1, localSize: [64, 1, 1], foldedSides: false)
        try withPinnedKnobs(pinned, family: Self.family, shapeClass: "wide") {
            #expect(knobs("wide") == pinned)
            #expect(knobs("medium") == WindowKnobs.builtIn(shapeClass: "medium", on: device))
        }
        #expect(knobs("wide") == tuned)
        #expect(throws: NyquistError.self) {
            try withPinnedKnobs(WindowKnobs(outputsPerItem: 5), family: Self.family, shapeClass: "wide") {}
        }
        #expect(throws: NyquistError.self) {
            try withPinnedKnobs(WindowKnobs(outputsPerItem: 2), family: "lift", shapeClass: "wide") {}
        }

        // Corrupt, truncated, empty and foreign files all leave the built-in defaults.
        let broken = ["{ not json", String(try String(contentsOfFile: path, encoding: .utf8).prefix(40)), "",
            #"{"device": "another device", "entries": {"window-forward/wide": {"outputsPerItem": 2}}}"#]
        for text in broken {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            device.reloadTuningDatabase(path: path)
            #expect(knobs("wide") == builtIn)
        }
        device.reloadTuningDatabase(path: folder + "/tuning/missing.json")
        #expect(knobs("wide") == builtIn)
    }

    @Test("a plan built under pinned knobs is served only under them")
    func pinsKeyPlans() throws {
        let device = try Device(TestDevice.get().info)
        // No database (a tuned entry could equal the pinned knobs): the built-in choice only.
        device.reloadTuningDatabase(path: NSTemporaryDirectory() + "nyquist-no-tuning-\(UUID().uuidString).json")
        let pool = try BlurPool2D(channels: 3)
        let x = try DeviceTensor(randomTensor([2, 3, 40, 40], seed: 4), on: device)
        func launches() throws -> Int {
            let before = device.statistics.launches
            _ = try pool(x)
            return device.statistics.launches - before
        }
        // The output is 20 wide ("medium"). Vectors of 8 with the side columns the other way
        // from the built-in choice: one launch more or one fewer.
        let builtIn = WindowKnobs.builtIn(shapeClass: "medium", on: device)
        let pinned = WindowKnobs(outputsPerItem: 8, localSize: [64, 8, 1], foldedSides: !(builtIn.foldedSides ?? false))
        let unpinned = try launches()
        let underPins = try withPinnedKnobs(pinned, family: "window-forward", shapeClass: "medium") { try launches() }
        #expect(underPins != unpinned)
        #expect(try launches() == unpinned)
        #expect(try withPinnedKnobs(pinned, family: "window-forward", shapeClass: "medium") { try launches() } == underPins)
    }

    @Test("every tuner candidate gives the reference's results", arguments: WindowKnobs.candidates)
    func candidateParity(knobs: WindowKnobs) throws {
        // A device object of its own, so the plans built under these pins stay out of the
        // shared device's plan cache.
        let device = try Device(TestDevice.get().info)
        let families = try WindowTuning.families().map(\.name)
        try withPinnedKnobs(knobs, families: families, shapeClasses: ["wide", "medium", "narrow"]) {
            try candidateParity(knobs, on: device)
        }
    }

    private func candidateParity(_ knobs: WindowKnobs, on device: Device) throws {
        // Odd sizes, N and C not multiples of anything; widths in each shape class, and odd
        // pads so vectors start off the stride's phase.
        let shapes = [[1, 3, 9, 131], [3, 5, 31, 33], [2, 3, 7, 9], [1, 2, 12, 70]]
        var worst = WorstErrors()
        for (index, shape) in shapes.enumerated() {
            let seed = UInt64(900 + index)
            worst.merge(
                try maxPoolCase(MaxPool2DConfiguration(kernelSize: 3, stride: 2, padding: 1))
                    .check(shape: shape, seed: seed, on: device))
            worst.merge(
                try maxPoolCase(MaxPool2DConfiguration(kernelSize: 2)).check(shape: shape, seed: seed, on: device))
            worst.merge(
                try avgPoolCase(AvgPool2DConfiguration(kernelSize: 3, stride: 2, padding: 1))
                    .check(shape: shape, seed: seed, on: device))
            for (mode, offset) in [(PaddingMode.reflect, 0), (.zero, 1), (.circular, 0)] {
                for (filterSize, stride) in [(4, 2), (3, 2), (5, 1)] {
                    worst.merge(
                        try blurPoolCase(
                            BlurPool2DConfiguration(
                                channels: shape[1], filterSize: filterSize, stride: stride, padding: mode,
                                padOffset: offset)
                        ).check(shape: shape, seed: seed, on: device))
                    worst.merge(
                        try maxBlurPoolCase(
                            MaxBlurPool2DConfiguration(
                                channels: shape[1], filterSize: filterSize, stride: stride, padding: mode,
                                padOffset: offset)
                        ).check(shape: shape, seed: seed, on: device))
                }
            }
        }
        print("window kernels with \(knobs): \(worst)")
    }

    @Test("max-pool backward through saved indices equals the re-scan, NaN and ties included")
    func maxPoolIndicesMatchRescan() throws {
        let device = try TestDevice.get()
        let layer = try MaxPool2D(kernelSize: 3, stride: 2, padding: 1)
        // Few distinct values (many ties) and some NaNs.
        var x = try HostTensor(shape: [2, 3, 11, 13], generator: { Float(($0 * 37) % 5) })
        for index in stride(from: 7, to: x.count, by: 41) { x.values[index] = .nan }
        let input = try DeviceTensor(x, on: device)
        let gradOutput = try DeviceTensor(
            HostTensor(shape: layer.outputShape(for: input).dimensions, generator: { Float($0 % 7) - 3 }), on: device)
        let (_, saved) = try layer.forwardTraining(input)
        #expect(saved.tensors[layer.argmaxKey] != nil)
        let withIndices = try layer.backward(gradOutput, saved).input.toHost()
        let rescanned = try layer.backward(gradOutput, SavedForBackward(input: input)).input.toHost()
        #expect(withIndices.values == rescanned.values)
        let reference = try Reference.maxPool2DBackward(
            gradOutput: gradOutput.toHost(), saved: Reference.maxPool2DTraining(x, layer.configuration).saved,
            layer.configuration)
        #expect(withIndices.values == reference.values)
        // Indices saved by a max pool with other windows are not used.
        let other = try MaxPool2D(kernelSize: 2, stride: 2, padding: 1)
        #expect(other.argmaxKey != layer.argmaxKey)
    }
}
