import NyquistCL
import NyquistCore

/// Everything that decides which input index each tap of a window operator reads along one
/// axis. Rows and columns each get their own geometry, so non-square inputs share nothing.
struct AxisGeometry: Hashable {
    /// How out-of-range taps are resolved.
    enum Border: Hashable {
        /// Per the padding mode (zero taps get index -1).
        case padding(PaddingMode)
        /// Clamp to the nearest in-range index (max pool: a duplicate of a sample that is in the
        /// same window leaves the maximum unchanged).
        case clampToWindow
    }

    var inputSize: Int
    var outputSize: Int
    var stride: Int
    var padBefore: Int
    var border: Border
    /// Weight of each tap (its count is the window size).
    var taps: [Float]
}

/// Host-side tables of one axis (see Kernels/blur_pool.cl for how kernels read them).
struct AxisTables {
    /// Window size.
    let taps: Int
    /// `outputSize * taps` input indices (-1: reads zero).
    let source: [Int32]
    /// `outputSize * taps` weights.
    let weight: [Float]
    /// Width of the backward tables: the most outputs that read one input index.
    let fanIn: Int
    /// `inputSize * fanIn` output indices reading each input (-1: unused slot).
    let target: [Int32]
    /// `inputSize * fanIn` summed weights of those reads.
    let targetWeight: [Float]
    /// Outputs whose every tap reads input `stride * i + u - padBefore` (no padding involved):
    /// the kernels compute these from affine indices without tables. Found by comparing the
    /// tables with the affine formula, so it can never disagree with them.
    let interior: Range<Int>
    /// Inputs whose readers are exactly the outputs (stride * i + u - padBefore = a) with tap
    /// weights, i.e. untouched by padding: the backward kernels gather these without tables.
    let backwardInterior: Range<Int>

    init(_ geometry: AxisGeometry) {
        let window = geometry.taps.count
        var source = [Int32](repeating: -1, count: geometry.outputSize * window)
        var weight = [Float](repeating: 0, count: geometry.outputSize * window)
        // Per input index: (output index, summed weight), in increasing output order because
        // outputs are visited in order; a repeated output (reflection folding two taps onto
        // one sample) merges into its last entry.
        var readers = [[(output: Int, weight: Float)]](repeating: [], count: geometry.inputSize)
        for output in 0..<geometry.outputSize {
            for tap in 0..<window {
                let padded = geometry.stride * output + tap - geometry.padBefore
                let index: Int?
                switch geometry.border {
                case .padding(let mode):
                    index = mode.sourceIndex(padded, size: geometry.inputSize)
                case .clampToWindow:
                    index = min(max(padded, 0), geometry.inputSize - 1)
                }
                let slot = output * window + tap
                weight[slot] = geometry.taps[tap]
                guard let index else { continue }
                source[slot] = Int32(index)
                if let last = readers[index].last, last.output == output {
                    readers[index][readers[index].count - 1].weight += geometry.taps[tap]
                } else {
                    readers[index].append((output, geometry.taps[tap]))
                }
            }
        }
        let fanIn = max(readers.map(\.count).max() ?? 1, 1)
        var target = [Int32](repeating: -1, count: geometry.inputSize * fanIn)
        var targetWeight = [Float](repeating: 0, count: geometry.inputSize * fanIn)
        for (input, list) in readers.enumerated() {
            for (slot, entry) in list.enumerated() {
                target[input * fanIn + slot] = Int32(entry.output)
                targetWeight[input * fanIn + slot] = entry.weight
            }
        }
        let longest = Self.longestRun(count: geometry.outputSize) { output in
            (0..<window).allSatisfy { tap in
                let expected = geometry.stride * output + tap - geometry.padBefore
                return expected >= 0 && expected < geometry.inputSize && source[output * window + tap] == Int32(expected)
            }
        }
        self.interior = longest
        self.backwardInterior = Self.longestRun(count: geometry.inputSize) { input in
            var affine: [(output: Int, weight: Float)] = []
            for tap in stride(from: window - 1, through: 0, by: -1) {
                let shifted = input + geometry.padBefore - tap
                guard shifted % geometry.stride == 0 else { continue }
                // The interior kernel reads every tap of this phase, so each must name a real output.
                let output = shifted / geometry.stride
                guard shifted >= 0, output < geometry.outputSize else { return false }
                affine.append((output, geometry.taps[tap]))
            }
            let actual = readers[input]
            return !affine.isEmpty && affine.count == actual.count
                && zip(affine, actual).allSatisfy { $0.output == $1.output && $0.weight == $1.weight }
        }
        self.taps = window
        self.source = source
        self.weight = weight
        self.fanIn = fanIn
        self.target = target
        self.targetWeight = targetWeight
    }

    /// The longest run of consecutive indices in 0..<count for which `holds` is true.
    static func longestRun(count: Int, where holds: (Int) -> Bool) -> Range<Int> {
        var longest = 0..<0
        var start: Int? = nil
        for index in 0...count {
            if index < count && holds(index) {
                if start == nil { start = index }
            } else if let first = start {
                if index - first > longest.count { longest = first..<index }
                start = nil
            }
        }
        return longest
    }
}

/// Device copies of ``AxisTables``: constants, allocated once per geometry and device.
final class AxisTableBuffers: @unchecked Sendable {
    // @unchecked Sendable: immutable after init; the buffers are only read by kernels.
    let taps: Int
    let fanIn: Int
    let interior: Range<Int>
    let backwardInterior: Range<Int>
    /// The tap weights alone (`taps` floats), for the interior kernels.
    let tapWeights: OpenCLBuffer
    let source: OpenCLBuffer
    let weight: OpenCLBuffer
    let target: OpenCLBuffer
    let targetWeight: OpenCLBuffer

    init(_ tables: AxisTables, context: OpenCLContext) throws {
        taps = tables.taps
        fanIn = tables.fanIn
        interior = tables.interior
        backwardInterior = tables.backwardInterior
        tapWeights = try context.makeBuffer(byteCount: tables.taps * 4)
        try context.write(Array(tables.weight.prefix(tables.taps)), to: tapWeights)
        source = try context.makeBuffer(byteCount: tables.source.count * 4)
        weight = try context.makeBuffer(byteCount: tables.weight.count * 4)
        target = try context.makeBuffer(byteCount: tables.target.count * 4)
        targetWeight = try context.makeBuffer(byteCount: tables.targetWeight.count * 4)
        try context.write(bytesOf: tables.source, to: source)
        try context.write(tables.weight, to: weight)
        try context.write(bytesOf: tables.target, to: target)
        try context.write(tables.targetWeight, to: targetWeight)
    }
}
