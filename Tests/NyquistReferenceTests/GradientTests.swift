import NyquistCore
import NyquistReference
import PropertyBased
import Testing

/// Finite-difference and adjoint checks of the four backward passes, in Double.
///
/// With f(x) = <op(x), g> for a random g, backward(g) is the gradient of f. Central differences
/// (f(x + h d) - f(x - h d)) / 2h with h = 1e-6 have truncation error 0 for the linear operators
/// and for the max operators away from ties (they are piecewise linear), so what is left is
/// rounding: about eps * |f| / h = 1e-16 * 10 / 1e-6 = 1e-9 relative to the gradient's scale.
@Suite("Gradients")
struct GradientTests {
    static let step = 1e-6

    /// Largest error seen per check, printed at the end so the report can quote it.
    struct Worst {
        var value = 0.0
        var label = ""
        mutating func record(_ error: Double, _ what: @autoclosure () -> String) {
            if error > value {
                value = error
                label = what()
            }
        }
    }

    /// The shapes of the grid: odd and even, square and not, N and C > 1.
    static let shapes: [[Int]] = [[1, 1, 5, 7], [2, 2, 8, 6], [1, 3, 9, 9], [2, 1, 4, 11]]

    /// Every BlurPool option: filter 1...7, stride 1...3, every mode, offset 0 and 1.
    static func blurConfigurations(channels: Int) throws -> [BlurPool2DConfiguration] {
        var configs: [BlurPool2DConfiguration] = []
        for filterSize in 1...7 {
            for stride in 1...3 {
                for mode in PaddingMode.allCases {
                    for offset in 0...1 {
                        configs.append(
                            try BlurPool2DConfiguration(
                                channels: channels, filterSize: filterSize, stride: stride, padding: mode,
                                padOffset: offset))
                    }
                }
            }
        }
        return configs
    }

    /// Every max/avg pool option for windows 1...4: stride 1...3, padding 0...k/2.
    static func windowConfigurations() throws -> [(MaxPool2DConfiguration, AvgPool2DConfiguration)] {
        var configs: [(MaxPool2DConfiguration, AvgPool2DConfiguration)] = []
        for kernelSize in 1...4 {
            for stride in 1...3 {
                for padding in 0...(kernelSize / 2) {
                    configs.append(
                        (
                            try MaxPool2DConfiguration(kernelSize: kernelSize, stride: stride, padding: padding),
                            try AvgPool2DConfiguration(kernelSize: kernelSize, stride: stride, padding: padding)
                        ))
                }
            }
        }
        return configs
    }

    /// All operators over the grid, skipping the combinations the configuration rejects (reflect
    /// padding larger than a small map): those are the shape-error tests' business.
    static func operators(for shape: [Int]) throws -> [ReferenceOperator] {
        let input = try Shape4D(shape)
        var operators: [ReferenceOperator] = []
        for (maxConfig, avgConfig) in try windowConfigurations() {
            operators.append(.maxPool(maxConfig))
            operators.append(.avgPool(avgConfig))
        }
        for blur in try blurConfigurations(channels: shape[1]) {
            if (try? blur.outputShape(for: input)) != nil { operators.append(.blurPool(blur)) }
            let maxBlur = try MaxBlurPool2DConfiguration(
                channels: shape[1], filterSize: blur.filterSize, stride: blur.stride, padding: blur.padding,
                padOffset: blur.padOffset)
            if (try? maxBlur.outputShape(for: input)) != nil { operators.append(.maxBlurPool(maxBlur)) }
        }
        return operators
    }

    /// Input for `op`: spaced values for the max operators so no finite-difference step crosses a tie.
    static func input(for op: ReferenceOperator, shape: [Int], using rng: inout Xoshiro) throws -> Tensor<Double> {
        op.isLinear ? try randomTensor(shape, using: &rng) : try tieFreeTensor(shape, using: &rng)
    }

    @Test("Directional derivatives match backward on the full option grid", arguments: shapes)
    func directionalDerivatives(shape: [Int]) throws {
        var rng = seededGenerator(UInt64(shape.reduce(0, { $0 * 16 + $1 })))
        var worst = Worst()
        var checked = 0
        for op in try Self.operators(for: shape) {
            let x = try Self.input(for: op, shape: shape, using: &rng)
            let g = try randomTensor(op.forward(x).shape, using: &rng)
            let gradient = try op.backward(g, x)
            #expect(gradient.shape == x.shape)
            for _ in 0..<2 {
                let d = try randomTensor(shape, using: &rng).values
                let plus = dot(try op.forward(shifted(x, by: d, times: Self.step)).values, g.values)
                let minus = dot(try op.forward(shifted(x, by: d, times: -Self.step)).values, g.values)
                let numeric = (plus - minus) / (2 * Self.step)
                let analytic = dot(gradient.values, d)
                let scale = max(absoluteDot(gradient.values, d), 1e-12)
                let error = abs(numeric - analytic) / scale
                worst.record(error, "\(op) \(shape)")
                #expect(error <= 1e-7, "\(op) on \(shape): numeric \(numeric), analytic \(analytic)")
                checked += 1
            }
        }
        #expect(checked > 300)
        print("largest directional FD error on \(shape): \(worst.value) (\(worst.label)), \(checked) checks")
    }

    @Test("Every gradient coordinate matches central differences (small map)")
    func fullGradient() throws {
        let shape = [1, 2, 5, 6]
        var rng = seededGenerator(77)
        var worst = Worst()
        var checked = 0
        for op in try Self.operators(for: shape) {
            let x = try Self.input(for: op, shape: shape, using: &rng)
            let g = try randomTensor(op.forward(x).shape, using: &rng)
            let gradient = try op.backward(g, x)
            let scale = max(maxAbs(gradient.values), 1e-12)
            var numeric = [Double](repeating: 0, count: x.count)
            for index in 0..<x.count {
                var plus = x
                plus.values[index] += Self.step
                var minus = x
                minus.values[index] -= Self.step
                numeric[index] =
                    (dot(try op.forward(plus).values, g.values) - dot(try op.forward(minus).values, g.values))
                    / (2 * Self.step)
            }
            let error = maxAbsDifference(numeric, gradient.values) / scale
            worst.record(error, "\(op)")
            #expect(error <= 1e-7, "\(op): largest coordinate error \(error) relative to \(scale)")
            checked += 1
        }
        print("largest full-gradient FD error: \(worst.value) (\(worst.label)), \(checked) operators")
    }

    @Test("Adjoint identity <A x, g> = <x, A^T g> for the linear operators", arguments: shapes)
    func adjointIdentity(shape: [Int]) throws {
        var rng = seededGenerator(UInt64(shape.reduce(1, *)))
        var worst = Worst()
        for op in try Self.operators(for: shape) where op.isLinear {
            let x = try randomTensor(shape, using: &rng)
            let ax = try op.forward(x)
            let g = try randomTensor(ax.shape, using: &rng)
            let atg = try op.backward(g, x)
            let left = dot(ax.values, g.values)
            let right = dot(x.values, atg.values)
            let scale = max(absoluteDot(ax.values, g.values), absoluteDot(x.values, atg.values))
            let error = abs(left - right) / scale
            worst.record(error, "\(op)")
            #expect(error <= 1e-12, "\(op) on \(shape): <Ax,g> = \(left), <x,A^T g> = \(right)")
        }
        print("largest adjoint error on \(shape): \(worst.value) (\(worst.label))")
    }

    @Test("Blur backward sends border gradient back through the padding", arguments: PaddingMode.allCases)
    func borderGradient(mode: PaddingMode) throws {
        // A single output at the top-left corner with k = 3, stride 1: its window reads padded
        // row/column -1, which is input 1 (reflect), 0 (replicate), H-1 (circular) or nothing.
        let x = try Tensor<Double>(shape: [1, 1, 4, 4], repeating: 0)
        let config = try BlurPool2DConfiguration(channels: 1, filterSize: 3, stride: 1, padding: mode)
        var g = try Tensor<Double>(shape: [1, 1, 4, 4], repeating: 0)
        g.values[0] = 16  // h[u] h[v] * 16 = [1, 2, 1] x [1, 2, 1]
        let grad = try Reference.blurPool2DBackward(gradOutput: g, saved: .init(input: x), config)
        // Along one axis, the weights [1, 2, 1] on indices -1, 0, 1 land on input indices:
        let axis: [Double]
        switch mode {
        case .zero: axis = [2, 1, 0, 0]  // index -1 is a constant
        case .reflect: axis = [2, 1 + 1, 0, 0]  // -1 -> 1
        case .replicate: axis = [1 + 2, 1, 0, 0]  // -1 -> 0
        case .circular: axis = [2, 1, 0, 1]  // -1 -> 3
        }
        let expected = axis.flatMap { a in axis.map { b in a * b } }
        #expect(grad.values == expected)
        #expect(grad.values.reduce(0, +) == (mode == .zero ? 9 : 16))
    }
}
