import Foundation

/// Horizontal bar charts as inline SVG, drawn on the server (no script, no chart library):
/// labelled for screen readers, colours from the stylesheet's classes.
enum ConsoleCharts {
    static func bars(title: String, _ values: [(String, Double)], unit: String) -> String {
        let rows = values.isEmpty ? [("none yet", 0.0)] : Array(values.prefix(20))
        let maxValue = max(rows.map(\.1).max() ?? 0, 1)
        let rowHeight = 26, labelWidth = 180, barWidth = 300
        let height = rows.count * rowHeight + 34
        var svg = "<figure class=\"chart\"><svg role=\"img\" aria-labelledby=\"\(id(title))\" viewBox=\"0 0 \(labelWidth + barWidth + 90) \(height)\" width=\"100%\">"
        svg += "<title id=\"\(id(title))\">\(escape(title)): " + rows.map { "\(escape($0.0)) \(format($0.1))\(unit)" }.joined(separator: ", ") + "</title>"
        svg += "<text class=\"chart-title\" x=\"0\" y=\"18\">\(escape(title))</text>"
        for (i, (label, value)) in rows.enumerated() {
            let y = 30 + i * rowHeight
            let w = Int((value / maxValue) * Double(barWidth))
            svg += "<text class=\"chart-label\" x=\"\(labelWidth - 8)\" y=\"\(y + 16)\" text-anchor=\"end\">\(escape(label))</text>"
            svg += "<rect class=\"chart-bar\" x=\"\(labelWidth)\" y=\"\(y + 3)\" width=\"\(max(w, value > 0 ? 2 : 0))\" height=\"\(rowHeight - 8)\"/>"
            svg += "<text class=\"chart-value\" x=\"\(labelWidth + w + 6)\" y=\"\(y + 16)\">\(format(value))\(escape(unit))</text>"
        }
        return svg + "</svg></figure>"
    }

    static func format(_ v: Double) -> String { v == v.rounded() ? String(Int(v)) : String(format: "%.1f", v) }

    static func id(_ title: String) -> String {
        "chart-" + title.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }.map(String.init).joined()
    }

    /// Labels are names from the catalog: escaped like everything the templates print.
    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
