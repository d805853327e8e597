import Foundation

/// A line chart written as a standalone SVG document: one or more panels side by side that share
/// the x values, a y range and a legend, one polyline (with point markers) per series.
///
/// Hand-written SVG 1.1 (no dependency): axes, ticks at "nice" steps, axis labels, a title per
/// panel and a legend. Non-finite values break a series' line rather than being drawn.
struct LineChart {
    /// One named line: `values[i]` is its y at the chart's `xValues[i]`.
    struct Series {
        /// Legend entry.
        var name: String
        /// One y per x value.
        var values: [Double]
    }

    /// One plot area with its own title.
    struct Panel {
        /// Shown above the plot area.
        var title: String
        /// The lines, in legend order (every panel should list the same names).
        var series: [Series]
    }

    /// Shown at the top of the document.
    var title: String
    /// Label under the x axis of every panel.
    var xLabel: String
    /// Label beside the y axis of the first panel.
    var yLabel: String
    /// The x positions shared by every series (ascending).
    var xValues: [Double]
    /// The plot areas, left to right.
    var panels: [Panel]

    /// Plot-area size and margins, in SVG user units (pixels).
    private static let plotWidth = 360.0
    private static let plotHeight = 260.0
    private static let left = 70.0
    private static let top = 60.0
    private static let gap = 50.0
    private static let bottom = 60.0
    private static let legendWidth = 190.0

    /// Distinguishable line colours: the colour-blind-friendly palette of Okabe and Ito, with its
    /// yellow (too faint on white) replaced by a dark wine red, then grey.
    static let palette = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#882255", "#999999"]

    /// Dash patterns cycled with a different period from the colours, so that series whose
    /// values coincide (one line hidden under another) still show both.
    static let dashes = ["none", "6,3", "2,3", "10,3,2,3"]

    /// The chart as an SVG document.
    func svg() -> String {
        let panelCount = Double(max(panels.count, 1))
        let width = Self.left + panelCount * Self.plotWidth + (panelCount - 1) * Self.gap + 20 + Self.legendWidth
        let height = Self.top + Self.plotHeight + Self.bottom
        let finite = panels.flatMap { $0.series.flatMap(\.values) }.filter(\.isFinite)
        let (yMaximum, yStep) = Self.niceRange(upTo: finite.max() ?? 1)
        let xMinimum = xValues.first ?? 0
        let xMaximum = max(xValues.last ?? 1, xMinimum + 1)

        var lines: [String] = [
            #"<?xml version="1.0" encoding="UTF-8"?>"#,
            #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(Self.number(width))" height="\#(Self.number(height))" "#
                + #"viewBox="0 0 \#(Self.number(width)) \#(Self.number(height))" font-family="sans-serif" font-size="12">"#,
            #"<rect x="0" y="0" width="\#(Self.number(width))" height="\#(Self.number(height))" fill="white"/>"#,
            #"<text x="\#(Self.number(width / 2))" y="22" text-anchor="middle" font-size="16">\#(Self.escape(title))</text>"#,
        ]
        for (panelIndex, panel) in panels.enumerated() {
            let originX = Self.left + Double(panelIndex) * (Self.plotWidth + Self.gap)
            let originY = Self.top + Self.plotHeight
            func xPosition(_ x: Double) -> Double {
                originX + (x - xMinimum) / (xMaximum - xMinimum) * Self.plotWidth
            }
            func yPosition(_ y: Double) -> Double {
                originY - y / yMaximum * Self.plotHeight
            }
            lines.append(
                #"<text x="\#(Self.number(originX + Self.plotWidth / 2))" y="\#(Self.number(Self.top - 10))" "#
                    + #"text-anchor="middle" font-size="14">\#(Self.escape(panel.title))</text>"#)
            // Grid lines and y ticks.
            var tick = 0.0
            while tick <= yMaximum * (1 + 1e-9) {
                let y = yPosition(tick)
                lines.append(
                    #"<line x1="\#(Self.number(originX))" y1="\#(Self.number(y))" x2="\#(Self.number(originX + Self.plotWidth))" "#
                        + #"y2="\#(Self.number(y))" stroke="rgb(224,224,224)" stroke-width="1"/>"#)
                lines.append(
                    #"<text x="\#(Self.number(originX - 6))" y="\#(Self.number(y + 4))" text-anchor="end">\#(Self.tickLabel(tick, step: yStep))</text>"#)
                tick += yStep
            }
            for x in xValues {
                let position = xPosition(x)
                lines.append(
                    #"<line x1="\#(Self.number(position))" y1="\#(Self.number(originY))" x2="\#(Self.number(position))" "#
                        + #"y2="\#(Self.number(originY + 5))" stroke="black" stroke-width="1"/>"#)
                lines.append(
                    #"<text x="\#(Self.number(position))" y="\#(Self.number(originY + 18))" text-anchor="middle">\#(Self.tickLabel(x, step: 1))</text>"#)
            }
            // Axes.
            lines.append(
                #"<line x1="\#(Self.number(originX))" y1="\#(Self.number(originY))" x2="\#(Self.number(originX + Self.plotWidth))" "#
                    + #"y2="\#(Self.number(originY))" stroke="black" stroke-width="1.5"/>"#)
            lines.append(
                #"<line x1="\#(Self.number(originX))" y1="\#(Self.number(Self.top))" x2="\#(Self.number(originX))" "#
                    + #"y2="\#(Self.number(originY))" stroke="black" stroke-width="1.5"/>"#)
            lines.append(
                #"<text x="\#(Self.number(originX + Self.plotWidth / 2))" y="\#(Self.number(originY + 40))" "#
                    + #"text-anchor="middle">\#(Self.escape(xLabel))</text>"#)
            if panelIndex == 0 {
                let labelY = Self.top + Self.plotHeight / 2
                lines.append(
                    #"<text x="18" y="\#(Self.number(labelY))" text-anchor="middle" "#
                        + #"transform="rotate(-90 18 \#(Self.number(labelY)))">\#(Self.escape(yLabel))</text>"#)
            }
            // One polyline per unbroken run of finite points, and a marker on every point.
            for (seriesIndex, series) in panel.series.enumerated() {
                let colour = Self.palette[seriesIndex % Self.palette.count]
                var runs: [[(Double, Double)]] = [[]]
                for (x, y) in zip(xValues, series.values) {
                    if y.isFinite {
                        runs[runs.count - 1].append((xPosition(x), yPosition(min(y, yMaximum))))
                    } else if !(runs.last?.isEmpty ?? true) {
                        runs.append([])
                    }
                }
                let dash = Self.dashes[seriesIndex % Self.dashes.count]
                lines.append(
                    #"<g stroke="\#(colour)" fill="\#(colour)"><title>\#(Self.escape(series.name))</title>"#)
                for run in runs where run.count > 1 {
                    let points = run.map { "\(Self.number($0.0)),\(Self.number($0.1))" }.joined(separator: " ")
                    lines.append(#"<polyline points="\#(points)" fill="none" stroke-width="2" stroke-dasharray="\#(dash)"/>"#)
                }
                for point in runs.joined() {
                    lines.append(#"<circle cx="\#(Self.number(point.0))" cy="\#(Self.number(point.1))" r="3"/>"#)
                }
                lines.append("</g>")
            }
        }
        // Legend, from the first panel's series names.
        let legendX = Self.left + panelCount * Self.plotWidth + (panelCount - 1) * Self.gap + 20
        for (index, series) in (panels.first?.series ?? []).enumerated() {
            let colour = Self.palette[index % Self.palette.count]
            let dash = Self.dashes[index % Self.dashes.count]
            let y = Self.top + 10 + Double(index) * 20
            lines.append(
                #"<line x1="\#(Self.number(legendX))" y1="\#(Self.number(y))" x2="\#(Self.number(legendX + 24))" "#
                    + #"y2="\#(Self.number(y))" stroke="\#(colour)" stroke-width="2" stroke-dasharray="\#(dash)"/>"#)
            lines.append(#"<circle cx="\#(Self.number(legendX + 12))" cy="\#(Self.number(y))" r="3" fill="\#(colour)"/>"#)
            lines.append(
                #"<text x="\#(Self.number(legendX + 30))" y="\#(Self.number(y + 4))">\#(Self.escape(series.name))</text>"#)
        }
        lines.append("</svg>")
        return lines.joined(separator: "\n") + "\n"
    }

    /// The top of the y axis and the tick step: a 1, 2 or 5 times a power of ten step giving
    /// about five ticks, and a top that is a whole number of steps at or above `maximum`.
    static func niceRange(upTo maximum: Double) -> (top: Double, step: Double) {
        guard maximum.isFinite, maximum > 0 else { return (1, 0.2) }
        let rough = maximum / 5
        let magnitude = pow(10, (log10(rough)).rounded(.down))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
        return ((maximum / step).rounded(.up) * step, step)
    }

    /// A tick label with as many decimals as `step` needs.
    static func tickLabel(_ value: Double, step: Double) -> String {
        let decimals = max(0, Int((-log10(step)).rounded(.up)))
        return String(format: "%.\(decimals)f", value)
    }

    /// A coordinate with two decimals.
    static func number(_ value: Double) -> String {
        String(format: "%.2f", value)
    }

    /// `text` with the five XML special characters escaped.
    static func escape(_ text: String) -> String {
        var escaped = ""
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&apos;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
