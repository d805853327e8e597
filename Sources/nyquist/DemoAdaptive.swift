import Foundation
import Nyquist
import NyquistCore
import NyquistReference

extension Demo {
    /// One adaptive-blur-pool row: default options (k 3, stride 2, G gcd(8, C), reflect, joint
    /// softmax), Kaiming-initialised parameters (seed 0). Forward is inference; backward is the
    /// training forward then backward, and its error is the largest over the input gradient and
    /// the three parameter gradients.
    func measureAdaptive(label: String, x: HostTensor, backward: Bool, on device: Device, random: inout SplitMix64)
        throws -> Row
    {
        let inputShape = try Shape4D(x.shape)
        let configuration = try AdaptiveBlurPool2DConfiguration(channels: inputShape.c)
        let parameters = AdaptiveBlurPool2DParameters<Float>(configuration: configuration, seed: 0)
        let layer = try AdaptiveBlurPool2D(configuration, parameters: parameters, on: device)
        let xDevice = try DeviceTensor(x, on: device)
        let outputShape = try configuration.outputShape(for: inputShape)
        let clock = ContinuousClock()
        var deviceSeconds = 0.0
        var error = 0.0
        let referenceDuration: Duration
        if backward {
            let gradOutput = try random.tensor(outputShape.dimensions)
            let gradOutputDevice = try DeviceTensor(gradOutput, on: device)
            let (_, _, saved) = try layer.forwardTraining(xDevice)
            _ = try layer.backward(gradOutputDevice, saved)
            try device.synchronize()
            let (gradients, seconds) = try device.measure { try layer.backward(gradOutputDevice, saved) }
            deviceSeconds = seconds
            var expected: Reference.AdaptiveGradients<Float>?
            referenceDuration = try clock.measure {
                let forward = try Reference.adaptiveBlurPool2DTraining(x, parameters: parameters, configuration)
                expected = try Reference.adaptiveBlurPool2DBackward(
                    gradOutput: gradOutput, saved: forward.saved, configuration)
            }
            guard let expected else { throw CLIFailure("the reference backward produced no result") }
            error = try Self.maxRelativeError(gradients.input.toHost(), expected.input)
            for (name, tensor) in expected.parameters {
                guard let actual = gradients.parameters[name] else { return row(label, x, outputShape, 0, 0, .nan, backward) }
                error = max(error, try Self.maxRelativeError(actual.toHost(), tensor))
            }
        } else {
            _ = try layer(xDevice)
            try device.synchronize()
            let (y, seconds) = try device.measure { try layer(xDevice) }
            deviceSeconds = seconds
            var expected: HostTensor?
            referenceDuration = try clock.measure {
                expected = try Reference.adaptiveBlurPool2D(x, parameters: parameters, configuration).output
            }
            guard let expected else { throw CLIFailure("the reference forward produced no result") }
            error = try Self.maxRelativeError(y.toHost(), expected)
        }
        let referenceSeconds =
            Double(referenceDuration.components.seconds) + Double(referenceDuration.components.attoseconds) * 1e-18
        return row(label, x, outputShape, deviceSeconds, referenceSeconds, error, backward)
    }

    private func row(
        _ label: String, _ x: HostTensor, _ output: Shape4D, _ deviceSeconds: Double, _ referenceSeconds: Double,
        _ error: Double, _ backward: Bool
    ) -> Row {
        Row(
            op: AdaptiveBlurPool2DConfiguration.operatorName, pass: backward ? "backward" : "forward", input: label,
            shape: Format.shape(x.shape), outputShape: Format.shape(output.dimensions),
            deviceMilliseconds: deviceSeconds * 1e3, referenceMilliseconds: referenceSeconds * 1e3,
            speedUp: deviceSeconds > 0 ? referenceSeconds / deviceSeconds : 0, maxRelativeError: error)
    }
}
