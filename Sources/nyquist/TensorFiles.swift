import Foundation
import NyquistCore
import NyquistImage

/// The tensor files `nyquist run` reads as --input and writes as --output: PNG when the name
/// ends in `.png` (any case), NPY otherwise. Gradients, parameters and --extra files are always
/// NPY / safetensors.
///
/// PNG rules: an input image becomes [1, C, H, W] with values sample / maximum in [0, 1] (gray:
/// C = 1, RGB and palette: C = 3; alpha is dropped; 16-bit samples divide by 65535). An output
/// needs N = 1 and C = 1 or 3 and is written as 8 bits, round(255 * clamp(v, 0, 1)), NaN as 0.
enum TensorFiles {
    /// True for a path the CLI treats as PNG.
    static func isPNG(_ path: String) -> Bool {
        URL(fileURLWithPath: path).pathExtension.lowercased() == "png"
    }

    /// The tensor in `path` (PNG or NPY by extension).
    static func read(_ path: String) throws -> HostTensor {
        let url = URL(fileURLWithPath: path)
        return isPNG(path) ? try PNG.read(contentsOf: url).tensor() : try NPY.read(contentsOf: url)
    }

    /// The float tensors of the safetensors file `path` (--params), after checking that none of
    /// `names`, the parameters `layer` will look up, is stored with an integer dtype: the loader
    /// would call such a tensor missing.
    static func readParameters(_ path: String, expecting names: [String], layer: String) throws -> [String: HostTensor] {
        try Safetensors.readContents(contentsOf: URL(fileURLWithPath: path)).parameters(expecting: names, layer: layer)
    }

    /// Refuses, before any work, an output shape that `path` cannot hold (PNG: N = 1, C = 1 or 3).
    static func checkOutput(shape: [Int], path: String) throws {
        if isPNG(path) { try PNGImage.checkTensorShape(shape, role: "output \(path)") }
    }

    /// Writes `tensor` to `path` atomically, as PNG or NPY by the extension of `name` (the
    /// destination's name when `path` is a temporary file beside it).
    static func write(_ tensor: HostTensor, to path: String, as name: String? = nil) throws {
        let url = URL(fileURLWithPath: path)
        let named = name ?? path
        if isPNG(named) {
            try PNG.write(PNGImage(tensor: tensor, role: "output \(named)"), to: url)
        } else {
            try NPY.write(tensor, to: url)
        }
    }
}
