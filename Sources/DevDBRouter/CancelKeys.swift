import Dispatch
import DevDBCore
import DevDBNet
import DevDBRedis
import PostgresWire
import Synchronization

/// Where a cancel request for one router-issued key must go.
public struct CancelTarget: Sendable, Equatable {
    public var route: String
    public var host: String
    public var port: Int
    public var backendKey: BackendKey
}

/// The router hands clients its own cancel keys. This maps them to backends: locally for
/// sessions on this router, and in Redis (`devdb:cancel:<key>`, with a TTL refreshed while the
/// session lives) so that any router replica can forward a cancel.
public final class CancelKeyRegistry: Sendable {
    private let redis: RedisClient
    private let metrics: RouterMetrics
    private let log: Log
    private let ttl: Int
    // Live sessions' keys on this router.
    private let local = Mutex<[BackendKey: CancelTarget]>([:])
    private let queue = DispatchQueue(label: "devdb.router.cancel-keys")

    public init(redis: RedisClient, metrics: RouterMetrics, log: Log, ttl: Int) {
        self.redis = redis
        self.metrics = metrics
        self.log = log
        self.ttl = ttl
        self.refreshTimer = DispatchSource.makeTimerSource(queue: queue)
    }

    /// A fresh random key shaped like the backend's (same secret length, at least 4 bytes).
    public static func makeRouterKey(like backend: BackendKey) -> BackendKey {
        var rng = SystemRandomNumberGenerator()
        let pid = UInt32.random(in: 1...0x7FFF_FFFF, using: &rng)
        let secret = (0..<max(4, backend.secretKey.count)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        return BackendKey(processID: pid, secretKey: secret)
    }

    static func redisKey(_ key: BackendKey) -> String {
        RouteContract.cancelKey(hex(withUnsafeBytes(of: key.processID.bigEndian) { Array($0) }) + hex(key.secretKey))
    }

    public func register(_ routerKey: BackendKey, target: CancelTarget) {
        local.withLock { $0[routerKey] = target }
        let key = Self.redisKey(routerKey)
        queue.async { [self] in
            do throws(RedisError) {
                _ = try redis.pipeline([
                    ["HSET", key, "route", target.route, "host", target.host, "port", String(target.port),
                     "pid", String(target.backendKey.processID), "secret", hex(target.backendKey.secretKey)],
                    ["EXPIRE", key, String(ttl)],
                ])
            } catch {
                metrics.redisErrors.add(1, ordering: .relaxed)
                log.warning("cannot store cancel key; only this router can cancel the session", ["error": error.description])
            }
        }
    }

    public func unregister(_ routerKey: BackendKey) {
        local.withLock { _ = $0.removeValue(forKey: routerKey) }
        let key = Self.redisKey(routerKey)
        queue.async { [self] in _ = try? redis.command(["DEL", key]) }
    }

    /// Waits until queued Redis writes (registrations, deletions) are done; used before exit so
    /// ended sessions leave no keys behind.
    public func flush() { queue.sync {} }

    /// Extends the TTL of every live key; called every third of the TTL.
    public func refresh() {
        let keys = local.withLock { Array($0.keys) }
        guard !keys.isEmpty else { return }
        queue.async { [self] in
            do throws(RedisError) {
                _ = try redis.pipeline(keys.map { ["EXPIRE", Self.redisKey($0), String(ttl)] })
            } catch {
                metrics.redisErrors.add(1, ordering: .relaxed)
            }
        }
    }

    public func startRefreshing() {
        let interval = max(1, ttl / 3)
        refreshTimer.schedule(deadline: .now() + .seconds(interval), repeating: .seconds(interval))
        refreshTimer.setEventHandler { [self] in refresh() }
        if !refreshStarted.exchange(true, ordering: .relaxed) { refreshTimer.resume() }
    }
    private let refreshStarted = Atomic<Bool>(false)

    deinit {
        // libdispatch traps when a source that was never resumed is released.
        if !refreshStarted.load(ordering: .relaxed) { refreshTimer.resume() }
        refreshTimer.cancel()
    }
    // Configured and resumed once, by startRefreshing(); DispatchSource is thread-safe.
    private nonisolated(unsafe) let refreshTimer: DispatchSourceTimer

    /// Finds the backend for a cancel request: this router's sessions first, then Redis.
    /// Calls back on the registry's queue.
    public func find(_ request: CancelRequest, completion: @escaping @Sendable (CancelTarget?) -> Void) {
        let key = BackendKey(processID: request.processID, secretKey: request.secretKey)
        if let t = local.withLock({ $0[key] }) { completion(t); return }
        queue.async { [self] in
            do throws(RedisError) {
                let f = try redis.command(["HGETALL", Self.redisKey(key)]).fieldMap
                guard let route = f["route"], let host = f["host"], let port = f["port"].flatMap({ Int($0) }),
                      let pid = f["pid"].flatMap({ UInt32($0) }), let secret = f["secret"].flatMap(unhex) else {
                    completion(nil)
                    return
                }
                completion(CancelTarget(route: route, host: host, port: port, backendKey: BackendKey(processID: pid, secretKey: secret)))
            } catch {
                metrics.redisErrors.add(1, ordering: .relaxed)
                completion(nil)
            }
        }
    }
}

func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
    return String(decoding: out, as: UTF8.self)
}

func unhex(_ s: String) -> [UInt8]? {
    let u = Array(s.utf8)
    guard u.count % 2 == 0 else { return nil }
    func v(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
    var out: [UInt8] = []
    var i = 0
    while i < u.count {
        guard let hi = v(u[i]), let lo = v(u[i + 1]) else { return nil }
        out.append(hi << 4 | lo)
        i += 2
    }
    return out
}

extension RouterContext {
    /// A client's CancelRequest (from `host`; `expectedRoute` when its SNI named one) goes to the
    /// backend its router key stands for, found here or through Redis, off the event loops.
    func forwardCancel(_ request: CancelRequest, from host: SocketAddress.Host?, expectedRoute: String?) {
        // The label stays empty: the SNI of a cancel request is the client's to choose.
        metrics.connection(.cancelRequest, route: nil)
        if let host, !cancelRate.allow(host) {
            metrics.cancel(.rateLimited)
            return
        }
        cancelKeys.find(request) { [self] target in
            guard let target else { return metrics.cancel(.unknownKey) }
            if let expectedRoute, expectedRoute != target.route { return metrics.cancel(.routeMismatch) }
            DispatchQueue.global().async { [self] in
                let packet = CancelRequest(processID: target.backendKey.processID, secretKey: target.backendKey.secretKey).encode()
                let addresses = (try? SocketAddress.resolve(host: target.host, port: target.port)) ?? []
                if let error = Sockets.sendOnce(to: addresses, packet, timeout: 2) {
                    metrics.cancel(.failed)
                    log.warning("cancel not delivered", ["route": target.route, "error": error])
                } else {
                    metrics.cancel(.forwarded)
                }
            }
        }
    }
}
