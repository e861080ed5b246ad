/// The contract between the API (writer) and the router (reader), documented in
/// `docs/redis-keys.md`. Change it only together with that document.
public enum RouteContract {
    /// Hash with fields `host`, `port`, `state` and optional `tls`, `project`, `owner`.
    public static func routeKey(_ name: String) -> String { "devdb:route:\(name)" }
    /// `PUBLISH devdb:routes <name>` announces any change to `devdb:route:<name>`.
    public static let routesChannel = "devdb:routes"
    /// Hash written by a router for a live session: `host`, `port`, `pid`, `secret` (hex) of the
    /// backend, with a TTL the router refreshes while the session lives.
    public static func cancelKey(_ routerKeyHex: String) -> String { "devdb:cancel:\(routerKeyHex)" }
    /// Routers ask for a hibernated database to be woken: `SADD devdb:wake-requests <name>` (so an
    /// API that was not listening still sees it) and `PUBLISH devdb:wake <name>`.
    public static let wakeChannel = "devdb:wake"
    public static let wakeRequests = "devdb:wake-requests"
    /// Hash per route: field = router id, value = "<open sessions> <last active, epoch s> <written, epoch s>".
    /// Routers write it every few seconds; the API hibernates databases nobody uses.
    public static func activityKey(_ name: String) -> String { "devdb:activity:\(name)" }
}

public enum RouteState: String, Sendable, Equatable {
    case ready, starting, stopped
    /// Asleep: the router holds the client, asks for a wake and waits for `ready`.
    case hibernated
}

/// One route as stored in `devdb:route:<name>`.
public struct RouteRecord: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var state: RouteState
    /// Connect to the backend with TLS (SSLRequest then a TLS handshake).
    public var backendTLS: Bool

    public init(host: String, port: Int, state: RouteState, backendTLS: Bool = false) {
        self.host = host
        self.port = port
        self.state = state
        self.backendTLS = backendTLS
    }

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case missingField(String)
        case badField(String, String)
        public var description: String {
            switch self {
            case .missingField(let f): return "route is missing field \"\(f)\""
            case .badField(let f, let v): return "route field \"\(f)\" has an invalid value \"\(v)\""
            }
        }
    }

    /// Decodes the fields of the route hash (as returned by HGETALL).
    public init(fields: [String: String]) throws(DecodeError) {
        guard let host = fields["host"], !host.isEmpty else { throw .missingField("host") }
        guard let portText = fields["port"] else { throw .missingField("port") }
        guard let port = Int(portText), (1...65535).contains(port) else { throw .badField("port", portText) }
        guard let stateText = fields["state"] else { throw .missingField("state") }
        guard let state = RouteState(rawValue: stateText) else { throw .badField("state", stateText) }
        let tls = fields["tls"] ?? "false"
        guard tls == "true" || tls == "false" else { throw .badField("tls", tls) }
        self.init(host: host, port: port, state: state, backendTLS: tls == "true")
    }

    public var fields: [(String, String)] {
        [("host", host), ("port", String(port)), ("state", state.rawValue), ("tls", backendTLS ? "true" : "false")]
    }
}
