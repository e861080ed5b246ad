/// Durations as people type them: "90s", "10m", "8h", "2d", or plain seconds. Shared by the API
/// (TTLs) and the CLI (--timeout).
public enum DurationText {
    /// Seconds, or nil when the text is not a positive duration.
    public static func seconds(_ text: String) -> Double? {
        if let n = Double(text), n > 0 { return n }
        guard let unit = text.last, let n = Double(text.dropLast()), n > 0 else { return nil }
        switch unit {
        case "s": return n
        case "m": return n * 60
        case "h": return n * 3600
        case "d": return n * 86400
        default: return nil
        }
    }
}
