/// A database name: one DNS label, `[a-z0-9-]{1,63}` not starting or ending with `-`, so `<name>.<db-domain>` is a valid
/// hostname. Names are the route keys the API writes and the router reads.
public struct DatabaseName: Hashable, Sendable, CustomStringConvertible {
    public let value: String

    public init?(_ raw: String) {
        guard Self.isValid(raw) else { return nil }
        self.value = raw
    }

    public var description: String { value }

    public static func isValid(_ raw: String) -> Bool {
        let bytes = raw.utf8
        guard (1...63).contains(bytes.count), bytes.first != 0x2D, bytes.last != 0x2D else { return false }
        return bytes.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
    }

    /// Explains what is wrong with a rejected name, for error messages.
    public static func problem(with raw: String) -> String? {
        if raw.isEmpty { return "a name cannot be empty" }
        if raw.utf8.count > 63 { return "a name has at most 63 characters" }
        if raw.hasPrefix("-") || raw.hasSuffix("-") { return "a name must start and end with a letter or digit" }
        if !isValid(raw) { return "a name may use only lowercase letters a-z, digits 0-9 and '-'" }
        return nil
    }
}
