// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "Nyquist",
    products: [
        .library(name: "Nyquist", targets: ["Nyquist"]),
        .library(name: "NyquistReference", targets: ["NyquistReference"]),
        .library(name: "NyquistOperators", targets: ["NyquistOperators"]),
        // The C API (include/nyquist.h); `make lib` copies it to lib/libnyquist.so.
        .library(name: "NyquistC", type: .dynamic, targets: ["NyquistC"]),
        .executable(name: "nyquist", targets: ["nyquist"]),
        .executable(name: "nyquist-bench", targets: ["NyquistBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenCL",
            path: "Sources/COpenCL",
            providers: [.apt(["ocl-icd-opencl-dev", "opencl-headers"])]
        ),
        .systemLibrary(
            name: "CZlib",
            path: "Sources/CZlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .target(name: "NyquistCL", dependencies: ["COpenCL"]),
        .target(name: "NyquistCore"),
        .target(name: "NyquistReference", dependencies: ["NyquistCore"]),
        // PNG (zlib); kept out of NyquistCore so that the reference never links a C library.
        .target(name: "NyquistImage", dependencies: ["NyquistCore", "CZlib"]),
        .target(
            name: "NyquistKernels",
            path: "Kernels",
            exclude: ["README.md"],
            resources: [
                .embedInCode("common.h"),
                .embedInCode("copy.cl"),
                .embedInCode("max_pool.cl"),
                .embedInCode("blur_pool.cl"),
                .embedInCode("window_vector.h"),
                .embedInCode("reduce_lanes.h"),
                .embedInCode("aps.cl"),
                .embedInCode("tips.cl"),
                .embedInCode("lift_pool.cl"),
                .embedInCode("adaptive_blur_pool.cl"),
                .embedInCode("peak.cl"),
            ]
        ),
        .target(name: "Nyquist", dependencies: ["COpenCL", "NyquistCL", "NyquistCore", "NyquistKernels"]),
        // The operator registry: every operator's options, device layer and CPU reference by
        // name, for the CLI, the benchmarks and the parity tests.
        .target(name: "NyquistOperators", dependencies: ["Nyquist", "NyquistCore", "NyquistReference"]),
        // C entry points over the registry: opaque handles, status codes, no Swift type or error
        // across the boundary.
        .target(name: "NyquistC", dependencies: ["COpenCL", "Nyquist", "NyquistCore", "NyquistOperators"]),
        .executableTarget(
            name: "nyquist",
            dependencies: [
                "Nyquist", "NyquistOperators", "NyquistReference", "NyquistImage", "NyquistBenchmarkSuite",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // The benchmark logic, shared by `nyquist-bench` and `nyquist bench`.
        .target(
            name: "NyquistBenchmarkSuite",
            dependencies: [
                "Nyquist", "NyquistCL", "NyquistCore", "NyquistKernels", "NyquistOperators", "NyquistReference",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Benchmarks/NyquistBenchmarkSuite"
        ),
        .executableTarget(
            name: "NyquistBench",
            dependencies: ["NyquistBenchmarkSuite"],
            path: "Benchmarks/NyquistBench"
        ),
        .target(
            name: "_NyquistTestSupport",
            dependencies: ["NyquistCore"],
            path: "Tests/_NyquistTestSupport"
        ),
        .testTarget(
            name: "NyquistCoreTests",
            dependencies: ["NyquistCore", "_NyquistTestSupport"],
            // Read through #filePath by the tests, not bundled as resources.
            exclude: ["Fixtures"]
        ),
        .testTarget(
            name: "NyquistReferenceTests",
            dependencies: [
                "NyquistReference", "_NyquistTestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "NyquistCLTests", dependencies: ["NyquistCL"]),
        .testTarget(
            name: "ParityTests",
            dependencies: [
                "COpenCL", "Nyquist", "NyquistOperators", "NyquistReference", "_NyquistTestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
        .testTarget(
            name: "NyquistImageTests",
            dependencies: ["NyquistImage", "_NyquistTestSupport"],
            exclude: ["Fixtures"]
        ),
        .testTarget(name: "CLITests", dependencies: ["NyquistCore", "NyquistImage", "_NyquistTestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
