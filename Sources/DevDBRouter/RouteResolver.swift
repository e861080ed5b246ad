import Dispatch
import DevDBCore
import DevDBNet
import DevDBRedis
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public enum RouteLookup: Sendable, Equatable {
    case found(RouteRecord)
    case notFound
    /// Redis could not answer and nothing is cached.
    case unavailable(String)
}

/// Route lookups: an in-process cache (positive and negative entries) in front of Redis.
/// A hit is a mutex and a dictionary lookup. Misses go to Redis on one serial queue, with
/// concurrent lookups of one name coalesced. The `devdb:routes` channel invalidates entries;
/// after the subscription comes back, everything cached is re-read, since messages may have
/// been missed. While Redis is down, cached routes keep being served (as long as the router's
/// lease lasts: `RouteActivity.admit`).
public final class RouteResolver: Sendable {
    /// A cached answer, packed: 48 bytes where a `RouteRecord` and a `Double` took 64, so a cached
    /// route costs a 64-byte slot of the dictionary plus its name (docs/benchmarks.md, "The router
    /// at 10,000 and 50,000 routes").
    struct Entry {
        /// nil: no such route (a negative entry).
        var host: String?
        var fence: String?
        var version: Int
        var port: UInt16
        var state: RouteState
        var backendTLS: Bool
        /// When it was read: tenths of a second on the monotonic clock (13 years fit).
        var fetchedAt: UInt32

        init(_ route: RouteRecord?, fetchedAt: Double) {
            host = route?.host
            fence = route?.fence
            version = route?.version ?? 0
            port = UInt16(clamping: route?.port ?? 0)
            state = route?.state ?? .stopped
            backendTLS = route?.backendTLS ?? false
            self.fetchedAt = Entry.tenths(fetchedAt)
        }

        static func tenths(_ seconds: Double) -> UInt32 { UInt32(clamping: Int(seconds * 10)) }

        var route: RouteRecord? {
            host.map { RouteRecord(host: $0, port: Int(port), state: state, backendTLS: backendTLS, version: version, fence: fence) }
        }

        /// Seconds since it was read.
        func age(now: Double) -> Double { Double(Entry.tenths(now) &- fetchedAt) / 10 }
    }

    private let redis: RedisClient
    private let metrics: RouterMetrics
    private let log: Log
    private let negativeTTL: Double
    private let refreshAfter: Double
    // The cache and the waiting callbacks, each behind its own mutex.
    private let cache = Mutex<[String: Entry]>([:])
    private let inflight = Mutex<[String: [@Sendable (RouteLookup) -> Void]]>([:])
    /// Blocking Redis calls run here, never on connection queues.
    private let redisQueue = DispatchQueue(label: "devdb.router.redis")
    private let subscriber: RedisSubscriber
    /// Told of every route change after the cache entry is dropped (wake waiters listen here);
    /// nil is passed when every route may have changed (the subscription came back).
    private let observer = Mutex<(@Sendable (String?) -> Void)?>(nil)

    public func observeChanges(_ callback: @escaping @Sendable (String?) -> Void) { observer.withLock { $0 = callback } }

    public init(redis: RedisClient, metrics: RouterMetrics, log: Log, negativeTTL: Double, refreshAfter: Double) {
        self.redis = redis
        self.metrics = metrics
        self.log = log
        self.negativeTTL = negativeTTL
        self.refreshAfter = refreshAfter
        self.subscriber = RedisSubscriber(url: redis.url, channel: RouteContract.routesChannel)
    }

    public func start() {
        subscriber.start(
            onConnected: { [self] in
                log.info("subscribed to route changes", ["channel": RouteContract.routesChannel])
                invalidateAll()
                observer.withLock { $0 }?(nil)
            },
            onDisconnected: { [self] why in
                metrics.redisErrors.add(1, ordering: .relaxed)
                log.warning("route subscription lost; serving cached routes", ["error": why])
            },
            onMessage: { [self] name in
                invalidate(name)
                observer.withLock { $0 }?(name)
            })
    }

    public func stop() { subscriber.stop() }

    public func invalidate(_ name: String) {
        _ = cache.withLock { $0.removeValue(forKey: name) }
    }

    public func invalidateAll() {
        cache.withLock { $0.removeAll(keepingCapacity: true) }
    }

    /// Looks a route up. On a cache hit `completion` runs before this returns; otherwise it
    /// runs later on `executor`.
    public func lookup(_ name: String, on executor: any JobExecutor, completion: @escaping @Sendable (RouteLookup) -> Void) {
        let now = monotonicSeconds()
        let hit: (Entry, stale: Bool)? = cache.withLock { c in
            guard let e = c[name] else { return nil }
            if e.host == nil && e.age(now: now) > negativeTTL { c.removeValue(forKey: name); return nil }
            return (e, e.host != nil && e.age(now: now) > refreshAfter)
        }
        if let (entry, stale) = hit {
            metrics.cacheHits.add(1, ordering: .relaxed)
            if stale { fetch(name, completion: nil) }  // serve now, refresh in the background
            completion(entry.route.map { .found($0) } ?? .notFound)
            return
        }
        metrics.cacheMisses.add(1, ordering: .relaxed)
        fetch(name) { result in executor.execute { completion(result) } }
    }

    /// Warms the cache (e.g. from the SNI of a ClientHello while the TLS handshake runs).
    public func prefetch(_ name: String) {
        let cached = cache.withLock { $0[name] != nil }
        if !cached {
            metrics.cacheMisses.add(1, ordering: .relaxed)
            fetch(name, completion: nil)
        }
    }

    private func fetch(_ name: String, completion: (@Sendable (RouteLookup) -> Void)?) {
        let first = inflight.withLock { waiting -> Bool in
            let isFirst = waiting[name] == nil
            waiting[name, default: []].append(completion ?? { _ in })
            return isFirst
        }
        guard first else { return }
        redisQueue.async { [self] in
            let result = fetchFromRedis(name)
            let waiters = inflight.withLock { $0.removeValue(forKey: name) ?? [] }
            for w in waiters { w(result) }
        }
    }

    private func fetchFromRedis(_ name: String) -> RouteLookup {
        do throws(RedisError) {
            let fields = try redis.command(["HGETALL", RouteContract.routeKey(name)]).fieldMap
            let now = monotonicSeconds()
            if fields.isEmpty {
                cache.withLock { $0[name] = Entry(nil, fetchedAt: now) }
                return .notFound
            }
            do throws(RouteRecord.DecodeError) {
                let route = try RouteRecord(fields: fields)
                cache.withLock { $0[name] = Entry(route, fetchedAt: now) }
                return .found(route)
            } catch {
                log.error("route in Redis is invalid", ["route": name, "error": error.description])
                return .unavailable("the route entry is invalid")
            }
        } catch {
            metrics.redisErrors.add(1, ordering: .relaxed)
            log.warning("route lookup failed", ["route": name, "error": error.description])
            // A stale positive entry is better than nothing while Redis is away.
            if let stale = cache.withLock({ $0[name]?.route }) { return .found(stale) }
            return .unavailable(error.description)
        }
    }
}
