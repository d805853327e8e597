import NyquistCore

/// The tuner's view of the polyphase (APSPool2D, TIPSPool2D forward), LiftPool and
/// AdaptiveBlurPool kernel families: what `nyquist-bench --tune` measures and saves for this
/// device next to the window families (``WindowTuning``).
package enum OperatorTuning {
    /// The tunable families, each with its knob type's candidates:
    /// * `aps`: APSPool2D forward (aps_partial_norms, aps_pick, aps_gather) and backward (aps_scatter) with
    ///   saved indices; shape classes "large" and "small" (padded height >= 32 rows or not).
    /// * `tips-forward`: TIPSPool2D inference forward (tips_forward), one shape class "all".
    /// * `lift`: LiftDownPool2D forward then LiftUpPool2D (K 5); shape classes "wide" and
    ///   "narrow" (bands >= 16 positions or not).
    /// * `adaptive-forward`: AdaptiveBlurPool2D inference forward with its defaults, one shape
    ///   class "all".
    package static func families() throws -> [TunableFamily] {
        [
            TunableFamily(
                name: PolyphaseLaunch.apsFamily, knobs: APSKnobs.self,
                shapeClasses: [("large", [4, 64, 64, 64]), ("small", [8, 128, 14, 14])],
                prepare: { input in
                    let layer = try APSPool2D(channels: input.shape[1])
                    let (result, saved) = try layer.forwardTraining(input)
                    let (output, indices) = (result.output, result.indices)
                    let gradInput = try DeviceTensor(shape: input.shape, on: input.device)
                    return {
                        try layer.forward(input, into: output, indices: indices, given: false)
                        try layer.backward(output, saved, into: gradInput)
                    }
                }),
            TunableFamily(
                name: PolyphaseLaunch.tipsFamily, knobs: TIPSKnobs.self,
                shapeClasses: [(PolyphaseLaunch.tipsShapeClass, [4, 64, 56, 56])],
                prepare: { input in
                    let layer = try TIPSPool2D(channels: input.shape[1], on: input.device)
                    let output = try DeviceTensor(shape: layer.outputShape(for: input).dimensions, on: input.device)
                    return { try layer.forward(input, into: output) }
                }),
            TunableFamily(
                name: LiftLaunch.family, knobs: LiftKnobs.self,
                shapeClasses: [("wide", [4, 32, 64, 64]), ("narrow", [8, 64, 14, 14])],
                prepare: { input in
                    let pool = try LiftDownPool2D(channels: input.shape[1], on: input.device)
                    let bands = try pool(input)
                    let inverse = LiftUpPool2D(inverting: pool)
                    let reconstruction = try DeviceTensor(shape: input.shape, on: input.device)
                    return {
                        try pool.forward(input, into: bands)
                        try inverse.forward(
                            LiftUpPool2DInput(bands, height: input.shape[2], width: input.shape[3]), into: reconstruction)
                    }
                }),
            TunableFamily(
                name: AdaptiveLaunch.family, knobs: AdaptiveKnobs.self,
                shapeClasses: [(AdaptiveLaunch.shapeClass, [2, 32, 56, 56])],
                prepare: { input in
                    let layer = try AdaptiveBlurPool2D(channels: input.shape[1], on: input.device)
                    let output = try layer(input)
                    return { try layer.forward(input, into: output) }
                }),
        ]
    }
}
