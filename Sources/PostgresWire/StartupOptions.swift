/// The `options` startup parameter, split and joined as PostgreSQL's `pg_split_opts` does:
/// whitespace separates arguments and a backslash takes the next character literally.
/// Clients without SNI name their route here as `-c devdb.route=<name>`; the router removes
/// that setting before forwarding, because the backend does not know it.
public struct StartupOptions: Equatable, Sendable {
    public var arguments: [String]

    public static let routeSetting = "devdb.route"

    public init(arguments: [String]) { self.arguments = arguments }

    public init(parsing text: String) {
        var args: [String] = []
        var current: [UInt8] = []
        var inArgument = false
        var escape = false
        for byte in text.utf8 {
            if escape {
                current.append(byte); escape = false; inArgument = true
            } else if byte == UInt8(ascii: "\\") {
                escape = true; inArgument = true
            } else if Self.isSpace(byte) {
                if inArgument { args.append(String(decoding: current, as: UTF8.self)); current.removeAll() }
                inArgument = false
            } else {
                current.append(byte); inArgument = true
            }
        }
        // A lone trailing backslash escapes nothing and makes no argument.
        if inArgument && !(escape && current.isEmpty) { args.append(String(decoding: current, as: UTF8.self)) }
        arguments = args
    }

    /// The separators of PostgreSQL's pg_split_opts (C isspace).
    static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || (0x09...0x0D).contains(b) }

    /// Joins the arguments back, escaping whitespace and backslashes.
    public var text: String {
        arguments.map { arg in
            var out = ""
            for ch in arg.unicodeScalars {
                if ch == "\\" || (ch.isASCII && Self.isSpace(UInt8(ch.value))) { out.append("\\") }
                out.unicodeScalars.append(ch)
            }
            return out
        }.joined(separator: " ")
    }

    /// Removes every `devdb.route` setting (`-c devdb.route=X`, `-cdevdb.route=X`,
    /// `--devdb.route=X`) and returns its value. Two different values are an error.
    public mutating func removeRoute() throws(WireError) -> String? {
        var kept: [String] = []
        var found: String?
        var i = 0
        func record(_ value: String) throws(WireError) {
            if let f = found, f != value {
                throw .malformed("options name two routes, \"\(f)\" and \"\(value)\"")
            }
            found = value
        }
        let prefix = Self.routeSetting + "="
        while i < arguments.count {
            let arg = arguments[i]
            if arg == "-c", i + 1 < arguments.count, arguments[i + 1].hasPrefix(prefix) {
                try record(String(arguments[i + 1].dropFirst(prefix.count)))
                i += 2
                continue
            }
            if arg.hasPrefix("-c" + prefix) {
                try record(String(arg.dropFirst(2 + prefix.count))); i += 1; continue
            }
            if arg.hasPrefix("--" + prefix) {
                try record(String(arg.dropFirst(2 + prefix.count))); i += 1; continue
            }
            kept.append(arg)
            i += 1
        }
        arguments = kept
        return found
    }
}
