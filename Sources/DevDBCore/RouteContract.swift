/// The contract between the API (writer) and the router (reader), documented in
/// `docs/redis-keys.md`. Change it only together with that document.
public enum RouteContract {
    /// Hash with fields `host`, `port`, `state` and optional `tls`, `version`, `fence`, `project`, `owner`.
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
    /// Route field set when the API refuses a wake (over the owner's awake quota): `<unix time> <reason>`.
    public static let wakeRefusedField = "wake_refused"
    /// Hash per route: field = router id, value = "<open sessions> <last active, epoch s> <written, epoch s>".
    /// Routers write it every few seconds; the API hibernates databases nobody uses.
    public static func activityKey(_ name: String) -> String { "devdb:activity:\(name)" }

    // The hibernation fence (docs/architecture.md, "Sleep never cuts a session").

    /// Every route write takes the next number of this counter as the route's `version`, so a
    /// router can tell a route it read before a fence from one written after it.
    public static let routeVersionCounter = "devdb:route-version"
    /// Set of route names whose route carries a `fence` now (the API is deciding to stop them).
    /// Routers acknowledge every member at least once per activity interval.
    public static let fences = "devdb:fences"
    /// Hash per fenced route: field = router id, value = "<fence token> <sessions the router has
    /// routed to it and not yet ended>", written by each router once it honours the fence.
    public static func fenceAcksKey(_ name: String) -> String { "devdb:fence-acks:\(name)" }
    /// Hash of the routers that may route sessions: field = router id, value = "<lease end, ms of
    /// Redis' clock> <activity interval, s>". A router renews its lease every activity interval
    /// and routes no session once it could not renew it in time; the API waits for the
    /// acknowledgement of every router whose lease has not ended.
    public static let routers = "devdb:routers"

    /// Renews a router's lease on Redis' own clock (no clock of another machine is compared).
    /// KEYS[1] = routers, ARGV = router id, lease seconds, activity interval seconds.
    public static let renewLeaseScript = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('HSET', KEYS[1], ARGV[1], tostring(now + tonumber(ARGV[2]) * 1000) .. ' ' .. ARGV[3])
        return now
        """

    /// The routers whose lease has not ended (and removes those whose has), with each one's
    /// acknowledgement of a fence: an array of [router id, activity interval, acknowledgement or
    /// false]. KEYS[1] = routers, KEYS[2] = the fence's acknowledgements.
    public static let liveRoutersScript = """
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local all = redis.call('HGETALL', KEYS[1])
        local out = {}
        for i = 1, #all, 2 do
          local id, value = all[i], all[i + 1]
          local sep = string.find(value, ' ', 1, true)
          local ends = tonumber(sep and string.sub(value, 1, sep - 1) or value) or 0
          if ends <= now then
            redis.call('HDEL', KEYS[1], id)
          else
            table.insert(out, {id, sep and string.sub(value, sep + 1) or '5', redis.call('HGET', KEYS[2], id)})
          end
        end
        return out
        """
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
    /// Grows with every write of any route (`devdb:route-version`); 0 for routes written before versions.
    public var version: Int
    /// Present while the API decides whether to stop the database (state `hibernated`): routers
    /// acknowledge it with the sessions they have routed to it (`fenceAcksKey`).
    public var fence: String?

    public init(host: String, port: Int, state: RouteState, backendTLS: Bool = false, version: Int = 0, fence: String? = nil) {
        self.host = host
        self.port = port
        self.state = state
        self.backendTLS = backendTLS
        self.version = version
        self.fence = fence
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
        let versionText = fields["version"] ?? "0"
        guard let version = Int(versionText), version >= 0 else { throw .badField("version", versionText) }
        let fence = fields["fence"].flatMap { $0.isEmpty ? nil : $0 }
        self.init(host: host, port: port, state: state, backendTLS: tls == "true", version: version, fence: fence)
    }

    public var fields: [(String, String)] {
        [("host", host), ("port", String(port)), ("state", state.rawValue), ("tls", backendTLS ? "true" : "false"),
         ("version", String(version))] + (fence.map { [("fence", $0)] } ?? [])
    }
}
