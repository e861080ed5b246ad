#if canImport(Glibc)
import Glibc
#endif
import Logging

public enum LogLevel: Int, Sendable, Comparable, CaseIterable {
    case debug, info, warning, error
    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
    public init?(name: String) {
        switch name.lowercased() {
        case "debug": self = .debug
        case "info": self = .info
        case "warning", "warn": self = .warning
        case "error": self = .error
        default: return nil
        }
    }
    var name: String { ["debug", "info", "warning", "error"][rawValue] }

    var swiftLog: Logger.Level {
        switch self {
        case .debug: return .debug
        case .info: return .info
        case .warning: return .warning
        case .error: return .error
        }
    }
}

/// The router's logger: a swift-log `Logger` whose handler writes logfmt lines to stderr, with
/// metadata keys prefixed `devdb.`. Callers pass only what is safe to log: never passwords or
/// startup options.
public struct Log: Sendable {
    public let logger: Logger

    public init(level: LogLevel) {
        var logger = Logger(label: "devdb.router") { _ in LogfmtHandler() }
        logger.logLevel = level.swiftLog
        self.logger = logger
    }

    public func debug(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) { write(.debug, message, metadata) }
    public func info(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) { write(.info, message, metadata) }
    public func warning(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) { write(.warning, message, metadata) }
    public func error(_ message: String, _ metadata: KeyValuePairs<String, String> = [:]) { write(.error, message, metadata) }

    func write(_ l: LogLevel, _ message: String, _ metadata: KeyValuePairs<String, String>) {
        guard l.swiftLog >= logger.logLevel else { return }  // no metadata built for dropped lines
        var m = Logger.Metadata()
        for (k, v) in metadata { m[k] = .string(v) }
        logger.log(level: l.swiftLog, "\(message)", metadata: m)
    }
}

/// logfmt on fd 2: `ts=… level=… msg=… devdb.key=value…`, metadata in the order given.
struct LogfmtHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var line = "ts=\(Self.timestamp()) level=\(Self.name(event.level)) msg=\(Self.quote(event.message.description))"
        let all = metadata.merging(event.metadata ?? [:]) { $1 }
        for k in all.keys.sorted() { line += " devdb.\(k)=\(Self.quote(all[k]!.description))" }
        line += "\n"
        // glibc's stderr is not concurrency-safe in Swift 6: write to fd 2 directly.
        line.utf8CString.withUnsafeBufferPointer { _ = Glibc.write(2, $0.baseAddress, $0.count - 1) }
    }

    static func name(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: return "debug"
        case .info, .notice: return "info"
        case .warning: return "warning"
        case .error, .critical: return "error"
        }
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var tm = tm()
        var secs = ts.tv_sec
        gmtime_r(&secs, &tm)
        func pad(_ v: Int, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(pad(Int(tm.tm_year) + 1900, 4))-\(pad(Int(tm.tm_mon) + 1, 2))-\(pad(Int(tm.tm_mday), 2))T"
            + "\(pad(Int(tm.tm_hour), 2)):\(pad(Int(tm.tm_min), 2)):\(pad(Int(tm.tm_sec), 2)).\(pad(ts.tv_nsec / 1_000_000, 3))Z"
    }

    static func quote(_ s: String) -> String {
        if !s.isEmpty, s.allSatisfy({ $0.isLetter || $0.isNumber || "-_.:/[]@".contains($0) }) { return s }
        var out = "\""
        for ch in s {
            switch ch {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            default: out.append(ch)
            }
        }
        return out + "\""
    }
}
