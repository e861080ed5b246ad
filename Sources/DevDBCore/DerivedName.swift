/// A database name derived from a CI branch or pull-request number (`devdb name-for`), so a
/// pipeline can name its database without a lookup table.
///
/// - A bare number (`123`) or `refs/pull/123/merge` is a pull/merge request: `pr-123`.
/// - `refs/heads/` is dropped from a branch ref.
/// - Lowercase letters, digits and `-` stay; every other character (uppercase, `/`, `.`, `_`,
///   spaces, non-ASCII) becomes `-`, runs of `-` collapse and none is left at either end.
/// - When anything was replaced or lowercased, or the name would pass 63 characters, an 8-digit
///   hex hash of the whole input (prefix and branch) is appended after cutting the name to fit,
///   so `feature/a` and `feature-a`, or two long branches sharing their first 54 characters,
///   never get the same name. Names that needed no change and fit are kept as they are.
/// The hash is FNV-1a (64-bit, folded to 32), the same on every machine and every run.
public enum DerivedName {
    public static func forCI(_ raw: String, prefix: String? = nil) -> String {
        let input = raw.trimmingWhitespace
        var natural = input
        if natural.hasPrefix("refs/heads/") { natural = String(natural.dropFirst("refs/heads/".count)) }
        let parts = natural.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 4, parts[0] == "refs", parts[1] == "pull" || parts[1] == "merge-requests", isDigits(parts[2]) {
            natural = "pr-\(parts[2])"
        } else if isDigits(Substring(natural)) {
            natural = "pr-\(natural)"
        }
        let p = (prefix ?? "").trimmingWhitespace
        if !p.isEmpty { natural = p + "-" + natural }
        let clean = sanitize(natural)
        if clean == natural && DatabaseName.isValid(clean) { return clean }
        let suffix = hash(p + "\u{0}" + input)
        var body = String(clean.prefix(63 - 1 - suffix.count))
        while body.hasSuffix("-") { body.removeLast() }
        return (body.isEmpty ? "db" : body) + "-" + suffix
    }

    /// Lowercase ASCII letters and digits kept, `A-Z` lowercased, anything else `-`; runs of `-`
    /// collapsed and trimmed.
    static func sanitize(_ s: String) -> String {
        var out = ""
        for scalar in s.unicodeScalars {
            let v = scalar.value
            let c: Character
            if (0x61...0x7A).contains(v) || (0x30...0x39).contains(v) { c = Character(scalar) }
            else if (0x41...0x5A).contains(v) { c = Character(Unicode.Scalar(v + 0x20)!) }
            else { c = "-" }
            if c == "-" && (out.isEmpty || out.hasSuffix("-")) { continue }
            out.append(c)
        }
        while out.hasSuffix("-") { out.removeLast() }
        return out
    }

    static func hash(_ s: String) -> String {
        var h: UInt64 = 0xcbf29ce484222325
        for byte in s.utf8 { h = (h ^ UInt64(byte)) &* 0x100000001b3 }
        let folded = UInt32(truncatingIfNeeded: h ^ (h >> 32))
        let hex = String(folded, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }

    private static func isDigits(_ s: Substring) -> Bool { !s.isEmpty && s.utf8.allSatisfy { $0 >= 0x30 && $0 <= 0x39 } }
}

extension String {
    fileprivate var trimmingWhitespace: String {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s.removeFirst() }
        while let l = s.last, l.isWhitespace { s.removeLast() }
        return String(s)
    }
}
