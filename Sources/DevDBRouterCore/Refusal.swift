import DevDBCore
import PostgresWire

/// Every reason the router refuses a connection, and the one place each becomes what the client
/// reads (SQLSTATE, message, hint) and what the metrics count (a fixed label). Nothing else in
/// the router writes an ErrorResponse of its own.
public enum Refusal: Equatable, Sendable {
    case tooManyStarts(address: String)
    case startTimeout(seconds: Int)
    case tooMuchBeforeRouting(limit: Int)
    case wire(WireError)
    case noCertificate
    case plaintextAfterSSLRequest
    /// A PROXY protocol header from a peer outside --proxy-protocol-from.
    case untrustedProxyHeader(peer: String)
    case directTLSWithoutALPN
    case badRouteOption(String)
    case routeConflict(host: String, option: String)
    case noRoute(example: String)
    case invalidName(String, problem: String?)
    case unknownRoute(String)
    case routeStoreUnavailable(String)
    case notReady(String, RouteState)
    case backendTLSUnsupported(String)
    case wakeFailed(String, why: String)
    case wakeTimeout(String, seconds: Int)
    case backendUnreachable(String)
    case backendLost(String)

    /// The metric label (`devdb_router_connections_total{outcome}`): a fixed set.
    public enum Kind: String, Sendable, CaseIterable {
        case tooManyHandshakes = "too_many_handshakes", timeout, oversized, malformed, tlsFailed = "tls_failed"
        case routeConflict = "route_conflict", noRoute = "no_route", unknownRoute = "unknown_route"
        case routeStoreUnavailable = "route_store_unavailable", notReady = "not_ready"
        case backendRejected = "backend_rejected", wakeFailed = "wake_failed", wakeTimeout = "wake_timeout"
        case backendUnreachable = "backend_unreachable"
    }

    public var kind: Kind {
        switch self {
        case .tooManyStarts: return .tooManyHandshakes
        case .startTimeout: return .timeout
        case .tooMuchBeforeRouting: return .oversized
        case .wire(.oversized): return .oversized
        case .wire: return .malformed
        case .noCertificate, .directTLSWithoutALPN: return .tlsFailed
        case .plaintextAfterSSLRequest, .untrustedProxyHeader: return .malformed
        case .badRouteOption, .routeConflict: return .routeConflict
        case .noRoute: return .noRoute
        case .invalidName, .unknownRoute: return .unknownRoute
        case .routeStoreUnavailable: return .routeStoreUnavailable
        case .notReady: return .notReady
        case .backendTLSUnsupported: return .backendRejected
        case .wakeFailed: return .wakeFailed
        case .wakeTimeout: return .wakeTimeout
        case .backendUnreachable, .backendLost: return .backendUnreachable
        }
    }

    /// What the client reads.
    public var response: ErrorResponse {
        switch self {
        case .tooManyStarts(let address):
            return ErrorResponse(sqlState: SQLState.tooManyConnections,
                                 message: "too many unfinished connections from \(address)",
                                 hint: "Finish or close the connections that are still starting, then try again.")
        case .startTimeout(let seconds):
            return ErrorResponse(sqlState: SQLState.protocolViolation,
                                 message: "the connection did not finish starting within \(seconds) seconds",
                                 hint: "Check the network between you and DevDB; the router closes connections that stall while starting.")
        case .tooMuchBeforeRouting(let limit):
            return ErrorResponse(sqlState: SQLState.protocolViolation,
                                 message: "the connection sent more than \(limit) bytes before it was routed",
                                 hint: "This is not a PostgreSQL client conversation the router understands.")
        case .wire(let error):
            let state: String
            switch error {
            case .oversized: state = SQLState.programLimitExceeded
            case .unsupportedProtocol: state = SQLState.featureNotSupported
            case .malformed: state = SQLState.protocolViolation
            }
            return ErrorResponse(sqlState: state, message: "DevDB router: \(error)",
                                 hint: "Connect with a PostgreSQL client (protocol 3.0 or 3.2), e.g. psql or libpq.")
        case .noCertificate:
            return ErrorResponse(sqlState: SQLState.featureNotSupported, message: "this DevDB router has no TLS certificate",
                                 hint: "Connect with sslmode=disable or ask your DevDB operator to configure --tls-cert.")
        case .plaintextAfterSSLRequest:
            return ErrorResponse(sqlState: SQLState.protocolViolation, message: "received unencrypted data after SSLRequest",
                                 hint: "The client must start TLS after the server answers 'S'.")
        case .untrustedProxyHeader(let peer):
            return ErrorResponse(sqlState: SQLState.protocolViolation,
                                 message: "DevDB router: this connection starts with a PROXY protocol header, but it came from \(peer), which is not in the router's --proxy-protocol-from",
                                 hint: "The load balancer sends PROXY protocol from addresses the router does not trust: list the load balancer's subnets in loadBalancer.proxyProtocol.from (the VPC's CIDR when its targets are IPs), or turn PROXY protocol off on the load balancer.")
        case .directTLSWithoutALPN:
            return ErrorResponse(sqlState: SQLState.protocolViolation,
                                 message: "direct TLS connections must negotiate ALPN \"postgresql\"",
                                 hint: "Use a client that sends ALPN (libpq 17 with sslnegotiation=direct) or connect with sslmode=require.")
        case .badRouteOption(let why):
            return ErrorResponse(sqlState: SQLState.connectionRejected, message: why,
                                 hint: "Name one database with options=-c devdb.route=NAME.")
        case .routeConflict(let host, let option):
            return ErrorResponse(sqlState: SQLState.connectionRejected,
                                 message: "the host name names database \"\(host)\" but options name \"\(option)\"",
                                 hint: "Remove -c devdb.route from options or connect to \(option) by its own host name.")
        case .noRoute(let example):
            return ErrorResponse(sqlState: SQLState.connectionRejected, message: "no DevDB database named in this connection",
                                 hint: "Connect to \(example) with sslmode=require, or pass options='-c devdb.route=NAME'.")
        case .invalidName(let name, let problem):
            return ErrorResponse(sqlState: SQLState.invalidCatalogName, message: "\"\(name)\" is not a valid DevDB database name",
                                 hint: problem.map { "\($0); run \"devdb db list\" to see your databases." })
        case .unknownRoute(let name):
            return ErrorResponse(sqlState: SQLState.invalidCatalogName, message: "database \"\(name)\" does not exist in DevDB",
                                 hint: "Run \"devdb db list\" to see your databases, or \"devdb db create \(name) --project PROJECT\".")
        case .routeStoreUnavailable(let name):
            return ErrorResponse(sqlState: SQLState.cannotConnectNow, message: "DevDB cannot look up database \"\(name)\" right now",
                                 hint: "The route store is unavailable; try again in a few seconds.")
        case .notReady(let name, let state):
            let hint = state == .starting
                ? "It is still starting; try again in a few seconds, or run \"devdb db show \(name)\"."
                : "It is stopped; run \"devdb db show \(name)\" to see its state."
            return ErrorResponse(sqlState: SQLState.cannotConnectNow, message: "database \"\(name)\" is not ready (\(state.rawValue))", hint: hint)
        case .backendTLSUnsupported(let name):
            return ErrorResponse(
                sqlState: SQLState.connectionRejected,
                message: "database \"\(name)\" has a route with tls=true, which DevDB does not support: the router ends client TLS, so SCRAM channel binding cannot reach a TLS backend (libpq's default channel_binding=prefer then fails)",
                hint: "Remove the tls field from devdb:route:\(name) (DevDB's API never writes it); protect the router-to-instance network instead.")
        case .wakeFailed(let name, let why):
            return ErrorResponse(sqlState: SQLState.cannotConnectNow, message: "database \"\(name)\" was asleep and \(why)",
                                 hint: "Run \"devdb db show \(name)\" for the reason.")
        case .wakeTimeout(let name, let seconds):
            return ErrorResponse(sqlState: SQLState.cannotConnectNow,
                                 message: "database \"\(name)\" was asleep and did not wake up within \(seconds) seconds",
                                 hint: "Try again in a moment, or run \"devdb db show \(name)\".")
        case .backendUnreachable(let name):
            return ErrorResponse(sqlState: SQLState.cannotConnectNow, message: "database \"\(name)\" is not reachable",
                                 hint: "Its instance may be restarting; try again shortly, or run \"devdb db show \(name)\".")
        case .backendLost(let name):
            return ErrorResponse(sqlState: SQLState.connectionFailure,
                                 message: "lost the connection to database \"\(name)\" while starting",
                                 hint: "Try again; if it keeps failing run \"devdb db show \(name)\".")
        }
    }
}
