/// The OpenCL C sources of Nyquist, embedded in the binary at build time so that nothing is
/// looked up on disk at run time (set `NYQUIST_KERNEL_DIR` to load them from a folder instead
/// while developing kernels).
public enum KernelSources {
    /// Every embedded file by name (`blur_pool.cl`, `common.h`, ...).
    public static let files: [String: String] = [
        "common.h": text(PackageResources.common_h),
        "copy.cl": text(PackageResources.copy_cl),
        "max_pool.cl": text(PackageResources.max_pool_cl),
        "blur_pool.cl": text(PackageResources.blur_pool_cl),
        "window_vector.h": text(PackageResources.window_vector_h),
        "reduce_lanes.h": text(PackageResources.reduce_lanes_h),
        "aps.cl": text(PackageResources.aps_cl),
        "tips.cl": text(PackageResources.tips_cl),
        "lift_pool.cl": text(PackageResources.lift_pool_cl),
        "adaptive_blur_pool.cl": text(PackageResources.adaptive_blur_pool_cl),
        "peak.cl": text(PackageResources.peak_cl),
    ]

    private static func text(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self)
    }
}
