import ArgumentParser
import Foundation
import Nyquist
import NyquistCore
import NyquistOperators
import NyquistImage

/// `nyquist picture`: PNG pictures that show what the operators do, with an index.md that
/// captions each file and states how its values became gray levels or colours.
struct Picture: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write PNG pictures: a zone plate through every operator, LiftPool sub-bands, AdaptiveBlurPool filter maps, TIPS mixing weights.",
        discussion: """
            Writes into --output (default pictures/, created if missing) the files listed in its \
            index.md, which captions each picture and states its value-to-colour mapping and ranges. \
            The input is a zone plate of --size x --size (default 256; 8...1024), or --image (a gray \
            or RGB PNG; its gray plane, the channel mean, feeds the single-channel pictures). Learned \
            layers (adaptive-blur-pool, lift-down-pool, tips-pool) use their default initialisation \
            drawn from --seed (default 0): untrained weights, so their pictures show the mechanism, \
            not a trained behaviour. Every output is computed before the first file is written; each \
            file is written atomically.
            """)

    @Option(help: ArgumentHelp("Folder for the PNG files and index.md (created if missing).", valueName: "dir"))
    var output = "pictures"

    @Option(help: "Side of the zone plate and pink-noise inputs, 8...1024 (default 256).")
    var size: Int?

    @Option(help: ArgumentHelp("Use this PNG (gray or RGB, sides 8...1024) instead of the zone plate.", valueName: "image.png"))
    var image: String?

    @Option(help: "Seed of the learned layers' default parameters (default 0).")
    var seed: UInt64 = 0

    @Option(help: ArgumentHelp("Where to compute (default opencl).", valueName: "opencl|reference"))
    var backend: String?

    @Option(help: ArgumentHelp("OpenCL device: an index from `nyquist devices` or a name substring.", valueName: "spec"))
    var device: String?

    /// Sides a picture input may have: at least what every operator's padding needs, at most
    /// what the pink-noise generator accepts.
    static let sides = 8...TestImages.maximumPinkNoiseSize

    /// The operators of the side-by-side picture, in display order.
    static let operators = [
        "max-pool", "avg-pool", "blur-pool", "max-blur-pool", "adaptive-blur-pool", "lift-down-pool", "aps-pool",
        "tips-pool",
    ]

    @Flag(
        inversion: .prefixedNo,
        help: "Also write equivariance.svg, nyquist eval's chart (about half a minute on a CPU device, minutes on the reference).")
    var chart = true

    func run() throws {
        let engine: PictureEngine
        switch backend ?? "opencl" {
        case "opencl": engine = PictureEngine(device: try device.map { try Device(named: $0) } ?? Device.default())
        case "reference":
            if device != nil { throw CLIFailure("--device applies only to --backend opencl") }
            engine = PictureEngine(device: nil)
        default: throw CLIFailure("unknown backend '\(backend ?? "")'; use opencl or reference")
        }
        if image != nil, size != nil { throw CLIFailure("--size does not apply with --image (the image sets the size)") }
        let input: HostTensor
        let inputName: String
        if let image {
            guard TensorFiles.isPNG(image) else { throw CLIFailure("--image \(image) must be a .png file") }
            input = try TensorFiles.read(image)
            guard Self.sides.contains(input.shape[2]), Self.sides.contains(input.shape[3]) else {
                throw CLIFailure(
                    "--image \(image) is \(input.shape[3])x\(input.shape[2]); both sides must be in \(Self.sides.lowerBound)...\(Self.sides.upperBound)")
            }
            inputName = URL(fileURLWithPath: image).lastPathComponent
        } else {
            let side = size ?? 256
            guard Self.sides.contains(side) else {
                throw CLIFailure("--size \(side) is out of range; use \(Self.sides.lowerBound)...\(Self.sides.upperBound)")
            }
            input = try TestImages.zonePlate(size: side)
            inputName = "zone plate"
        }
        let folder = URL(fileURLWithPath: output, isDirectory: true)
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: folder.path, isDirectory: &isDirectory), !isDirectory.boolValue {
            throw CLIFailure("--output \(output) is a file, not a folder")
        }

        var book = PictureBook(engine: engine, input: input, inputName: inputName, seed: seed)
        try book.operatorsSideBySide()
        try book.liftBands()
        try book.adaptiveFilterMaps()
        try book.tipsMixingWeights()
        // The equivariance chart is nyquist eval's, at its default size and the same seed, so
        // the picture folder and `nyquist eval --svg` show the same numbers.
        var chartSVG: String?
        if chart {
            let evaluation = try Eval.parse(["--size", "64", "--seed", "\(seed)"])
            let report = try evaluation.makeReport(on: engine.device)
            let svg = Eval.chart(report).svg()
            book.appendSection(
                """
                ## Equivariance error against shift

                ![equivariance error against shift](equivariance.svg)

                `equivariance.svg`: equivariance error ||D(shift(x)) - align(D(x))|| / ||D(x)|| against the input shift d = 1..4 \
                for every operator, circular (left) and zero-filled (right), from `nyquist eval --size 64 \
                --seed \(seed)` on \(report.device): each point is the mean over six built-in \
                \(report.inputShape) inputs and the shifts (d, 0), (0, d), (d, d). Even circular shifts \
                of a stride-2 operator can be undone exactly, so the curves dip at d = 2 and 4. \
                docs/shift-invariance.md in the repository defines the measures.

                """)
            chartSVG = svg
        }

        do {
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        } catch {
            throw CLIFailure("cannot create the --output folder \(output): \(error.localizedDescription)")
        }
        for (name, picture) in book.files {
            try PNG.write(picture.image(), to: folder.appendingPathComponent(name))
        }
        if let chartSVG {
            try Eval.write(Data(chartSVG.utf8), to: folder.appendingPathComponent("equivariance.svg"))
        }
        try FileIO.writeAtomically(Array(book.index().utf8), to: folder.appendingPathComponent("index.md"))
        print("wrote \(book.files.count + (chartSVG == nil ? 0 : 1)) pictures and index.md to \(output) (computed on \(engine.place))")
    }
}

/// Runs the operators on the chosen backend, returning host tensors.
struct PictureEngine {
    /// nil: the CPU reference.
    let device: Device?

    /// Where the numbers come from, for index.md.
    var place: String {
        guard let device else { return "the CPU reference" }
        let info = device.info
        return "\(info.name) (\(info.typeName), \(info.platformName))"
    }

    /// Operator `name` of the registry on `x` with `options` (and `seed` for the operators
    /// with parameters): every result, on the host.
    func results(_ name: String, _ x: HostTensor, seed: UInt64, options: [String: String] = [:]) throws
        -> OperatorValues<HostTensor>
    {
        let descriptor = try OperatorRegistry.named(name)
        var values = options
        if descriptor.options.contains(where: { $0.name == "seed" }) { values["seed"] = "\(seed)" }
        let options = OperatorOptions(values)
        guard let device else { return try descriptor.makeReference(options, inputShape: x.shape)(x) }
        let result = try descriptor.makeLayer(options, inputShape: x.shape, on: device)(DeviceTensor(x, on: device))
        return OperatorValues(
            output: try result.output.toHost(), extras: try result.extras.mapValues { try $0.toHost() },
            scalars: try result.scalars)
    }
}

/// The pictures, built in memory (written by ``Picture/run()``), and their captions.
struct PictureBook {
    let engine: PictureEngine
    /// [1, C, H, W] in [0, 1].
    let input: HostTensor
    let inputName: String
    let seed: UInt64
    /// File name and picture, in writing order.
    private(set) var files: [(String, Canvas)] = []
    /// index.md sections, in order.
    private var sections: [String] = []
    private var step = 0
    private let steps = Picture.operators.count + 4

    init(engine: PictureEngine, input: HostTensor, inputName: String, seed: UInt64) {
        self.engine = engine
        self.input = input
        self.inputName = inputName
        self.seed = seed
    }

    private var height: Int { input.shape[2] }
    private var width: Int { input.shape[3] }
    private var channels: Int { input.shape[1] }
    /// Font scale of labels: readable on 256-pixel panels, compact on small ones.
    private var labelScale: Int { max(1, min(width, height) / 128) }
    private static let gap = 4

    private mutating func progress(_ what: String) {
        step += 1
        Console.error("picture [\(step)/\(steps)] \(what)")
    }

    /// A [1, C, h, w] tensor as a panel of `width` x `height`, each value repeated over a
    /// `factor` x `factor` block (nearest-neighbour upsampling; rows or columns beyond the
    /// tensor repeat its last one), gray for C = 1 and RGB for C = 3 (same mapping per channel).
    private static func panel(
        _ tensor: HostTensor, batch: Int = 0, channel: Int? = nil, factor: Int, width: Int, height: Int,
        map: (Float) -> (UInt8, UInt8, UInt8)
    ) -> Canvas {
        let (c, h, w) = (tensor.shape[1], tensor.shape[2], tensor.shape[3])
        var canvas = Canvas(width: width, height: height)
        for row in 0..<height {
            for column in 0..<width {
                let (i, j) = (min(row / factor, h - 1), min(column / factor, w - 1))
                func value(_ k: Int) -> Float { tensor.values[((batch * c + k) * h + i) * w + j] }
                if let channel {
                    canvas.set(row, column, map(value(channel)))
                } else if c == 3 {
                    canvas.set(row, column, (map(value(0)).0, map(value(1)).0, map(value(2)).0))
                } else {
                    canvas.set(row, column, map(value(0)))
                }
            }
        }
        return canvas
    }

    /// Panels in a grid of `columns`, each under its label.
    private func grid(_ panels: [(String, Canvas)], columns: Int) -> Canvas {
        let panelWidth = panels.map(\.1.width).max() ?? 1
        let panelHeight = panels.map(\.1.height).max() ?? 1
        let labelHeight = (PixelFont.height + 3) * labelScale
        let rows = (panels.count + columns - 1) / columns
        let gap = Self.gap
        var canvas = Canvas(
            width: columns * panelWidth + (columns + 1) * gap, height: rows * (panelHeight + labelHeight) + (rows + 1) * gap)
        for (index, (label, panel)) in panels.enumerated() {
            let left = gap + (index % columns) * (panelWidth + gap)
            let top = gap + (index / columns) * (panelHeight + labelHeight + gap)
            canvas.text(label, top: top + labelScale, left: left, scale: labelScale)
            canvas.draw(panel, top: top + labelHeight, left: left)
        }
        return canvas
    }

    private static func range(_ values: some Sequence<Float>) -> (low: Float, high: Float) {
        var low = Float.infinity
        var high = -Float.infinity
        for value in values where value.isFinite {
            low = min(low, value)
            high = max(high, value)
        }
        return low <= high ? (low, high) : (0, 1)
    }

    private static func number(_ value: Float) -> String { String(format: "%.4g", Double(value)) }

    /// The gray plane (channel mean) of the input, [1, 1, H, W].
    private var grayInput: HostTensor {
        get throws {
            let plane = width * height
            return try HostTensor(shape: [1, 1, height, width]) { pixel in
                (0..<channels).reduce(Float(0)) { $0 + input.values[$1 * plane + pixel] } / Float(channels)
            }
        }
    }

    /// A pink-noise plane cropped to the input's size, [1, channels, H, W].
    private func pinkNoise(seed: UInt64, channels: Int) throws -> HostTensor {
        let side = max(width, height)
        let noise = try TestImages.pinkNoise(size: side, seed: seed, channels: channels)
        return try Self.crop(noise, side: side, height: height, width: width)
    }

    private static func crop(_ tensor: HostTensor, side: Int, height: Int, width: Int) throws -> HostTensor {
        return try HostTensor(shape: [tensor.shape[0], tensor.shape[1], height, width]) { index in
            let (plane, pixel) = (index / (height * width), index % (height * width))
            return tensor.values[(plane * side + pixel / width) * side + pixel % width]
        }
    }

    // MARK: (a) every operator on the input

    mutating func operatorsSideBySide() throws {
        let fixed: (Float) -> (UInt8, UInt8, UInt8) = { ColourMap.gray($0, low: 0, high: 1) }
        var panels: [(String, Canvas)] = [
            ("input", Self.panel(input, factor: 1, width: width, height: height, map: fixed))
        ]
        var captions: [String] = []
        files.append(("input.png", panels[0].1))
        for name in Picture.operators {
            progress("\(name) on the \(inputName)")
            let output = try engine.results(name, input, seed: seed).output
            var rule = "gray = round(255 * clamp(v, 0, 1))"
            var map = fixed
            if name == LiftPoolConfiguration.operatorName {
                // LL + LH + HL + HH is not confined to [0, 1]; stretch its own range instead.
                let (low, high) = Self.range(output.values)
                map = { ColourMap.gray($0, low: low, high: high) }
                rule = "gray = min-max stretch of [\(Self.number(low)), \(Self.number(high))] (the sum of four bands leaves [0, 1])"
            }
            let panel = Self.panel(output, factor: 2, width: width, height: height, map: map)
            panels.append((name, panel))
            files.append(("\(name).png", panel))
            captions.append(
                "* `\(name).png`: \(name) with default options, output \(Format.shape(output.shape)) shown 2x nearest; \(rule).")
        }
        files.insert(("operators.png", grid(panels, columns: 3)), at: 0)
        sections.append(
            """
            ## The \(inputName) through every operator

            ![every operator on the \(inputName)](operators.png)

            `operators.png`: the input (top left) and each stride-2 operator's output, upsampled 2x by \
            repeating pixels so that every panel has the input's \(width)x\(height) size and aliasing \
            shows as false patterns (moire rings) where the input is finer than the output can hold. \
            On the zone plate the local frequency rises linearly from the centre (0) to the edge \
            midpoints (0.5 cycles/pixel, the input's Nyquist limit); the outputs' limit is \
            0.25 cycles/pixel, halfway out. Unless noted, gray = round(255 * clamp(v, 0, 1)).

            * `input.png`: the input, gray = round(255 * clamp(v, 0, 1)).
            \(captions.joined(separator: "\n"))
            """)
    }

    // MARK: (b) LiftDownPool's four sub-bands

    mutating func liftBands() throws {
        let sources: [(String, String, HostTensor)] = [
            ("lift-bands-input.png", "the \(inputName)", try grayInput),
            ("lift-bands-pink-noise.png", "pink noise (seed 1)", try pinkNoise(seed: 1, channels: 1)),
        ]
        var captions: [String] = []
        for (file, title, x) in sources {
            progress("lift-down-pool bands of \(title)")
            let extras = try engine.results(LiftPoolConfiguration.operatorName, x, seed: seed).extras
            let bands = try ["ll", "lh", "hl", "hh"].map { name in
                guard let band = extras[name] else { throw CLIFailure("lift-down-pool gave no band \(name)") }
                return band
            }
            let (bandHeight, bandWidth) = (bands[0].shape[2], bands[0].shape[3])
            let (low, high) = Self.range(bands[0].values)
            let detail = bands.dropFirst().flatMap(\.values).filter(\.isFinite).map { abs($0) }.max() ?? 1
            let limit = detail > 0 ? detail : 1
            var panels = [
                ("LL", Self.panel(bands[0], factor: 1, width: bandWidth, height: bandHeight) { ColourMap.gray($0, low: low, high: high) })
            ]
            for (name, band) in zip(["LH", "HL", "HH"], bands.dropFirst()) {
                panels.append(
                    (name, Self.panel(band, factor: 1, width: bandWidth, height: bandHeight) { ColourMap.gray($0, low: -limit, high: limit) }))
            }
            files.append((file, grid(panels, columns: 2)))
            captions.append(
                "* `\(file)`: \(title); LL stretched from [\(Self.number(low)), \(Self.number(high))] to black-white; "
                    + "LH, HL, HH share one symmetric scale, gray 128 = 0, black = -\(Self.number(limit)), white = +\(Self.number(limit)).")
        }
        sections.append(
            """
            ## LiftDownPool sub-bands

            ![LiftPool bands of the input](lift-bands-input.png) ![LiftPool bands of pink noise](lift-bands-pink-noise.png)

            The four bands of a 2-D LiftDownPool (kernel 5, parameters drawn from seed \(seed)), each at \
            band resolution: LL (low-pass both ways, top left), LH (vertical detail of the horizontal \
            low band), HL, HH (detail both ways). Details are signed, so they share one scale centred \
            on gray. The predict and update networks are untrained, so P(x_e) predicts little and the \
            detail bands still carry much of the image itself (training with the c_p = mean(d^2) \
            regulariser is what pushes detail energy down).

            \(captions.joined(separator: "\n"))
            """)
    }

    // MARK: (c) AdaptiveBlurPool's predicted filters

    mutating func adaptiveFilterMaps() throws {
        progress("adaptive-blur-pool filter maps")
        let first = try grayInput
        let second = try pinkNoise(seed: 1, channels: 1)
        let x = try HostTensor(shape: [1, 2, height, width], values: first.values + second.values)
        let kernel = 3
        let results = try engine.results(
            AdaptiveBlurPool2DConfiguration.operatorName, x, seed: seed,
            options: [
                "kernel": "\(kernel)", "stride": "2", "groups": "2", "padding": "reflect", "softmax": "per-group",
                "filters": "true",
            ])
        guard let filters = results.extras["filters"] else { throw CLIFailure("adaptive-blur-pool gave no filters") }
        let (outputHeight, outputWidth) = (filters.shape[2], filters.shape[3])
        let plane = outputHeight * outputWidth
        let taps = kernel * kernel
        var panels: [(String, Canvas)] = []
        var captions: [String] = []
        for group in 0..<2 {
            var spread = [Float](repeating: 0, count: plane)
            var entropy = [Float](repeating: 0, count: plane)
            for pixel in 0..<plane {
                var total = 0.0
                var moment = 0.0
                var information = 0.0
                for tap in 0..<taps {
                    let weight = Double(filters.values[(group * taps + tap) * plane + pixel])
                    let (du, dv) = (Double(tap / kernel - kernel / 2), Double(tap % kernel - kernel / 2))
                    total += weight
                    moment += weight * (du * du + dv * dv)
                    if weight > 0 { information -= weight * Foundation.log(weight) }
                }
                // Per-group softmax: total is 1 up to rounding; dividing keeps the maps exact anyway.
                spread[pixel] = Float(moment / total)
                entropy[pixel] = Float((information / total + Foundation.log(total)) / Foundation.log(Double(taps)))
            }
            let spreadMap = try HostTensor(shape: [1, 1, outputHeight, outputWidth], values: spread)
            let entropyMap = try HostTensor(shape: [1, 1, outputHeight, outputWidth], values: entropy)
            let source = group == 0 ? first : second
            let (spreadLow, spreadHigh) = Self.range(spread)
            let (entropyLow, entropyHigh) = Self.range(entropy)
            panels.append(("group \(group) input", Self.panel(source, factor: 1, width: width, height: height) { ColourMap.gray($0, low: 0, high: 1) }))
            panels.append(("spread", Self.panel(spreadMap, factor: 2, width: width, height: height) { ColourMap.heat($0, low: spreadLow, high: spreadHigh) }))
            panels.append(("entropy", Self.panel(entropyMap, factor: 2, width: width, height: height) { ColourMap.heat($0, low: entropyLow, high: entropyHigh) }))
            captions.append(
                "* Row \(group + 1) (group \(group), channel \(group) = \(group == 0 ? "the \(inputName)" : "pink noise, seed 1")): "
                    + "spread from \(Self.number(spreadLow)) (dark) to \(Self.number(spreadHigh)) (bright) pixels^2, "
                    + "entropy from \(Self.number(entropyLow)) to \(Self.number(entropyHigh)) (1 = uniform \(kernel)x\(kernel) box).")
        }
        files.append(("adaptive-filters.png", grid(panels, columns: 3)))
        sections.append(
            """
            ## AdaptiveBlurPool predicted filters

            ![AdaptiveBlurPool filter maps](adaptive-filters.png)

            `adaptive-filters.png`: an AdaptiveBlurPool2D (k = \(kernel), stride 2, G = 2 groups, per-group \
            softmax, reflect padding, untrained parameters from seed \(seed)) on a 2-channel input \
            (channel 0: the \(inputName), channel 1: pink noise). Per output pixel and group, from the \
            predicted \(kernel)x\(kernel) filter w (sums to 1): spread = sum_t w_t (du_t^2 + dv_t^2), the \
            filter's second moment about its centre tap (0 = no blur, larger = wider blur), and \
            entropy = -sum_t w_t ln w_t / ln \(taps) (0 = one tap, 1 = a uniform box). Maps are shown 2x \
            nearest, coloured dark purple (low) to pale yellow (high), each stretched over its own range:

            \(captions.joined(separator: "\n"))
            """)
    }

    // MARK: (d) TIPS mixing weights

    mutating func tipsMixingWeights() throws {
        progress("tips-pool mixing weights")
        let names = ["input", "checker 1", "checker 4", "pink 1", "pink 2", "pink 3", "pink 4", "pink 5"]
        let side = max(width, height)
        let planes = [
            try grayInput,
            try Self.crop(TestImages.checkerboard(size: side, period: 1), side: side, height: height, width: width),
            try Self.crop(TestImages.checkerboard(size: side, period: 4), side: side, height: height, width: width),
            try pinkNoise(seed: 1, channels: 5),
        ].flatMap(\.values)
        let shifts = [(0, 0), (1, 0), (0, 1), (1, 1)]
        let plane = width * height
        let channelCount = names.count
        // Sample n is the 8-channel stack shifted circularly by shifts[n] (rows, columns).
        let x = try HostTensor(shape: [shifts.count, channelCount, height, width]) { index in
            let (sample, rest) = (index / (channelCount * plane), index % (channelCount * plane))
            let (channel, pixel) = (rest / plane, rest % plane)
            let (dy, dx) = shifts[sample]
            let row = (pixel / width - dy + height) % height
            let column = (pixel % width - dx + width) % width
            return planes[channel * plane + row * width + column]
        }
        guard let tau = try engine.results(TIPSPool2DConfiguration.operatorName, x, seed: seed).extras["tau"] else {
            throw CLIFailure("tips-pool gave no tau")
        }
        let (low, high) = Self.range(tau.values)

        let cell = 16
        let scale = 1
        let rowLabelWidth = Canvas.textWidth("checker 4 ", scale: scale)
        let blockWidth = 4 * cell
        let labelHeight = (PixelFont.height + 4) * scale
        let gap = 3 * Self.gap
        let rangeWidth = Canvas.textWidth("0.0000-0.0000", scale: scale)
        // Untrained weights mix almost uniformly, so one scale for all would show one channel
        // and flat rows: each channel (row, across all shifts) is stretched over its own range,
        // which is printed at the row's right end.
        var rowRanges: [(low: Float, high: Float)] = []
        for channel in 0..<channelCount {
            rowRanges.append(Self.range((0..<shifts.count).flatMap { sample in
                (0..<4).map { tau.values[(sample * channelCount + channel) * 4 + $0] }
            }))
        }
        var canvas = Canvas(
            width: rowLabelWidth + shifts.count * (blockWidth + gap) + gap + rangeWidth,
            height: 2 * labelHeight + channelCount * cell + gap)
        for (sample, shift) in shifts.enumerated() {
            let left = rowLabelWidth + gap + sample * (blockWidth + gap)
            canvas.text("shift \(shift.0),\(shift.1)", top: 2, left: left, scale: scale)
            for phase in 0..<4 { canvas.text("p\(phase)", top: labelHeight + 2, left: left + phase * cell + 2, scale: scale) }
            for channel in 0..<channelCount {
                for phase in 0..<4 {
                    let value = tau.values[(sample * channelCount + channel) * 4 + phase]
                    let colour = ColourMap.heat(value, low: rowRanges[channel].low, high: rowRanges[channel].high)
                    let top = 2 * labelHeight + channel * cell
                    for row in 0..<(cell - 1) {
                        for column in 0..<(cell - 1) { canvas.set(top + row, left + phase * cell + column, colour) }
                    }
                }
            }
        }
        for (channel, name) in names.enumerated() {
            canvas.text(name, top: 2 * labelHeight + channel * cell + (cell - PixelFont.height) / 2, left: 2, scale: scale)
            let range = "\(Format.fixed(Double(rowRanges[channel].low), 4))-\(Format.fixed(Double(rowRanges[channel].high), 4))"
            canvas.text(
                range, top: 2 * labelHeight + channel * cell + (cell - PixelFont.height) / 2,
                left: rowLabelWidth + shifts.count * (blockWidth + gap) + gap, scale: scale)
        }
        files.append(("tips-tau.png", canvas))
        var table = ["| channel | " + (0..<4).map { "tau_\($0)" }.joined(separator: " | ") + " |", "|---|---|---|---|---|"]
        for (channel, name) in names.enumerated() {
            let row = (0..<4).map { Format.fixed(Double(tau.values[channel * 4 + $0]), 4) }
            table.append("| \(name) | " + row.joined(separator: " | ") + " |")
        }
        sections.append(
            """
            ## TIPS mixing weights

            ![TIPS tau per channel](tips-tau.png)

            `tips-tau.png`: tau, the softmax weights TIPSPool2D (k = 3, untrained parameters from seed \
            \(seed)) gives the four polyphase components p0 = (0,0), p1 = (1,0), p2 = (0,1), p3 = (1,1) of \
            each channel, for the 8-channel input (rows: the \(inputName)'s gray plane, checkerboards of \
            period 1 and 4, pink noise seeds 1 to 5 of one generator), shifted circularly by 0 or 1 \
            row and column (blocks). All values lie in [\(Self.number(low)), \(Self.number(high))]: untrained \
            weights mix almost uniformly (0.25 each). So that the pattern is visible, each channel's row \
            (across all four blocks) is coloured over its own range, dark purple = its minimum, pale \
            yellow = its maximum, printed at the right end of the row: compare colours within a row, \
            not between rows. Unshifted values:

            \(table.joined(separator: "\n"))
            """)
    }

    /// Adds a section to index.md for a picture made elsewhere (the EVAL-CHART spot in
    /// ``Picture/run()``).
    mutating func appendSection(_ markdown: String) {
        sections.append(markdown)
    }

    /// index.md: what was computed where, then one section per picture.
    func index() -> String {
        """
        # Nyquist pictures

        Written by `nyquist picture` from the \(inputName) (\(width)x\(height), \(channels) channel\(channels == 1 ? "" : "s")) \
        on \(engine.place), learned layers initialised from seed \(seed). Every file below is an \
        8-bit PNG; each caption says how values map to gray levels or colours. Labels in the \
        pictures use a built-in 5x7 pixel font.

        \(sections.joined(separator: "\n\n"))

        """
    }
}
