import Foundation
import Nyquist
import NyquistCore
import NyquistReference
import Testing
import _NyquistTestSupport

/// The measures of SPEC.md section 6 (Sources/Nyquist/ShiftInvariance.swift) on operators whose
/// answer is known from their definition, on the CPU reference and on the device.
@Suite("Shift invariance measures")
struct ShiftInvarianceTests {
    /// Plain stride-2 subsampling x[:, :, ::2, ::2]: the operator with no anti-aliasing at all.
    static func subsample(_ x: HostTensor) throws -> HostTensor {
        let shape = try Shape4D(x.shape)
        let height = (shape.h + 1) / 2
        let width = (shape.w + 1) / 2
        return try HostTensor(shape: [shape.n, shape.c, height, width]) { index in
            let j = index % width
            let i = (index / width) % height
            let plane = index / (width * height)
            return x.values[plane * shape.h * shape.w + 2 * i * shape.w + 2 * j]
        }
    }

    /// The device layer as a host-to-host operator.
    static func onDevice<Pool: Layer>(_ layer: Pool, _ device: Device) -> ShiftInvariance.Operator
    where Pool.Input == DeviceTensor {
        { x in try layer(DeviceTensor(x, on: device)).output.toHost() }
    }

    @Test func shiftedByHand() throws {
        let x = try HostTensor(shape: [1, 1, 2, 3], values: [1, 2, 3, 4, 5, 6])
        let shift = InputShift(dy: 1, dx: -1)
        #expect(try ShiftInvariance.shifted(x, by: shift, mode: .circular).values == [5, 6, 4, 2, 3, 1])
        #expect(try ShiftInvariance.shifted(x, by: shift, mode: .zeroFilled).values == [0, 0, 0, 2, 3, 0])
    }

    @Test func outputShiftCandidates() {
        #expect(ShiftInvariance.outputShiftCandidates(inputShift: 1, stride: 2) == [0, 1])
        #expect(ShiftInvariance.outputShiftCandidates(inputShift: 2, stride: 2) == [1])
        #expect(ShiftInvariance.outputShiftCandidates(inputShift: 3, stride: 2) == [1, 2])
        #expect(ShiftInvariance.outputShiftCandidates(inputShift: 0, stride: 2) == [0])
        #expect(ShiftInvariance.outputShiftCandidates(inputShift: -3, stride: 2) == [-2, -1])
    }

    @Test(arguments: 1...4)
    func circularAPSWithPreBlurIsEquivariant(d: Int) throws {
        // Random values have no ties between phase norms, so APS picks the shifted phase.
        let x = try TestImages.random(shape: [2, 3, 32, 32], seed: 21)
        let configuration = try APSPool2DConfiguration(channels: 3, filterSize: 3)
        let device = try TestDevice.get()
        let operators: [(String, ShiftInvariance.Operator)] = [
            ("reference", { try Reference.apsPool2D($0, configuration).output }),
            ("device", Self.onDevice(APSPool2D(configuration), device)),
        ]
        for (label, pool) in operators {
            for shift in InputShift.directions(size: d) {
                let error = try ShiftInvariance.equivarianceError(of: pool, input: x, shift: shift, mode: .circular)
                #expect(error < 1e-6, "\(label) shift \(shift): \(error)")
            }
        }
    }

    @Test func circularBlurPoolIsEquivariantForEvenShiftsOnly() throws {
        let x = try TestImages.random(shape: [1, 2, 32, 32], seed: 8)
        let configuration = try BlurPool2DConfiguration(channels: 2, filterSize: 4, padding: .circular)
        let device = try TestDevice.get()
        let operators: [(String, ShiftInvariance.Operator)] = [
            ("reference", { try Reference.blurPool2D($0, configuration) }),
            ("device", Self.onDevice(BlurPool2D(configuration), device)),
        ]
        for (label, pool) in operators {
            for d in [2, 4] {
                for shift in InputShift.directions(size: d) {
                    let error = try ShiftInvariance.equivarianceError(of: pool, input: x, shift: shift, mode: .circular)
                    #expect(error < 1e-6, "\(label) shift \(shift): \(error)")
                }
            }
            // An odd shift moves the content by half an output sample, which no output shift undoes.
            let odd = try ShiftInvariance.equivarianceError(
                of: pool, input: x, shift: InputShift(dy: 1, dx: 0), mode: .circular)
            #expect(odd > 0.05, "\(label) odd shift: \(odd)")
        }
    }

    @Test func oddShiftErrorOnWhiteNoiseMatchesTheFilterAutocorrelation() throws {
        // For white noise x and a linear stride-2 filter h, D(shift(x)) and D(x) shifted by 0 or 1
        // output sample differ by a one-input-sample lag either way, so
        // err^2 = 2 (1 - rho), rho = sum h[u] h[u+1] / sum h[u]^2 per shifted axis. Binomial
        // [1,3,3,1]: rho = 15/20 = 0.75, err = sqrt(0.5) for an axis shift and
        // sqrt(2 (1 - 0.75^2)) for a diagonal one; box [1,1] (avg-pool): rho = 1/2, err = 1 and sqrt(1.5).
        let x = try TestImages.random(shape: [2, 4, 64, 64], seed: 17)
        let blur = try BlurPool2DConfiguration(channels: 4, padding: .circular)
        let average = try AvgPool2DConfiguration(kernelSize: 2)
        let cases: [(String, ShiftInvariance.Operator, Double)] = [
            ("blur-pool", { try Reference.blurPool2D($0, blur) }, 0.75), ("avg-pool", { try Reference.avgPool2D($0, average) }, 0.5),
        ]
        for (label, pool, rho) in cases {
            let axis = try ShiftInvariance.equivarianceError(of: pool, input: x, shift: InputShift(dy: 1, dx: 0), mode: .circular)
            let diagonal = try ShiftInvariance.equivarianceError(of: pool, input: x, shift: InputShift(dy: 1, dx: 1), mode: .circular)
            // 8192 output samples: a sampling spread of a few percent.
            #expect(abs(axis - (2 * (1 - rho)).squareRoot()) < 0.04, "\(label) axis \(axis)")
            #expect(abs(diagonal - (2 * (1 - rho * rho)).squareRoot()) < 0.04, "\(label) diagonal \(diagonal)")
        }
    }

    @Test func zeroFilledEvenShiftsAreExactInsideTheMargin() throws {
        // Away from the border a zero-filled shift is a circular one; reflect padding differs
        // from the shifted content only within the margin.
        let x = try TestImages.random(shape: [1, 2, 40, 40], seed: 3)
        let blur = try BlurPool2DConfiguration(channels: 2)
        let maxPool = try MaxPool2DConfiguration(kernelSize: 2)
        for shift in InputShift.directions(size: 2) + InputShift.directions(size: 4) {
            let blurError = try ShiftInvariance.equivarianceError(
                of: { try Reference.blurPool2D($0, blur) }, input: x, shift: shift, mode: .zeroFilled)
            let maxError = try ShiftInvariance.equivarianceError(
                of: { try Reference.maxPool2D($0, maxPool) }, input: x, shift: shift, mode: .zeroFilled)
            #expect(blurError < 1e-6, "blur \(shift): \(blurError)")
            #expect(maxError == 0, "max \(shift): \(maxError)")
        }
        // Without a margin the reflect-padded border differs from the zero-filled one.
        let bordered = try ShiftInvariance.equivarianceError(
            of: { try Reference.blurPool2D($0, blur) }, input: x, shift: InputShift(dy: 2, dx: 2), mode: .zeroFilled,
            borderMargin: 0)
        #expect(bordered > 1e-3, "border included: \(bordered)")
    }

    @Test func alignmentIsChosenPerSample() throws {
        // Sample 0 is loudest on its even rows, sample 1 on its odd rows, so APS keeps row phase
        // 0 for one and 1 for the other. After a one-row shift the first sample's output stays
        // in place and the second's moves down one row: one alignment for the whole batch would
        // leave one of them misaligned.
        var x = try TestImages.random(shape: [2, 1, 16, 16], seed: 4)
        for index in x.values.indices {
            let row = (index / 16) % 16
            let sample = index / 256
            if row % 2 == sample { x.values[index] *= 3 }
        }
        let configuration = try APSPool2DConfiguration(channels: 1)
        let phases = try Reference.apsPool2D(x, configuration).indices
        #expect(phases.map { $0 % 2 } == [0, 1], "phases \(phases)")
        let error = try ShiftInvariance.equivarianceError(
            of: { try Reference.apsPool2D($0, configuration).output }, input: x, shift: InputShift(dy: 1, dx: 0),
            mode: .circular)
        #expect(error < 1e-7, "\(error)")
    }

    @Test func maximumSamplingBiasOfMaxAndAveragePooling() throws {
        let x = try TestImages.random(shape: [2, 3, 33, 32], seed: 12)
        let maxPool = try MaxPool2DConfiguration(kernelSize: 2)
        let avgPool = try AvgPool2DConfiguration(kernelSize: 2)
        let device = try TestDevice.get()
        #expect(try ShiftInvariance.maximumSamplingBias(of: { try Reference.maxPool2D($0, maxPool) }, input: x) == 1)
        #expect(try ShiftInvariance.maximumSamplingBias(of: Self.onDevice(MaxPool2D(maxPool), device), input: x) == 1)
        #expect(try ShiftInvariance.maximumSamplingBias(of: { try Reference.avgPool2D($0, avgPool) }, input: x) < 0.01)
        #expect(try ShiftInvariance.maximumSamplingBias(of: Self.onDevice(AvgPool2D(avgPool), device), input: x) < 0.01)
        // Subsampling picks the window's top-left value: the maximum in about 1 case of 4.
        let subsampled = try ShiftInvariance.maximumSamplingBias(of: Self.subsample, input: x)
        #expect(abs(subsampled - 0.25) < 0.05, "\(subsampled)")
    }

    @Test func aliasedFractionOfSubsamplingAndBlurPool() throws {
        let zonePlate = try TestImages.zonePlate(size: 64, channels: 2)
        let blur = try BlurPool2DConfiguration(channels: 2)
        let device = try TestDevice.get()
        let subsampled = try ShiftInvariance.aliasedEnergyFraction(of: Self.subsample, input: zonePlate)
        let blurred = try ShiftInvariance.aliasedEnergyFraction(of: { try Reference.blurPool2D($0, blur) }, input: zonePlate)
        let blurredOnDevice = try ShiftInvariance.aliasedEnergyFraction(
            of: Self.onDevice(BlurPool2D(blur), device), input: zonePlate)
        // About 3/4 of the zone plate's energy lies outside |f| < 1/4 on both axes.
        #expect(subsampled > 0.6, "\(subsampled)")
        #expect(blurred < subsampled / 2, "blur \(blurred), subsampling \(subsampled)")
        #expect(abs(blurredOnDevice - blurred) < 1e-4, "device \(blurredOnDevice), reference \(blurred)")
    }

    @Test func aliasedFractionIsZeroForAnIdealLowPassAndOneForPureHighFrequencies() throws {
        let zonePlate = try TestImages.zonePlate(size: 32)
        let ideal: ShiftInvariance.Operator = { x in
            try Self.subsample(ShiftInvariance.lowPassSplit(x, cutoff: 0.25).low)
        }
        #expect(try ShiftInvariance.aliasedEnergyFraction(of: ideal, input: zonePlate) < 1e-10)
        // cos(2 pi 0.375 j) lies wholly above the output Nyquist limit 0.25: every output value aliases.
        let high = try HostTensor(shape: [1, 1, 32, 32]) { index in Float(cos(2 * Double.pi * 0.375 * Double(index % 32))) }
        let fraction = try ShiftInvariance.aliasedEnergyFraction(of: Self.subsample, input: high)
        #expect(abs(fraction - 1) < 1e-6, "\(fraction)")
    }

    @Test func lowPassSplitAddsUp() throws {
        let x = try TestImages.random(shape: [1, 2, 12, 10], seed: 2)
        let (low, high) = try ShiftInvariance.lowPassSplit(x, cutoff: 0.25)
        for index in x.values.indices { #expect(abs(low.values[index] + high.values[index] - x.values[index]) < 1e-5) }
    }

    @Test func tooSmallForTheMarginIsAnError() {
        let x = try? TestImages.random(shape: [1, 1, 16, 16], seed: 1)
        #expect(throws: NyquistError.self) {
            guard let x else { return }
            _ = try ShiftInvariance.equivarianceError(
                of: Self.subsample, input: x, shift: InputShift(dy: 4, dx: 0), mode: .zeroFilled)
        }
    }
}
