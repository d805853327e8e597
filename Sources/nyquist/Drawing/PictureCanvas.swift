import NyquistImage

/// An 8-bit RGB drawing surface for `nyquist picture`: panels, labels, colour maps.
struct Canvas {
    let width: Int
    let height: Int
    /// Interleaved RGB, row-major.
    private(set) var pixels: [UInt8]

    init(width: Int, height: Int, background: UInt8 = 255) {
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: background, count: width * height * 3)
    }

    /// Sets one pixel; positions outside the canvas are ignored (labels may run off the edge).
    mutating func set(_ row: Int, _ column: Int, _ colour: (UInt8, UInt8, UInt8)) {
        guard (0..<height).contains(row), (0..<width).contains(column) else { return }
        let index = (row * width + column) * 3
        (pixels[index], pixels[index + 1], pixels[index + 2]) = colour
    }

    /// The colour at `row`, `column`.
    func colour(_ row: Int, _ column: Int) -> (UInt8, UInt8, UInt8) {
        let index = (row * width + column) * 3
        return (pixels[index], pixels[index + 1], pixels[index + 2])
    }

    /// Copies `panel` with its top-left corner at (`top`, `left`).
    mutating func draw(_ panel: Canvas, top: Int, left: Int) {
        for row in 0..<panel.height {
            for column in 0..<panel.width { set(top + row, left + column, panel.colour(row, column)) }
        }
    }

    /// Writes `text` (upper-cased; unknown characters as blanks) in the built-in 5x7 font, each
    /// font pixel `scale` x `scale` canvas pixels, with its top-left corner at (`top`, `left`).
    mutating func text(_ text: String, top: Int, left: Int, scale: Int = 1, colour: (UInt8, UInt8, UInt8) = (0, 0, 0)) {
        var x = left
        for character in text.uppercased() {
            let rows = PixelFont.glyphs[character] ?? PixelFont.blank
            for (rowIndex, row) in rows.enumerated() {
                for (columnIndex, mark) in row.enumerated() where mark == "#" {
                    for dy in 0..<scale {
                        for dx in 0..<scale { set(top + rowIndex * scale + dy, x + columnIndex * scale + dx, colour) }
                    }
                }
            }
            x += PixelFont.advance * scale
        }
    }

    /// Width in canvas pixels of `text` at `scale`.
    static func textWidth(_ text: String, scale: Int) -> Int { text.count * PixelFont.advance * scale }

    /// The canvas as an 8-bit RGB PNG image.
    func image() throws -> PNGImage {
        try PNGImage(width: width, height: height, layout: .rgb, samples: pixels.map { UInt16($0) })
    }
}

/// How values become colours; every picture states its rule in index.md.
enum ColourMap {
    /// Gray level round(255 * (v - low) / (high - low)), clamped; NaN is drawn magenta so that
    /// it cannot pass for a value.
    static func gray(_ value: Float, low: Float, high: Float) -> (UInt8, UInt8, UInt8) {
        guard !value.isNaN else { return (255, 0, 255) }
        let level = UInt8(PNGImage.eightBit(high > low ? (value - low) / (high - low) : 0.5))
        return (level, level, level)
    }

    /// A perceptually ordered dark-to-bright ramp (black, purple, orange, pale yellow) of
    /// t = (v - low) / (high - low), clamped to [0, 1].
    static func heat(_ value: Float, low: Float, high: Float) -> (UInt8, UInt8, UInt8) {
        guard !value.isNaN else { return (255, 0, 255) }
        let t = Double(min(max(high > low ? (value - low) / (high - low) : 0.5, 0), 1))
        let anchors: [(Double, Double, Double)] = [(0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)]
        let position = t * Double(anchors.count - 1)
        let index = min(Int(position), anchors.count - 2)
        let fraction = position - Double(index)
        func mix(_ a: Double, _ b: Double) -> UInt8 { UInt8((a + (b - a) * fraction).rounded()) }
        let (a, b) = (anchors[index], anchors[index + 1])
        return (mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}

/// A 5x7 pixel font for panel labels: upper-case letters, digits and a few signs.
enum PixelFont {
    /// Columns from one character's left edge to the next (5 + 1 blank).
    static let advance = 6
    /// Rows of a glyph.
    static let height = 7
    static let blank = [String](repeating: ".....", count: 7)

    static let glyphs: [Character: [String]] = [
        "A": [".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
        "B": ["####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."],
        "C": [".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."],
        "D": ["####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."],
        "E": ["#####", "#....", "#....", "####.", "#....", "#....", "#####"],
        "F": ["#####", "#....", "#....", "####.", "#....", "#....", "#...."],
        "G": [".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"],
        "H": ["#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"],
        "I": [".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."],
        "J": ["..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."],
        "K": ["#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"],
        "L": ["#....", "#....", "#....", "#....", "#....", "#....", "#####"],
        "M": ["#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"],
        "N": ["#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"],
        "O": [".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
        "P": ["####.", "#...#", "#...#", "####.", "#....", "#....", "#...."],
        "Q": [".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"],
        "R": ["####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"],
        "S": [".####", "#....", "#....", ".###.", "....#", "....#", "####."],
        "T": ["#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."],
        "U": ["#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."],
        "V": ["#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."],
        "W": ["#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."],
        "X": ["#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"],
        "Y": ["#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."],
        "Z": ["#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"],
        "0": [".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."],
        "1": ["..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."],
        "2": [".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"],
        "3": ["#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."],
        "4": ["...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."],
        "5": ["#####", "#....", "####.", "....#", "....#", "#...#", ".###."],
        "6": ["..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."],
        "7": ["#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."],
        "8": [".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."],
        "9": [".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."],
        "-": [".....", ".....", ".....", "#####", ".....", ".....", "....."],
        "+": [".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."],
        "=": [".....", ".....", "#####", ".....", "#####", ".....", "....."],
        ".": [".....", ".....", ".....", ".....", ".....", ".##..", ".##.."],
        ",": [".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."],
        ":": [".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."],
        "/": [".....", "....#", "...#.", "..#..", ".#...", "#....", "....."],
        "(": ["...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."],
        ")": [".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."],
        "[": [".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."],
        "]": [".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."],
        " ": blank,
    ]
}
