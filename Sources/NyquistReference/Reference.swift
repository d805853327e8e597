import NyquistCore

/// CPU reference implementations of Nyquist's operators: the parity oracle of the OpenCL path.
///
/// Written from SPEC.md's equations with plain loops over explicitly padded arrays, accumulating
/// in `Double` whatever the tensor's scalar type, so that a disagreement with the device points
/// at the device. The operations are generic over the scalar so that the gradient tests can run
/// them in `Double` with finite differences. Shapes are validated by the same configuration
/// types the device path uses (one description, two implementations); the index arithmetic of
/// the computation itself is this module's own.
public enum Reference {
    /// What backward needs from the training forward of the parameter-free operators here.
    ///
    /// All four recompute what they need (argmax positions, padded maps) from the input, which
    /// keeps the saved state trivially correct at the cost of repeating the forward work.
    public struct Saved<T: BinaryFloatingPoint & Sendable>: Sendable {
        /// The forward's input.
        public let input: Tensor<T>

        /// Wraps a forward input; parity tests use this to feed the reference the same input the
        /// device's training forward saw.
        public init(input: Tensor<T>) {
            self.input = input
        }
    }

    // MARK: MaxPool2D

    /// Max pooling (SPEC.md section 1): NaN in a window gives NaN; padding is -infinity.
    public static func maxPool2D<T: BinaryFloatingPoint & Sendable>(_ x: Tensor<T>, _ config: MaxPool2DConfiguration)
        throws -> Tensor<T>
    {
        let shape = try Shape4D(x.shape, role: "input")
        let outputShape = try config.outputShape(for: shape)
        let y = try PlaneOperators.maxPool(
            try planes(x, shape), window: config.kernelSize, stride: config.stride, padding: config.padding)
        return try tensor(y, expected: outputShape, layer: MaxPool2DConfiguration.operatorName)
    }

    /// Training forward of max pooling: the output and the input for backward.
    public static func maxPool2DTraining<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: MaxPool2DConfiguration
    ) throws -> (output: Tensor<T>, saved: Saved<T>) {
        (try maxPool2D(x, config), Saved(input: x))
    }

    /// Gradient of max pooling with respect to its input: each output gradient goes to the first
    /// maximum of its window in row-major order (the first NaN if the window holds one); windows
    /// that overlap add their gradients.
    public static func maxPool2DBackward<T: BinaryFloatingPoint & Sendable>(
        gradOutput: Tensor<T>, saved: Saved<T>, _ config: MaxPool2DConfiguration
    ) throws -> Tensor<T> {
        let shape = try Shape4D(saved.input.shape, role: "saved input")
        let outputShape = try config.outputShape(for: shape)
        try checkGradOutput(gradOutput, expected: outputShape, input: shape, layer: MaxPool2DConfiguration.operatorName)
        let gradInput = try PlaneOperators.maxPoolAdjoint(
            try planes(gradOutput, outputShape), input: try planes(saved.input, shape), window: config.kernelSize,
            stride: config.stride, padding: config.padding)
        return try tensor(gradInput, expected: shape, layer: MaxPool2DConfiguration.operatorName)
    }

    // MARK: AvgPool2D

    /// Average pooling (SPEC.md section 1): zero padding, divisor always k*k.
    public static func avgPool2D<T: BinaryFloatingPoint & Sendable>(_ x: Tensor<T>, _ config: AvgPool2DConfiguration)
        throws -> Tensor<T>
    {
        let shape = try Shape4D(x.shape, role: "input")
        let outputShape = try config.outputShape(for: shape)
        let y = try PlaneOperators.avgPool(
            try planes(x, shape), window: config.kernelSize, stride: config.stride, padding: config.padding)
        return try tensor(y, expected: outputShape, layer: AvgPool2DConfiguration.operatorName)
    }

    /// Training forward of average pooling: the output and the input for backward.
    public static func avgPool2DTraining<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: AvgPool2DConfiguration
    ) throws -> (output: Tensor<T>, saved: Saved<T>) {
        (try avgPool2D(x, config), Saved(input: x))
    }

    /// Gradient of average pooling with respect to its input (the exact adjoint of the forward).
    public static func avgPool2DBackward<T: BinaryFloatingPoint & Sendable>(
        gradOutput: Tensor<T>, saved: Saved<T>, _ config: AvgPool2DConfiguration
    ) throws -> Tensor<T> {
        let shape = try Shape4D(saved.input.shape, role: "saved input")
        let outputShape = try config.outputShape(for: shape)
        try checkGradOutput(gradOutput, expected: outputShape, input: shape, layer: AvgPool2DConfiguration.operatorName)
        let gradInput = try PlaneOperators.avgPoolAdjoint(
            try planes(gradOutput, outputShape), inputHeight: shape.h, inputWidth: shape.w, window: config.kernelSize,
            stride: config.stride, padding: config.padding)
        return try tensor(gradInput, expected: shape, layer: AvgPool2DConfiguration.operatorName)
    }

    // MARK: BlurPool2D

    /// BlurPool (SPEC.md section 2): pad by `config.pads` in `config.padding`, then
    /// y[n,c,i,j] = sum_{u,v<k} h[u] h[v] xpad[n,c,s*i+u,s*j+v] with binomial taps h.
    public static func blurPool2D<T: BinaryFloatingPoint & Sendable>(_ x: Tensor<T>, _ config: BlurPool2DConfiguration)
        throws -> Tensor<T>
    {
        let shape = try Shape4D(x.shape, role: "input")
        let outputShape = try config.outputShape(for: shape)
        let y = try blur(try planes(x, shape), config)
        return try tensor(y, expected: outputShape, layer: BlurPool2DConfiguration.operatorName)
    }

    /// Training forward of BlurPool: the output and the input for backward.
    public static func blurPool2DTraining<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: BlurPool2DConfiguration
    ) throws -> (output: Tensor<T>, saved: Saved<T>) {
        (try blurPool2D(x, config), Saved(input: x))
    }

    /// Gradient of BlurPool with respect to its input: the exact adjoint of the forward, including
    /// the gradient that reaches reflected, replicated or wrapped border positions, which goes
    /// back to the pixels they copy.
    public static func blurPool2DBackward<T: BinaryFloatingPoint & Sendable>(
        gradOutput: Tensor<T>, saved: Saved<T>, _ config: BlurPool2DConfiguration
    ) throws -> Tensor<T> {
        let shape = try Shape4D(saved.input.shape, role: "saved input")
        let outputShape = try config.outputShape(for: shape)
        try checkGradOutput(gradOutput, expected: outputShape, input: shape, layer: BlurPool2DConfiguration.operatorName)
        let gradInput = try blurAdjoint(try planes(gradOutput, outputShape), inputHeight: shape.h, inputWidth: shape.w, config)
        return try tensor(gradInput, expected: shape, layer: BlurPool2DConfiguration.operatorName)
    }

    // MARK: MaxBlurPool2D

    /// MaxBlurPool (SPEC.md section 2): the 2x2, stride-1, unpadded max map ((H-1) x (W-1)), then
    /// BlurPool of that map with `config.blur`. The reference keeps the intermediate map; it is
    /// the two-step composition the fused device kernel is checked against.
    public static func maxBlurPool2D<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: MaxBlurPool2DConfiguration
    ) throws -> Tensor<T> {
        let shape = try Shape4D(x.shape, role: "input")
        let outputShape = try config.outputShape(for: shape)
        let maxMap = try PlaneOperators.maxPool(try planes(x, shape), window: 2, stride: 1, padding: 0)
        let y = try blur(maxMap, config.blur)
        return try tensor(y, expected: outputShape, layer: MaxBlurPool2DConfiguration.operatorName)
    }

    /// Training forward of MaxBlurPool: the output and the input for backward.
    public static func maxBlurPool2DTraining<T: BinaryFloatingPoint & Sendable>(
        _ x: Tensor<T>, _ config: MaxBlurPool2DConfiguration
    ) throws -> (output: Tensor<T>, saved: Saved<T>) {
        (try maxBlurPool2D(x, config), Saved(input: x))
    }

    /// Gradient of MaxBlurPool with respect to its input: the blur's adjoint gives the gradient of
    /// the max map, and each of its values goes to the first maximum (row-major, NaN first) of its
    /// 2x2 window.
    public static func maxBlurPool2DBackward<T: BinaryFloatingPoint & Sendable>(
        gradOutput: Tensor<T>, saved: Saved<T>, _ config: MaxBlurPool2DConfiguration
    ) throws -> Tensor<T> {
        let shape = try Shape4D(saved.input.shape, role: "saved input")
        let outputShape = try config.outputShape(for: shape)
        try checkGradOutput(
            gradOutput, expected: outputShape, input: shape, layer: MaxBlurPool2DConfiguration.operatorName)
        let mapShape = try config.maxMapShape(for: shape)
        let gradMaxMap = try blurAdjoint(
            try planes(gradOutput, outputShape), inputHeight: mapShape.h, inputWidth: mapShape.w, config.blur)
        let gradInput = try PlaneOperators.maxPoolAdjoint(
            gradMaxMap, input: try planes(saved.input, shape), window: 2, stride: 1, padding: 0)
        return try tensor(gradInput, expected: shape, layer: MaxBlurPool2DConfiguration.operatorName)
    }

    // MARK: Shared pieces

    /// The blur of SPEC.md section 2 on planes, with the configuration's taps and padding.
    static func blur(_ x: Planes, _ config: BlurPool2DConfiguration) throws -> Planes {
        try PlaneOperators.blur(
            x, taps: try BinomialFilter.taps(size: config.filterSize, as: Double.self), stride: config.stride,
            pads: config.pads, mode: config.padding)
    }

    /// The adjoint of ``blur(_:_:)`` back onto an `inputHeight` x `inputWidth` map.
    static func blurAdjoint(_ gradOutput: Planes, inputHeight: Int, inputWidth: Int, _ config: BlurPool2DConfiguration)
        throws -> Planes
    {
        try PlaneOperators.blurAdjoint(
            gradOutput, inputHeight: inputHeight, inputWidth: inputWidth,
            taps: try BinomialFilter.taps(size: config.filterSize, as: Double.self), stride: config.stride,
            pads: config.pads, mode: config.padding)
    }

    /// Throws unless `gradOutput` has the shape the forward produces for the saved input, naming
    /// both shapes, because a gradient of the wrong shape would otherwise be read out of bounds.
    static func checkGradOutput<T>(_ gradOutput: Tensor<T>, expected: Shape4D, input: Shape4D, layer: String) throws {
        guard gradOutput.shape == expected.dimensions else {
            let given = gradOutput.shape.map(String.init).joined(separator: "x")
            throw NyquistError(
                .invalidShape,
                "\(layer) backward: gradOutput has shape \(given) but the forward output for input \(input) is \(expected)")
        }
    }

    /// The tensor's values as `Double` planes (one conversion, so every loop runs in `Double`).
    ///
    /// `Tensor.values` is publicly mutable, so its count is checked against the shape here rather
    /// than trusted: a mismatch would otherwise be read out of bounds.
    static func planes<T: BinaryFloatingPoint & Sendable>(_ x: Tensor<T>, _ shape: Shape4D) throws -> Planes {
        guard x.values.count == shape.count else {
            throw NyquistError(
                .invalidShape, "tensor of shape \(shape) holds \(x.values.count) values instead of \(shape.count)")
        }
        let values: [Double]
        if let same = x.values as? [Double] {
            values = same
        } else if let single = x.values as? [Float] {
            values = single.map { Double($0) }
        } else {
            values = x.values.map { Double($0) }
        }
        return Planes(values: values, count: shape.n * shape.c, height: shape.h, width: shape.w)
    }

    /// Converts computed planes to a tensor of `expected`'s shape, rounding to `T` once.
    ///
    /// The reference sizes its loops from its own padded arrays rather than from the shared
    /// output-size formula; if the two ever disagree that is a bug in one of them, reported here
    /// instead of returned as a tensor of a surprising shape.
    static func tensor<T: BinaryFloatingPoint & Sendable>(_ planes: Planes, expected: Shape4D, layer: String) throws
        -> Tensor<T>
    {
        guard planes.count == expected.n * expected.c, planes.height == expected.h, planes.width == expected.w else {
            throw NyquistError(
                .invalidShape,
                "\(layer) reference: computed \(planes.count) planes of \(planes.height)x\(planes.width) "
                    + "but the configuration expects \(expected)")
        }
        let values: [T]
        if let same = planes.values as? [T] {
            values = same
        } else if T.self == Float.self, let single = planes.values.map({ Float($0) }) as? [T] {
            values = single
        } else {
            values = planes.values.map { T($0) }
        }
        return try Tensor(shape: expected.dimensions, values: values)
    }
}
