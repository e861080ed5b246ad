import DevDBCore

/// The DevDB user name of a single sign-on user (docs/sso.md, "Names"): the claim value,
/// lowercased, each run of characters other than a-z and 0-9 made one `-`, trimmed of `-`, cut to
/// 54 characters, then `-` and the first 8 hex digits of SHA-256(issuer + "\n" + sub). The hash is
/// left off only when the claim is unique per person at the issuer (`sub`), its value is already
/// a valid name as it is, and it is not `admin`. So names are DNS labels (owner keys, generated
/// database names), stable for a person (sub never changes), and two people never share one
/// unless their issuer+sub hashes agree in 32 bits.
public enum SSOUserName {
    public static func derive(_ value: String, uniquePerPerson: Bool, issuer: String, subject: String) -> String {
        if uniquePerPerson, DatabaseName.isValid(value), value != "admin" { return value }
        var base = ""
        for c in value.lowercased().unicodeScalars {
            if (c >= "a" && c <= "z") || (c >= "0" && c <= "9") { base.unicodeScalars.append(c) }
            else if !base.hasSuffix("-") { base += "-" }
        }
        while base.hasPrefix("-") { base.removeFirst() }
        base = String(base.prefix(54))
        while base.hasSuffix("-") { base.removeLast() }
        let hash = String(TokenSecrets.sha256Hex(issuer + "\n" + subject).prefix(8))
        return base.isEmpty ? "sso-" + hash : base + "-" + hash
    }
}
