import DevDBCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How tables and progress show values to people: units and relative times. `-o json` prints
/// the API's exact values instead.
enum Human {
    /// 59122 → "57.7 KiB", 14050000 → "13.4 MiB".
    static func bytes(_ n: Int64?) -> String {
        guard let n else { return "-" }
        if n < 1024 { return "\(n) B" }
        var value = Double(n)
        var unit = 0
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
        return String(format: "%.1f %@", value, units[unit])
    }

    /// A length of time: "9.0 s", "2 min 5 s", "1 h 5 min", "3 d 2 h".
    static func duration(_ seconds: Double?) -> String {
        guard let seconds else { return "-" }
        if seconds < 60 { return String(format: "%.1f s", seconds) }
        let s = Int(seconds.rounded())
        if s < 3600 { return "\(s / 60) min" + (s % 60 == 0 ? "" : " \(s % 60) s") }
        if s < 86400 { return "\(s / 3600) h" + (s % 3600 / 60 == 0 ? "" : " \(s % 3600 / 60) min") }
        return "\(s / 86400) d" + (s % 86400 / 3600 == 0 ? "" : " \(s % 86400 / 3600) h")
    }

    /// Whole seconds for elapsed times on progress lines: "12 s", "1 min 5 s".
    static func elapsed(_ seconds: Double) -> String {
        let s = max(0, Int(seconds))
        return s < 60 ? "\(s) s" : duration(Double(s))
    }

    /// A time relative to now: "in 3 h", "5 min ago", "just now".
    static func relative(_ date: Date?, now: Date = Date()) -> String {
        guard let date else { return "-" }
        let delta = date.timeIntervalSince(now)
        let magnitude = abs(delta)
        if magnitude < 10 { return "just now" }
        let text: String
        switch magnitude {
        case ..<90: text = "\(Int(magnitude)) s"
        case ..<(90 * 60): text = "\(Int((magnitude / 60).rounded())) min"
        case ..<(36 * 3600): text = "\(Int((magnitude / 3600).rounded())) h"
        default: text = "\(Int((magnitude / 86400).rounded())) d"
        }
        return delta > 0 ? "in \(text)" : "\(text) ago"
    }

    static func yesNo(_ value: Bool) -> String { value ? "yes" : "no" }

    /// A database's hibernate-after: "30 min", "never", or the API's default.
    static func hibernateAfter(_ seconds: Double?) -> String {
        guard let seconds else { return "-" }
        return seconds <= 0 ? "never" : duration(seconds)
    }
}

/// A table with a header of upper-case titles; the last column is not padded.
func printTable(_ titles: [String], _ rows: [[String]]) {
    var widths = titles.map(\.count)
    for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    func line(_ values: [String]) -> String {
        values.enumerated().map { i, v in i == values.count - 1 ? v : v.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    print(line(titles.map { $0.uppercased() }))
    for r in rows { print(line(r)) }
}

/// Name-value lines; fields without a value are left out.
func printFields(_ fields: [(String, String?)]) {
    let shown = fields.compactMap { name, value in value.map { (name, $0) } }
    let width = shown.map(\.0.count).max() ?? 0
    for (name, value) in shown { print("\(name.padding(toLength: width, withPad: " ", startingAt: 0))  \(value)") }
}

/// One line per step of a long piece of work, with the step's elapsed time. On a terminal the
/// line is redrawn in place as it progresses and a new step starts a new line; otherwise (logs,
/// CI) a plain line is printed whenever the text changes. Written to stderr, so `-o json` output
/// on stdout stays clean.
final class ProgressLine {
    private let terminal: Bool
    private let write: (String) -> Void
    private var step: String?
    private var text = ""
    private var stepStarted = Date()
    private var drawn = false

    init(terminal: Bool = isatty(2) == 1, write: @escaping (String) -> Void = { standardError($0, newline: false) }) {
        self.terminal = terminal
        self.write = write
    }

    /// `step` names the step (a different one starts a new line); `text` says where it is;
    /// `since` is when the API says the step began (the local time of its first sight otherwise).
    func update(step: String, text: String, since: Date?, now: Date = Date()) {
        if step != self.step {
            if terminal && drawn { write("\n") }
            self.step = step
            self.text = ""
            stepStarted = now
            drawn = false
        }
        let start = since.flatMap { $0 <= now.addingTimeInterval(1) ? $0 : nil } ?? stepStarted
        let line = "\(text) (\(Human.elapsed(now.timeIntervalSince(start))))"
        if terminal {
            write("\r\u{1B}[K" + line)
            drawn = true
        } else if text != self.text {
            write(line + "\n")
        }
        self.text = text
    }

    /// Ends the line being redrawn, if any.
    func finish() {
        if terminal && drawn { write("\n") }
        drawn = false
        step = nil
    }
}

/// "kate-pg: restoring: 40 of 90 items", "kate-pg: provisioning (queued)": the state, and the
/// phase where it says more than the state.
func progressText(_ prefix: String, state: String, phase: String?) -> String {
    guard let phase, !phase.isEmpty, phase != state else { return "\(prefix): \(state)" }
    if phase.hasPrefix(state) { return "\(prefix): \(phase)" }
    return "\(prefix): \(state) (\(phase))"
}

/// The step a state and phase are at: the state, and the phase's step where it names another.
func progressStep(state: String, phase: String?) -> String {
    guard let step = phaseStep(phase), !step.isEmpty, step != state else { return state }
    return state + "/" + step
}

/// An exact time, for next to a relative one.
func iso(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }
