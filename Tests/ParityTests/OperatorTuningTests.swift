import Foundation
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

@testable import Nyquist

/// The polyphase, LiftPool and AdaptiveBlurPool families in the tuning database: a round trip
/// keeps their knobs, entries with values their kernels cannot take fall back to the built-in
/// defaults, and a layer run with such a file still matches the reference.
@Suite("Launch-parameter tuning of the polyphase, lift and adaptive families", .serialized)
struct OperatorTuningTests {
    private static func temporaryFolder() throws -> String {
        let path = NSTemporaryDirectory() + "nyquist-operator-tuning-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test("every family is tunable, with the built-in default among its candidates")
    func families() throws {
        let device = try TestDevice.get()
        let families = try OperatorTuning.families()
        #expect(families.map(\.name) == ["aps", "tips-forward", "lift", "adaptive-forward"])
        let windowFamilies = try WindowTuning.families().count
        let allFamilies = try KernelTuner.allFamilies().count
        #expect(allFamilies == families.count + windowFamilies)
        // The defaults must be candidates, so that tuning can only keep or beat them.
        for family in try KernelTuner.allFamilies() {
            for (shapeClass, _) in family.shapeClasses {
                let builtIn = family.builtIn(shapeClass: shapeClass, on: device)
                #expect(family.candidates.contains(builtIn), "\(family.name): \(builtIn)")
                #expect(family.accepts(builtIn, on: device), "\(family.name)")
            }
            #expect(family.candidates.allSatisfy { $0.base.isUsable }, "\(family.name)")
        }
    }

    @Test("database round trip with the new families' knobs")
    func roundTrip() throws {
        let folder = try Self.temporaryFolder()
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/tuning/device.json"
        let database = TuningDatabase(
            device: "some device",
            entries: [
                "aps/large": AnyLaunchKnobs(APSKnobs(groupSize: 128, localSize: [16, 4, 1])),
                "tips-forward/all": AnyLaunchKnobs(TIPSKnobs(groupSize: 32, elementsPerGroup: 1024, bandElements: 0)),
                "lift/narrow": AnyLaunchKnobs(LiftKnobs(run: 2)),
                "adaptive-forward/all": AnyLaunchKnobs(
                    AdaptiveKnobs(tiled: true, positions: 3, outVectors: 2, rowGradients: false)),
                "window-forward/wide": AnyLaunchKnobs(WindowKnobs(outputsPerItem: 8, localSize: [64, 8, 1])),
            ])
        try database.save(path: path)
        #expect(TuningDatabase.load(path: path, deviceName: "some device") == database)
        // A file written before these families existed (no new keys) still reads, and so does
        // one written when every family's knobs were one type (knobs of other families unset,
        // outputsPerItem always there); entries that decode as no family's knobs are left out.
        let old = #"{"device": "some device", "entries": {"window-forward/wide": {"outputsPerItem": 4}}}"#
        try old.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(
            TuningDatabase.load(path: path, deviceName: "some device")?.entries["window-forward/wide"]
                == AnyLaunchKnobs(WindowKnobs(outputsPerItem: 4)))
        let union = #"""
            {"device": "some device", "entries": {
              "aps/small": {"outputsPerItem": 1, "groupSize": 32, "localSize": [8, 8, 1]},
              "lift/wide": {"outputsPerItem": 1, "run": 4},
              "lift/narrow": {"outputsPerItem": 4},
              "unknown-family/all": {"outputsPerItem": 2}}}
            """#
        try union.write(toFile: path, atomically: true, encoding: .utf8)
        let loaded = try #require(TuningDatabase.load(path: path, deviceName: "some device"))
        #expect(loaded.knobs(APSKnobs.self, family: "aps", shapeClass: "small") == APSKnobs(groupSize: 32, localSize: [8, 8, 1]))
        #expect(loaded.knobs(LiftKnobs.self, family: "lift", shapeClass: "wide") == LiftKnobs(run: 4))
        #expect(loaded.entries.count == 2)
    }

    @Test("tuned entries are read; out-of-range and foreign entries give the defaults")
    func lookup() throws {
        let device = try TestDevice.fresh()
        let folder = try Self.temporaryFolder()
        defer {
            device.reloadTuningDatabase(path: folder + "/none.json")
            try? FileManager.default.removeItem(atPath: folder)
        }
        let path = folder + "/tuning/device.json"
        let aps = APSKnobs.builtIn(shapeClass: "large", on: device).groupSize
        let tips = PolyphaseLaunch.choose(for: device)
        let lift = LiftKnobs.builtIn(shapeClass: "wide", on: device).run
        let adaptive = AdaptiveKnobs.builtIn(shapeClass: AdaptiveLaunch.shapeClass, on: device)
        let config = try AdaptiveBlurPool2DConfiguration(channels: 8)

        // In range: used.
        try TuningDatabase(
            device: device.name,
            entries: [
                "aps/large": AnyLaunchKnobs(APSKnobs(groupSize: 16, localSize: [16, 4, 1])),
                "tips-forward/all": AnyLaunchKnobs(TIPSKnobs(groupSize: 32, elementsPerGroup: 1024)),
                "lift/narrow": AnyLaunchKnobs(LiftKnobs(run: 2)),
                "adaptive-forward/all": AnyLaunchKnobs(AdaptiveKnobs(tiled: true, positions: 2, outVectors: 4)),
            ]
        ).save(path: path)
        device.reloadTuningDatabase(path: path)
        #expect(PolyphaseLaunch.chooseAPS(for: device, height: 64) == APSKnobs(groupSize: 16, localSize: [16, 4, 1]))
        #expect(PolyphaseLaunch.chooseAPS(for: device, height: 8).groupSize == aps)
        #expect(PolyphaseLaunch.choose(for: device) == TIPSKnobs(groupSize: 32, elementsPerGroup: 1024))
        #expect(LiftLaunch.choose(for: device, band: 7).run == 2)
        #expect(LiftLaunch.choose(for: device, band: 56).run == lift)
        #expect(
            AdaptiveLaunch.choose(for: device, configuration: config)
                == AdaptiveLaunch(tiled: true, positions: 2, outVectors: 4, local: nil))

        // Out of range, the wrong family's knobs, or beyond the device: the built-in defaults.
        try TuningDatabase(
            device: device.name,
            entries: [
                "aps/large": AnyLaunchKnobs(APSKnobs(groupSize: 48)),  // not a power of two
                "aps/small": AnyLaunchKnobs(APSKnobs(groupSize: 1 << 30)),  // beyond any device
                "tips-forward/all": AnyLaunchKnobs(APSKnobs(groupSize: 64)),  // elementsPerGroup missing
                "lift/narrow": AnyLaunchKnobs(LiftKnobs(run: 0)),
                "lift/wide": AnyLaunchKnobs(WindowKnobs(outputsPerItem: 4)),  // a window entry under lift's key
                "adaptive-forward/all": AnyLaunchKnobs(AdaptiveKnobs(tiled: true, positions: 9, outVectors: 2)),
            ]
        ).save(path: path)
        device.reloadTuningDatabase(path: path)
        #expect(PolyphaseLaunch.chooseAPS(for: device, height: 64) == APSKnobs(groupSize: aps))
        #expect(PolyphaseLaunch.chooseAPS(for: device, height: 8) == APSKnobs(groupSize: aps))
        #expect(PolyphaseLaunch.choose(for: device) == tips)
        #expect(LiftLaunch.choose(for: device, band: 7).run == lift)
        #expect(LiftLaunch.choose(for: device, band: 56).run == lift)
        #expect(
            AdaptiveLaunch.choose(for: device, configuration: config)
                == AdaptiveLaunch(
                    tiled: true, positions: adaptive.positions, outVectors: adaptive.outVectors, local: nil))

        // A pin with a value the kernels cannot take is refused with a typed error.
        #expect(throws: NyquistError.self) {
            try withPinnedKnobs(LiftKnobs(run: 64), family: LiftLaunch.family, shapeClass: "wide") {}
        }
        #expect(throws: NyquistError.self) {
            try withPinnedKnobs(APSKnobs(groupSize: 24), family: PolyphaseLaunch.apsFamily, shapeClass: "large") {}
        }

        // The layers still run with the broken file and match the reference.
        let x = try randomTensor([2, 3, 13, 14], seed: 11)
        let input = try DeviceTensor(x, on: device)
        let liftConfig = try LiftPoolConfiguration(channels: 3)
        let liftParameters = LiftPoolParityTests.parameters(liftConfig, seed: 12)
        let pool = try LiftDownPool2D(liftConfig, parameters: liftParameters, on: device)
        let (expectedLift, _) = try Reference.liftDownPool2D(x, liftParameters, liftConfig)
        let liftError = Discrepancy(actual: try pool(input).output.toHost().values, expected: expectedLift.output.values)
        #expect(liftError.within(LiftPoolParityTests.tolerance), "lift: \(liftError)")
        let tipsLayer = try TIPSPool2D(channels: 3, seed: 13, on: device)
        let expectedTips = try Reference.tipsPool2D(x, tipsLayer.configuration, parameters: try tipsLayer.parameterValues())
        let tipsOutput = try DeviceTensor(shape: expectedTips.output.shape, on: device)
        try tipsLayer.forward(input, into: tipsOutput)
        let tipsError = Discrepancy(actual: try tipsOutput.toHost().values, expected: expectedTips.output.values)
        #expect(tipsError.within(PolyphaseTolerance.tipsForward), "tips: \(tipsError)")
    }
}
