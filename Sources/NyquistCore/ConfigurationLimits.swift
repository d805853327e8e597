/// The explicit upper bound of every integer and real operator option.
///
/// Every configuration checks its options against these before it stores them, with
/// overflow-safe arithmetic, so that no option value can trap, make a kernel index wrap, or make
/// the package allocate or compile without bound. The bounds are far above what published
/// networks use (windows of 2 or 3, strides of 2, pad offsets of 0 or 1, 8 groups, shifts of a
/// quarter of the map) and low enough that every derived size (padded axes, parameter counts,
/// `-D` specialisations) fits a 32-bit kernel integer.
///
/// A value outside its range is a ``NyquistError`` of kind `.invalidConfiguration` whose message
/// names the option, the value and the range.
public enum ConfigurationLimits {
    /// Largest channel count C of any layer (2^20). Every kernel indexes channels with 32-bit
    /// integers, and parameter tensors grow with C (AdaptiveBlurPool's with C^2).
    public static let channels = 1 << 20
    /// Largest window (kernel) of max and average pooling. The window is a compile-time
    /// constant of its kernel; 255 compiles in about 4 s on PoCL.
    public static let windowSize = 255
    /// Largest stride of every strided operator.
    public static let stride = 255
    /// Largest BlurPool / MaxBlurPool pad offset (added to each side).
    public static let padOffset = 255
    /// Largest (odd) kernel of TIPS's psi convolution.
    public static let tipsKernelSize = 31
    /// Largest |shift| of TIPS's L_undo target on each axis.
    public static let maximumShift = 65_535
    /// Largest weight of a loss or regulariser term (TIPS's lambda_FM and lambda_undo,
    /// LiftPool's lambda_u and lambda_p); weights are finite and >= 0.
    public static let lossWeight = 1e6
    /// Largest axis a target size may name (LiftUpPool's height and width): the 32-bit kernel
    /// index limit.
    public static let axisSize = maximumDeviceElementCount

    /// Throws unless `value` lies in `range`; `name` is the option as a person reads it
    /// ("pad offset"), `layer` the operator's name.
    public static func check(_ value: Int, _ name: String, in range: ClosedRange<Int>, layer: String) throws {
        guard range.contains(value) else {
            throw NyquistError(
                .invalidConfiguration,
                "\(layer): \(name) \(value) is outside \(range.lowerBound)...\(range.upperBound)")
        }
    }

    /// Throws unless `value` is a finite weight in 0...``lossWeight``.
    public static func checkWeight(_ value: Double, _ name: String, layer: String) throws {
        guard value.isFinite, value >= 0, value <= lossWeight else {
            throw NyquistError(
                .invalidConfiguration,
                "\(layer): \(name) \(value) is outside 0...\(lossWeight) (a finite, non-negative weight)")
        }
    }

    /// The product of `factors` when it fits the 32-bit element limit; otherwise a `.sizeLimit`
    /// error that names `what` and its factors. Overflow-safe for any `Int` factors >= 0.
    public static func elementCount(_ factors: [Int], of what: String, layer: String) throws -> Int {
        var count = 1
        for factor in factors {
            let (product, overflow) = count.multipliedReportingOverflow(by: factor)
            guard factor >= 0, !overflow, product <= maximumDeviceElementCount else {
                let shown = factors.map(String.init).joined(separator: " x ")
                throw NyquistError(
                    .sizeLimit, "\(layer): \(what) (\(shown)) exceeds the limit of 2^31 - 1 elements")
            }
            count = product
        }
        return count
    }
}
