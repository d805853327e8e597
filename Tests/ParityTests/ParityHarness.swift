import Nyquist
import NyquistCL
import NyquistCore
import Testing
import _NyquistTestSupport

/// The device every parity test runs on (NYQUIST_DEVICE picks another). Without any OpenCL
/// device the suite fails rather than skips: a parity suite that silently runs nothing would
/// pass CI while checking nothing.
enum TestDevice {
    // Programs are cached in memory only: the suite builds hundreds of specialisations, which
    // would otherwise pile up in the user's disk cache (the disk cache has its own tests).
    static let shared: Result<Device, any Error> = Result {
        try Device(OpenCLDevice.select(nil), programCache: .memoryOnly)
    }

    static func get() throws -> Device {
        try shared.get()
    }

    /// A device with a context of its own, for tests that read its counters.
    static func fresh() throws -> Device {
        try Device(get().info, programCache: .memoryOnly)
    }
}

/// An output tensor placed inside a larger buffer whose two guard regions hold a sentinel, so
/// a kernel that writes even one element outside its output is caught.
struct GuardedTensor {
    static let sentinel: Float = -7.0e30
    let tensor: DeviceTensor
    let parent: OpenCLBuffer
    let guardCount: Int

    init(shape: [Int], on device: Device) throws {
        let count = try HostTensor.elementCount(of: shape)
        guardCount = max(device.context.baseAddressAlignment / 4, 64)
        parent = try device.context.makeBuffer(byteCount: (count + 2 * guardCount) * 4)
        try device.context.fill(parent, with: Self.sentinel)
        let view = try device.context.makeSubBuffer(of: parent, offset: guardCount * 4, byteCount: count * 4)
        tensor = try DeviceTensor(shape: shape, buffer: view, device: device)
    }

    /// Indices of guard elements that no longer hold the sentinel.
    func damagedGuards() throws -> [Int] {
        let values = try tensor.device.context.read(parent, count: parent.floatCount)
        let count = tensor.count
        let guardIndices = Array(0..<guardCount) + Array((guardCount + count)..<(2 * guardCount + count))
        return guardIndices.filter { values[$0] != Self.sentinel }
    }
}

/// Per-operator tolerances on max|y - y_ref| / max(max|y_ref|, max|x|) (forward; backward uses
/// the gradients and max|grad_y|). See docs/parity.md.
///
/// The device accumulates in Float, the reference in Double. A window sum of at most 7x7 = 49
/// products with non-negative weights summing to 1 has a rounding error below
/// 49 * 2^-24 * max|x| ~ 2.9e-6 max|x|; 1e-5 leaves a ~3x margin over that worst case (the
/// largest error seen is ~3e-7). Backward sums at most 49 such products per input element
/// (reflection can fold a few more onto border samples), the same bound. Max pooling only
/// selects values, so its forward must match exactly.
enum Tolerance {
    static let maxPoolForward = 0.0
    static let window = 1e-5
}

/// Everything a parity check needs from one operator: the device layer and the reference.
struct ParityCase<Layer: PoolingLayer> {
    let layer: Layer
    let tolerance: Double
    let backwardTolerance: Double
    let reference: (HostTensor) throws -> HostTensor
    let referenceBackward: (_ gradOutput: HostTensor, _ input: HostTensor) throws -> HostTensor

    /// Forward, training forward and backward of `layer` on `shape` against the reference, with
    /// guarded outputs; records issues naming the shape and configuration. `device` defaults to
    /// the shared test device (tests that pin launch parameters bring their own).
    @discardableResult
    func check(shape: [Int], seed: UInt64, input: HostTensor? = nil, on device: Device? = nil) throws -> WorstErrors {
        let device = try device ?? TestDevice.get()
        let label = "\(layer.configuration) on \(shape)"
        let operatorName = "\(Layer.self)"
        let x = try input ?? randomTensor(shape, seed: seed)
        let deviceInput = try DeviceTensor(x, on: device)

        let expected: HostTensor
        do {
            expected = try reference(x)
        } catch let referenceError as NyquistError {
            // The device layer must refuse the same input with the same kind of error.
            do {
                _ = try layer(deviceInput)
                Issue.record("\(label): reference threw \(referenceError) but the device layer did not")
            } catch let deviceError as NyquistError {
                #expect(deviceError.kind == referenceError.kind, "\(label): \(deviceError) vs \(referenceError)")
            }
            return WorstErrors()
        }

        // Inference forward into a guarded output.
        let output = try GuardedTensor(shape: expected.shape, on: device)
        try layer.forward(deviceInput, into: output.tensor)
        let forward = Discrepancy(
            actual: try output.tensor.toHost().values, expected: expected.values, magnitudeFloor: finiteMagnitude(x))
        #expect(forward.within(tolerance), "\(label) forward: \(forward)")
        ParityReport.record(.window, operatorName, "forward", tolerance: tolerance, forward, shape: shape, label: label)
        let forwardGuards = try output.damagedGuards()
        #expect(forwardGuards.isEmpty, "\(label) forward wrote outside its output at guard slots \(forwardGuards.prefix(5))")

        // Training forward gives the same output.
        let (trainingOutput, saved) = try layer.forwardTraining(deviceInput)
        let training = Discrepancy(
            actual: try trainingOutput.toHost().values, expected: expected.values, magnitudeFloor: finiteMagnitude(x))
        #expect(training.within(tolerance), "\(label) training forward: \(training)")
        ParityReport.record(.window, operatorName, "training forward", tolerance: tolerance, training, shape: shape, label: label)

        // Backward against the reference's, into a guarded gradient.
        let gradOutput = try randomTensor(expected.shape, seed: seed &+ 1)
        let expectedGradient = try referenceBackward(gradOutput, x)
        let gradient = try GuardedTensor(shape: x.shape, on: device)
        try layer.backward(try DeviceTensor(gradOutput, on: device), saved, into: gradient.tensor)
        let backward = Discrepancy(
            actual: try gradient.tensor.toHost().values, expected: expectedGradient.values,
            magnitudeFloor: finiteMagnitude(gradOutput))
        #expect(backward.within(backwardTolerance), "\(label) backward: \(backward)")
        ParityReport.record(.window, operatorName, "backward", tolerance: backwardTolerance, backward, shape: shape, label: label)
        let backwardGuards = try gradient.damagedGuards()
        #expect(
            backwardGuards.isEmpty, "\(label) backward wrote outside its gradient at guard slots \(backwardGuards.prefix(5))")
        return WorstErrors(forward: forward.relativeError, backward: backward.relativeError)
    }

    /// Runs ``check(shape:seed:input:)`` over the whole spatial and batch/channel grid.
    /// Returns the worst relative errors, which the tests print (docs/parity.md collects them).
    @discardableResult
    func checkGrid(channels: Int? = nil, seed: UInt64) throws -> WorstErrors {
        var worst = WorstErrors()
        for (index, (h, w)) in paritySpatialSizes.enumerated() {
            for (n, c) in parityBatchChannels {
                worst.merge(try check(shape: [n, channels ?? c, h, w], seed: seed &+ UInt64(index * 17 + n * 3 + c)))
            }
        }
        return worst
    }
}

/// Largest relative errors over a set of checks.
struct WorstErrors: CustomStringConvertible {
    var forward = 0.0
    var backward = 0.0

    mutating func merge(_ other: WorstErrors) {
        forward = max(forward, other.forward)
        backward = max(backward, other.backward)
    }

    var description: String { "worst relative error forward \(forward), backward \(backward)" }
}
