import NyquistCore
import Testing

/// Option values at and beyond every bound of ``ConfigurationLimits``: the extremes a fuzzer or a
/// typo produces (2^31, 2^62, Int.max, negatives) must give `.invalidConfiguration` (or
/// `.sizeLimit`) naming the option, never a trap; the bounds themselves must be accepted.
@Suite("Configuration limits")
struct ConfigurationLimitTests {
    static let extremes = [-1, 1 << 31, 1 << 62, Int.max, Int.min]

    @Test(arguments: extremes)
    func windowOptions(value: Int) {
        expectError(.invalidConfiguration, "kernel size") { try MaxPool2DConfiguration(kernelSize: value) }
        expectError(.invalidConfiguration, "stride") { try AvgPool2DConfiguration(kernelSize: 2, stride: value) }
        expectError(.invalidConfiguration) { try MaxPool2DConfiguration(kernelSize: 3, padding: value) }
        expectError(.invalidConfiguration, "pad offset") { try BlurPool2DConfiguration(channels: 1, padOffset: value) }
        expectError(.invalidConfiguration, "stride") { try BlurPool2DConfiguration(channels: 1, stride: value) }
        expectError(.invalidConfiguration, "stride") { try MaxBlurPool2DConfiguration(channels: 1, stride: value) }
        expectError(.invalidConfiguration, "channels") { try BlurPool2DConfiguration(channels: value) }
        expectError(.invalidConfiguration) { try BlurPool2DConfiguration(channels: 1, filterSize: value) }
    }

    @Test(arguments: extremes)
    func learnedOperatorOptions(value: Int) {
        expectError(.invalidConfiguration, "kernel size") { try TIPSPool2DConfiguration(channels: 4, kernelSize: value) }
        expectError(.invalidConfiguration, "channels") { try TIPSPool2DConfiguration(channels: value) }
        expectError(.invalidConfiguration, "maximum shift") {
            try ShiftGenerator(seed: 0, maxShiftH: value, maxShiftW: 1)
        }
        expectError(.invalidConfiguration) { try APSPool2DConfiguration(channels: value) }
        expectError(.invalidConfiguration) { try AdaptiveBlurPool2DConfiguration(channels: 8, groups: value) }
        expectError(.invalidConfiguration, "stride") { try AdaptiveBlurPool2DConfiguration(channels: 8, stride: value) }
        expectError(.invalidConfiguration) { try LiftPoolConfiguration(channels: value) }
        let lift = try? LiftPoolConfiguration(channels: 2)
        let bands = try? Shape4D(n: 1, c: 2, h: 4, w: 4)
        if let lift, let bands {
            expectError(.invalidConfiguration, "target W") {
                try lift.checkInverse(bandShape: bands, targetHeight: 8, targetWidth: value)
            }
        }
    }

    @Test func weights() {
        for bad in [-1, Double.nan, Double.infinity, 1e7, -Double.infinity] {
            expectError(.invalidConfiguration, "lambda_FM") { try TIPSLossWeights(fm: bad) }
            expectError(.invalidConfiguration, "lambda_undo") { try TIPSLossWeights(undo: bad) }
            expectError(.invalidConfiguration, "lambda_u") { try LiftPoolConfiguration(channels: 1, lambdaU: bad) }
            expectError(.invalidConfiguration, "lambda_p") { try LiftPoolConfiguration(channels: 1, lambdaP: bad) }
        }
        #expect((try? TIPSLossWeights(fm: ConfigurationLimits.lossWeight, undo: 0)) != nil)
        #expect(TIPSLossWeights.none.fm == 0 && TIPSLossWeights.none.undo == 0)
    }

    @Test func theBoundsThemselvesAreAccepted() throws {
        _ = try MaxPool2DConfiguration(kernelSize: ConfigurationLimits.windowSize, stride: ConfigurationLimits.stride)
        _ = try BlurPool2DConfiguration(
            channels: ConfigurationLimits.channels, stride: ConfigurationLimits.stride,
            padOffset: ConfigurationLimits.padOffset)
        _ = try TIPSPool2DConfiguration(channels: 1, kernelSize: ConfigurationLimits.tipsKernelSize)
        _ = try ShiftGenerator(
            seed: 1, maxShiftH: ConfigurationLimits.maximumShift, maxShiftW: ConfigurationLimits.maximumShift)
        expectError(.invalidConfiguration, "outside 1...255") { try MaxPool2DConfiguration(kernelSize: 256) }
        expectError(.invalidConfiguration, "outside 0...255") { try BlurPool2DConfiguration(channels: 1, padOffset: 256) }
        expectError(.invalidConfiguration) { try TIPSPool2DConfiguration(channels: 1, kernelSize: 33) }
    }

    /// AdaptiveBlurPool's conv.weight grows with G * C: 8192 groups of 8192 channels would be
    /// 5.4e9 elements (21.7 GB); the configuration refuses it before anything is allocated.
    @Test func adaptiveParameterSizeIsBounded() {
        expectError(.sizeLimit, "conv.weight") { try AdaptiveBlurPool2DConfiguration(channels: 8192, groups: 8192) }
        #expect((try? AdaptiveBlurPool2DConfiguration(channels: 512, kernelSize: 3, groups: 8)) != nil)
    }

    @Test func elementCountIsOverflowSafe() throws {
        #expect(try ConfigurationLimits.elementCount([3, 4, 5], of: "x", layer: "test") == 60)
        expectError(.sizeLimit, "x") { try ConfigurationLimits.elementCount([Int.max, 2], of: "x", layer: "test") }
        expectError(.sizeLimit) { try ConfigurationLimits.elementCount([1 << 16, 1 << 16], of: "x", layer: "test") }
        expectError(.sizeLimit) { try ConfigurationLimits.elementCount([-1], of: "x", layer: "test") }
    }
}
