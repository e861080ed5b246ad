/// Command-line options that may also come from environment variables `<PREFIX><OPTION>`
/// (upper case, '-' as '_'). The command line wins; repeatable options take a
/// comma-separated list in the environment; flags (options without a value) are on for `true`
/// or `1`.
public struct EnvironmentOptions: Sendable {
    public let prefix: String
    public let names: [String]
    public let repeatable: Set<String>
    public let flags: Set<String>

    public init(prefix: String, names: [String], repeatable: Set<String>, flags: Set<String> = []) {
        self.prefix = prefix
        self.names = names
        self.repeatable = repeatable
        self.flags = flags
    }

    public func variable(for name: String) -> String {
        prefix + String(name.uppercased().map { $0 == "-" ? "_" : $0 })
    }

    public func merge(arguments: [String], environment: [String: String]) -> [String] {
        var out = arguments
        for name in names + flags.sorted() {
            guard let value = environment[variable(for: name)], !value.isEmpty else { continue }
            if arguments.contains(where: { $0 == "--\(name)" || $0.hasPrefix("--\(name)=") }) { continue }
            if flags.contains(name) {
                if ["true", "1", "yes"].contains(value.lowercased()) { out.append("--\(name)") }
                continue
            }
            let values = repeatable.contains(name)
                ? value.split(separator: ",").map { String($0.filter { $0 != " " }) }.filter { !$0.isEmpty }
                : [value]
            for v in values { out += ["--\(name)", v] }
        }
        return out
    }

    /// The process environment as a dictionary.
    public static var processEnvironment: [String: String] {
        var environment: [String: String] = [:]
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { environment[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        return environment
    }
}

#if canImport(Glibc)
import Glibc
#endif
