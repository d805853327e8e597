import NyquistCore

/// N*C independent 2-D maps stored flat in row-major order, in `Double`.
///
/// Every operator of this module is depthwise (each plane is processed alone), so the batch and
/// channel axes only matter for addressing; the public layer converts tensors to and from this.
struct Planes {
    /// `count * height * width` values, plane after plane.
    var values: [Double]
    /// Number of planes (N * C).
    let count: Int
    /// Rows of each plane.
    let height: Int
    /// Columns of each plane.
    let width: Int

    /// Values of one plane.
    var planeSize: Int { height * width }

    /// Zero-filled planes.
    init(count: Int, height: Int, width: Int) {
        self.values = Array(repeating: 0, count: count * height * width)
        self.count = count
        self.height = height
        self.width = width
    }

    /// Wraps existing values.
    init(values: [Double], count: Int, height: Int, width: Int) {
        self.values = values
        self.count = count
        self.height = height
        self.width = width
    }
}

/// Runs `body` for every plane index with that plane of `input` (read) and of `output` (written)
/// as buffers, plus a zeroed scratch buffer of `scratchCount` values for the padded plane.
///
/// The operators' loops run on buffers rather than arrays because unoptimised (debug) builds
/// check and copy-on-write-test every array access, which made an ImageNet-sized layer take tens
/// of seconds; the loops themselves stay plain.
func forEachPlane(
    _ input: Planes, _ output: inout Planes, scratchCount: Int,
    _ body: (Int, UnsafeBufferPointer<Double>, UnsafeMutableBufferPointer<Double>, UnsafeMutableBufferPointer<Double>) -> Void
) {
    let scratch = UnsafeMutableBufferPointer<Double>.allocate(capacity: scratchCount)
    defer { scratch.deallocate() }
    let inputSize = input.planeSize
    let outputSize = output.planeSize
    let count = input.count
    input.values.withUnsafeBufferPointer { inputValues in
        output.values.withUnsafeMutableBufferPointer { outputValues in
            for plane in 0..<count {
                scratch.initialize(repeating: 0)
                body(
                    plane, UnsafeBufferPointer(rebasing: inputValues[(plane * inputSize)..<((plane + 1) * inputSize)]),
                    UnsafeMutableBufferPointer(rebasing: outputValues[(plane * outputSize)..<((plane + 1) * outputSize)]),
                    scratch)
            }
        }
    }
}

/// The plain-loop implementations of the four operators and their adjoints.
///
/// Each one pads a plane into a scratch array exactly as SPEC.md describes and then slides the
/// window over that padded array; no index arithmetic is shared with the device path.
enum PlaneOperators {
    /// Number of window placements along a padded axis: the windows start at 0, s, 2s, ... and must
    /// fit entirely inside the padded axis.
    static func windowCount(padded: Int, window: Int, stride: Int) -> Int {
        guard padded >= window else { return 0 }
        return (padded - window) / stride + 1
    }

    // MARK: Max pooling

    /// The maximum of the window with top-left corner (`top`, `left`) of a padded plane, and the
    /// flat index of the input pixel its gradient goes to (-1 if none, which valid
    /// configurations never produce).
    ///
    /// The value is the maximum of the whole padded window (padding holds -inf, so it never wins
    /// over an input value) except that any NaN makes it NaN, as in PyTorch. The gradient goes to
    /// the first NaN in row-major order if there is one, otherwise to the first input pixel equal
    /// to the maximum. Padding positions are never chosen: when a window holds only -inf (an
    /// input of -inf next to the padding) the gradient goes to the first input pixel, which is
    /// PyTorch's choice too, instead of being lost in the padding.
    static func windowMaximum(
        _ padded: UnsafeMutableBufferPointer<Double>, source: UnsafeBufferPointer<Int>, paddedWidth: Int, top: Int,
        left: Int, window: Int
    ) -> (value: Double, source: Int) {
        var maximum = -Double.infinity
        scan: for u in 0..<window {
            for v in 0..<window {
                let value = padded[(top + u) * paddedWidth + left + v]
                if value.isNaN {
                    maximum = value
                    break scan
                }
                if value > maximum { maximum = value }
            }
        }
        for u in 0..<window {
            for v in 0..<window {
                let position = (top + u) * paddedWidth + left + v
                let value = padded[position]
                if source[position] >= 0 && (maximum.isNaN ? value.isNaN : value == maximum) {
                    return (maximum, source[position])
                }
            }
        }
        return (maximum, -1)
    }

    /// Max pooling with window k, stride s and p positions of -inf on every side.
    static func maxPool(_ x: Planes, window: Int, stride: Int, padding: Int) throws -> Planes {
        let geometry = try PaddedGeometry(height: x.height, width: x.width, pads: .uniform(padding), mode: .zero)
        let outHeight = windowCount(padded: geometry.height, window: window, stride: stride)
        let outWidth = windowCount(padded: geometry.width, window: window, stride: stride)
        var y = Planes(count: x.count, height: outHeight, width: outWidth)
        geometry.source.withUnsafeBufferPointer { source in
            forEachPlane(x, &y, scratchCount: geometry.source.count) { _, input, output, padded in
                geometry.pad(input, fill: -.infinity, into: padded)
                for i in 0..<outHeight {
                    for j in 0..<outWidth {
                        output[i * outWidth + j] =
                            windowMaximum(
                                padded, source: source, paddedWidth: geometry.width, top: stride * i, left: stride * j,
                                window: window
                            ).value
                    }
                }
            }
        }
        return y
    }

    /// Adjoint of max pooling at `x`: each output gradient goes to its window's routed pixel;
    /// overlapping windows that route to the same pixel add up.
    static func maxPoolAdjoint(_ gradOutput: Planes, input x: Planes, window: Int, stride: Int, padding: Int) throws
        -> Planes
    {
        let geometry = try PaddedGeometry(height: x.height, width: x.width, pads: .uniform(padding), mode: .zero)
        var gradInput = Planes(count: x.count, height: x.height, width: x.width)
        let (outHeight, outWidth) = (gradOutput.height, gradOutput.width)
        gradOutput.values.withUnsafeBufferPointer { gradOutputValues in
            geometry.source.withUnsafeBufferPointer { source in
                // The plane loop runs over the input (read) and its gradient (written).
                forEachPlane(x, &gradInput, scratchCount: geometry.source.count) { plane, input, gradient, padded in
                    geometry.pad(input, fill: -.infinity, into: padded)
                    let gradOutputOffset = plane * outHeight * outWidth
                    for i in 0..<outHeight {
                        for j in 0..<outWidth {
                            let routed = windowMaximum(
                                padded, source: source, paddedWidth: geometry.width, top: stride * i,
                                left: stride * j, window: window
                            ).source
                            if routed >= 0 {
                                gradient[routed] += gradOutputValues[gradOutputOffset + i * outWidth + j]
                            }
                        }
                    }
                }
            }
        }
        return gradInput
    }

    // MARK: Average pooling

    /// Average pooling with zero padding; the divisor is always k*k (padded zeros count).
    static func avgPool(_ x: Planes, window: Int, stride: Int, padding: Int) throws -> Planes {
        let geometry = try PaddedGeometry(height: x.height, width: x.width, pads: .uniform(padding), mode: .zero)
        let outHeight = windowCount(padded: geometry.height, window: window, stride: stride)
        let outWidth = windowCount(padded: geometry.width, window: window, stride: stride)
        let divisor = Double(window * window)
        var y = Planes(count: x.count, height: outHeight, width: outWidth)
        forEachPlane(x, &y, scratchCount: geometry.source.count) { _, input, output, padded in
            geometry.pad(input, fill: 0, into: padded)
            for i in 0..<outHeight {
                for j in 0..<outWidth {
                    var sum = 0.0
                    for u in 0..<window {
                        for v in 0..<window {
                            sum += padded[(stride * i + u) * geometry.width + stride * j + v]
                        }
                    }
                    output[i * outWidth + j] = sum / divisor
                }
            }
        }
        return y
    }

    /// Adjoint of average pooling: spread g / (k*k) over the padded window, then fold the padded
    /// gradient back onto the input (the padded zeros absorb their share).
    static func avgPoolAdjoint(
        _ gradOutput: Planes, inputHeight: Int, inputWidth: Int, window: Int, stride: Int, padding: Int
    ) throws -> Planes {
        let geometry = try PaddedGeometry(
            height: inputHeight, width: inputWidth, pads: .uniform(padding), mode: .zero)
        let divisor = Double(window * window)
        var gradInput = Planes(count: gradOutput.count, height: inputHeight, width: inputWidth)
        forEachPlane(gradOutput, &gradInput, scratchCount: geometry.source.count) { _, g, gradient, paddedGradient in
            for i in 0..<gradOutput.height {
                for j in 0..<gradOutput.width {
                    let share = g[i * gradOutput.width + j] / divisor
                    for u in 0..<window {
                        for v in 0..<window {
                            paddedGradient[(stride * i + u) * geometry.width + stride * j + v] += share
                        }
                    }
                }
            }
            geometry.unpadAdding(UnsafeBufferPointer(paddedGradient), into: gradient)
        }
        return gradInput
    }

    // MARK: Blur pooling

    /// The k x k filter h[u] h[v] flattened row-major.
    static func filter2D(taps: [Double]) -> [Double] {
        var filter: [Double] = []
        for hu in taps {
            for hv in taps { filter.append(hu * hv) }
        }
        return filter
    }

    /// y[i, j] = sum_{u,v<k} h[u] h[v] xpad[s*i+u, s*j+v] for every plane (SPEC.md section 2).
    static func blur(_ x: Planes, taps: [Double], stride: Int, pads: Padding2D, mode: PaddingMode) throws -> Planes {
        let geometry = try PaddedGeometry(height: x.height, width: x.width, pads: pads, mode: mode)
        let k = taps.count
        let outHeight = windowCount(padded: geometry.height, window: k, stride: stride)
        let outWidth = windowCount(padded: geometry.width, window: k, stride: stride)
        var y = Planes(count: x.count, height: outHeight, width: outWidth)
        filter2D(taps: taps).withUnsafeBufferPointer { filter in
            forEachPlane(x, &y, scratchCount: geometry.source.count) { _, input, output, padded in
                geometry.pad(input, fill: 0, into: padded)
                for i in 0..<outHeight {
                    for j in 0..<outWidth {
                        var sum = 0.0
                        for u in 0..<k {
                            let rowStart = (stride * i + u) * geometry.width + stride * j
                            for v in 0..<k {
                                sum += filter[u * k + v] * padded[rowStart + v]
                            }
                        }
                        output[i * outWidth + j] = sum
                    }
                }
            }
        }
        return y
    }

    /// The exact adjoint of ``blur(_:taps:stride:pads:mode:)``: scatter h[u] h[v] g[i, j] onto the
    /// padded grid, then send each padded position's gradient to the pixel it was copied from
    /// (so reflected, replicated and wrapped border positions give their gradient back).
    static func blurAdjoint(
        _ gradOutput: Planes, inputHeight: Int, inputWidth: Int, taps: [Double], stride: Int, pads: Padding2D,
        mode: PaddingMode
    ) throws -> Planes {
        let geometry = try PaddedGeometry(height: inputHeight, width: inputWidth, pads: pads, mode: mode)
        let k = taps.count
        var gradInput = Planes(count: gradOutput.count, height: inputHeight, width: inputWidth)
        filter2D(taps: taps).withUnsafeBufferPointer { filter in
            forEachPlane(gradOutput, &gradInput, scratchCount: geometry.source.count) { _, g, gradient, paddedGradient in
                for i in 0..<gradOutput.height {
                    for j in 0..<gradOutput.width {
                        let value = g[i * gradOutput.width + j]
                        for u in 0..<k {
                            let rowStart = (stride * i + u) * geometry.width + stride * j
                            for v in 0..<k {
                                paddedGradient[rowStart + v] += filter[u * k + v] * value
                            }
                        }
                    }
                }
                geometry.unpadAdding(UnsafeBufferPointer(paddedGradient), into: gradient)
            }
        }
        return gradInput
    }
}
