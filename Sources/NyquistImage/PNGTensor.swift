import NyquistCore

extension PNGImage {
    /// The image as an NCHW tensor of shape [1, C, H, W] with values `sample / maximumSample`
    /// in [0, 1]: gray gives C = 1, RGB C = 3. Alpha is dropped (not premultiplied, not
    /// composited), because the operators see colour planes and an alpha plane would change C.
    /// The tensor must fit `limits.memoryBudget` (`.sizeLimit` otherwise).
    public func tensor(limits: HostLimits = .current) throws -> HostTensor {
        let colourChannels = layout.hasAlpha ? layout.channels - 1 : layout.channels
        let plane = width * height
        try limits.checkAllocation(
            count: colourChannels * plane, bytesPerElement: 4, what: "the tensor of a \(width)x\(height) \(layout) image")
        // Division, not a reciprocal multiply: 51 / 255 is then exactly Float(0.2).
        let maximum = Float(maximumSample)
        var values = [Float](repeating: 0, count: colourChannels * plane)
        for pixel in 0..<plane {
            let base = pixel * layout.channels
            for channel in 0..<colourChannels {
                values[channel * plane + pixel] = Float(samples[base + channel]) / maximum
            }
        }
        return try HostTensor(shape: [1, colourChannels, height, width], values: values)
    }

    /// An 8-bit gray (C = 1) or RGB (C = 3) image of a [1, C, H, W] tensor. Each value v maps
    /// to round(255 * clamp(v, 0, 1)); NaN maps to 0. This is the inverse of ``tensor()`` on
    /// values that came from an 8-bit image, so a PNG read and written unchanged is identical.
    ///
    /// `role` names the tensor in errors ("output y.png"): N other than 1 and C other than 1 or 3
    /// throw ``NyquistError/Kind/unsupported`` (write .npy for those).
    public init(tensor: HostTensor, role: String = "tensor") throws {
        try PNGImage.checkTensorShape(tensor.shape, role: role)
        let (c, h, w) = (tensor.shape[1], tensor.shape[2], tensor.shape[3])
        let plane = h * w
        var samples = [UInt16](repeating: 0, count: c * plane)
        for channel in 0..<c {
            for pixel in 0..<plane {
                samples[pixel * c + channel] = PNGImage.eightBit(tensor.values[channel * plane + pixel])
            }
        }
        try self.init(width: w, height: h, layout: c == 1 ? .gray : .rgb, bitDepth: 8, samples: samples)
    }

    /// Throws the error ``init(tensor:role:)`` would throw for a tensor of `shape`, so that a
    /// command can refuse a PNG output before it computes anything.
    public static func checkTensorShape(_ shape: [Int], role: String = "tensor") throws {
        guard shape.count == 4 else {
            throw NyquistError(.invalidShape, "\(role): a PNG holds a [1, C, H, W] tensor, but the shape is \(shape)")
        }
        guard shape[0] == 1 else {
            throw NyquistError(
                .unsupported, "\(role): a PNG holds one image but the tensor has N = \(shape[0]) (shape \(shape)); write .npy instead")
        }
        guard shape[1] == 1 || shape[1] == 3 else {
            throw NyquistError(
                .unsupported,
                "\(role): a PNG holds C = 1 (gray) or C = 3 (RGB) but the tensor has C = \(shape[1]) (shape \(shape)); write .npy instead")
        }
    }

    /// round(255 * clamp(value, 0, 1)), NaN -> 0.
    public static func eightBit(_ value: Float) -> UInt16 {
        guard !value.isNaN else { return 0 }
        let clamped = min(max(value, 0), 1)
        return UInt16((clamped * 255).rounded())
    }
}
