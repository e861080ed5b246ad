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

    /// The largest whole unit: 90d, 8h, 10m, 45s.
    public static func describe(_ seconds: Double) -> String {
        for (unit, size) in [("d", 86400.0), ("h", 3600), ("m", 60)] where seconds >= size && seconds.truncatingRemainder(dividingBy: size) == 0 {
            return "\(Int(seconds / size))\(unit)"
        }
        return "\(Int(seconds))s"
    }
}
