import DevDBRouterCore
import Synchronization

/// The router's metrics, written as Prometheus text. All names and labels are here.
/// Counters are atomics or label maps behind a mutex; both are safe from any queue.
public final class RouterMetrics: Sendable {
    public enum Outcome: String, Sendable, CaseIterable {
        case routed, unknownRoute = "unknown_route", notReady = "not_ready", backendUnreachable = "backend_unreachable"
        case malformed, oversized, timeout, tooManyHandshakes = "too_many_handshakes", tlsFailed = "tls_failed"
        case noRoute = "no_route", routeConflict = "route_conflict", routeStoreUnavailable = "route_store_unavailable"
        case backendRejected = "backend_rejected", shuttingDown = "shutting_down", clientClosed = "client_closed"
        case cancelRequest = "cancel_request"
        case wakeFailed = "wake_failed", wakeTimeout = "wake_timeout"

        /// Every refusal kind is an outcome of the same name.
        init(_ kind: Refusal.Kind) { self.init(rawValue: kind.rawValue)! }
        init(_ quiet: ConnectionStart.QuietEnd) { self.init(rawValue: quiet.rawValue)! }
    }

    public enum CancelOutcome: String, Sendable, CaseIterable {
        case forwarded, unknownKey = "unknown_key", rateLimited = "rate_limited", failed, routeMismatch = "route_mismatch"
    }

    /// One series of `devdb_router_connections_total`. The route is kept as the session's own
    /// string, which is the route cache's key too (both are copies of one string, sharing its
    /// storage), so a route's series costs a dictionary slot, not another string.
    struct ConnectionSeries: Hashable {
        let outcome: Outcome
        let route: String
    }
    private let connections = Mutex<[ConnectionSeries: Int]>([:])
    // reason -> count
    private let tlsFailures = Mutex<[String: Int]>([:])
    private let cancels = Mutex<[String: Int]>([:])
    public let cacheHits = Atomic<Int>(0)
    public let cacheMisses = Atomic<Int>(0)
    public let redisErrors = Atomic<Int>(0)
    /// Bytes relayed, one pair of counters per event loop (each written by its loop's thread only,
    /// so the relay never contends on a shared cache line); summed when scraped.
    private let byteCounters = Mutex<[ByteCounters]>([])

    func makeByteCounters() -> ByteCounters {
        let c = ByteCounters()
        byteCounters.withLock { $0.append(c) }
        return c
    }
    public let activeConnections = Atomic<Int>(0)
    public let activeSessions = Atomic<Int>(0)

    /// Handshake duration histogram (accept to routed), seconds.
    static let buckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
    private let handshake = Mutex<(counts: [Int], sum: Double, count: Int)>(([Int](repeating: 0, count: 13), 0, 0))

    // outcome (woken, failed, timeout) -> count, and the woken ones' latency.
    private let wakes = Mutex<[String: Int]>([:])
    private let wakeLatency = Mutex<(counts: [Int], sum: Double, count: Int)>(([Int](repeating: 0, count: 13), 0, 0))
    public let wakesRequested = Atomic<Int>(0)

    public init() {}

    func wakeRequested() { wakesRequested.add(1, ordering: .relaxed) }

    func wakeEnded(_ outcome: String, seconds: Double?) {
        wakes.withLock { $0[outcome, default: 0] += 1 }
        guard let seconds else { return }
        wakeLatency.withLock { h in
            for (i, b) in Self.wakeBuckets.enumerated() where seconds <= b { h.counts[i] += 1 }
            h.sum += seconds
            h.count += 1
        }
    }

    static let wakeBuckets: [Double] = [0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60]

    public func connection(_ outcome: Outcome, route: String?) {
        connections.withLock { $0[ConnectionSeries(outcome: outcome, route: route ?? ""), default: 0] += 1 }
    }

    public func tlsFailure(_ reason: String) { tlsFailures.withLock { $0[reason, default: 0] += 1 } }
    public func cancel(_ outcome: CancelOutcome) { cancels.withLock { $0[outcome.rawValue, default: 0] += 1 } }

    public func observeHandshake(seconds: Double) {
        handshake.withLock { h in
            for (i, b) in Self.buckets.enumerated() where seconds <= b { h.counts[i] += 1 }
            h.sum += seconds
            h.count += 1
        }
    }

    /// Prometheus text exposition format 0.0.4.
    public func render(ready: Bool) -> String {
        var out = ""
        func header(_ name: String, _ type: String, _ help: String) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
        }
        header("devdb_router_connections_total", "counter", "Client connections by outcome and route.")
        let series = connections.withLock { $0 }.sorted { ($0.key.outcome.rawValue, $0.key.route) < ($1.key.outcome.rawValue, $1.key.route) }
        for (k, v) in series { out += "devdb_router_connections_total{outcome=\"\(k.outcome.rawValue)\",route=\"\(k.route)\"} \(v)\n" }
        header("devdb_router_active_connections", "gauge", "Client connections open now.")
        out += "devdb_router_active_connections \(activeConnections.load(ordering: .relaxed))\n"
        header("devdb_router_active_sessions", "gauge", "Routed sessions relaying now.")
        out += "devdb_router_active_sessions \(activeSessions.load(ordering: .relaxed))\n"
        func histogram(_ name: String, _ help: String, _ buckets: [Double], _ h: (counts: [Int], sum: Double, count: Int)) {
            header(name, "histogram", help)
            for (i, b) in buckets.enumerated() { out += "\(name)_bucket{le=\"\(b)\"} \(h.counts[i])\n" }
            out += "\(name)_bucket{le=\"+Inf\"} \(h.count)\n\(name)_sum \(h.sum)\n\(name)_count \(h.count)\n"
        }
        histogram("devdb_router_handshake_duration_seconds", "Time from accept to routed.", Self.buckets, handshake.withLock { $0 })
        header("devdb_router_wakes_requested_total", "counter", "Wakes of hibernated databases this router asked for (one per database, however many clients wait).")
        out += "devdb_router_wakes_requested_total \(wakesRequested.load(ordering: .relaxed))\n"
        header("devdb_router_wakes_total", "counter", "Wake waits by outcome: woken, failed, timeout (per waiting client for timeouts).")
        for (k, v) in wakes.withLock({ $0 }).sorted(by: { $0.key < $1.key }) { out += "devdb_router_wakes_total{outcome=\"\(k)\"} \(v)\n" }
        histogram("devdb_router_wake_duration_seconds", "Time from asking for a wake to the route being ready.", Self.wakeBuckets, wakeLatency.withLock { $0 })
        header("devdb_router_route_cache_total", "counter", "Route lookups answered by the cache (hit) or Redis (miss).")
        out += "devdb_router_route_cache_total{result=\"hit\"} \(cacheHits.load(ordering: .relaxed))\n"
        out += "devdb_router_route_cache_total{result=\"miss\"} \(cacheMisses.load(ordering: .relaxed))\n"
        header("devdb_router_redis_errors_total", "counter", "Failed Redis commands and subscriptions.")
        out += "devdb_router_redis_errors_total \(redisErrors.load(ordering: .relaxed))\n"
        header("devdb_router_bytes_relayed_total", "counter", "Bytes relayed by direction.")
        let counters = byteCounters.withLock { $0 }
        let up = counters.reduce(0) { $0 + $1.clientToBackend.load(ordering: .relaxed) }
        let down = counters.reduce(0) { $0 + $1.backendToClient.load(ordering: .relaxed) }
        out += "devdb_router_bytes_relayed_total{direction=\"client_to_backend\"} \(up)\n"
        out += "devdb_router_bytes_relayed_total{direction=\"backend_to_client\"} \(down)\n"
        header("devdb_router_tls_failures_total", "counter", "Failed TLS handshakes by reason.")
        for (k, v) in tlsFailures.withLock({ $0 }).sorted(by: { $0.key < $1.key }) { out += "devdb_router_tls_failures_total{reason=\"\(k)\"} \(v)\n" }
        header("devdb_router_cancels_total", "counter", "Cancel requests by outcome.")
        for (k, v) in cancels.withLock({ $0 }).sorted(by: { $0.key < $1.key }) { out += "devdb_router_cancels_total{outcome=\"\(k)\"} \(v)\n" }
        header("devdb_router_ready", "gauge", "1 while the router accepts connections.")
        out += "devdb_router_ready \(ready ? 1 : 0)\n"
        return out
    }
}

/// Relayed bytes of one event loop. Padded so two loops' counters never share a cache line.
final class ByteCounters: Sendable {
    private let padBefore = (0, 0, 0, 0, 0, 0, 0, 0)
    let clientToBackend = Atomic<Int>(0)
    let backendToClient = Atomic<Int>(0)
    private let padAfter = (0, 0, 0, 0, 0, 0, 0, 0)
}
