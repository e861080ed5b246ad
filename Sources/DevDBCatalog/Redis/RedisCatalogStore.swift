import DevDBCore
import DevDBRedis

/// The catalog in Redis (key layout in docs/redis-keys.md). Calls run on `BlockingExecutor.io`
/// (hiredis blocks); while Redis is away an operation is tried again with `Backoff` for up to
/// `retrySeconds`, then fails `.unavailable` (the API answers 503).
public final class RedisCatalogStore: CatalogEngineStore {
    public let redis: RedisPool
    public let retrySeconds: Double
    let engine: CatalogEngine

    public init(redis: RedisPool, retrySeconds: Double = 4, maxSnapshotsPerDatabase: Int = 10) {
        self.redis = redis
        self.retrySeconds = retrySeconds
        engine = CatalogEngine(backend: RedisBackend(redis: redis), maxSnapshotsPerDatabase: maxSnapshotsPerDatabase)
    }

    public func perform<T: Sendable>(_ body: @escaping @Sendable (CatalogEngine) throws -> T) async throws -> T {
        let engine = self.engine
        let deadline = monotonicNow() + retrySeconds
        var backoff = Backoff(initial: 0.05, cap: 1)
        while true {
            do {
                return try await BlockingExecutor.io.run { () throws -> T in try body(engine) }
            } catch let e as RedisUnavailable {
                guard backoff.fits(now: monotonicNow(), deadline: deadline) else {
                    throw CatalogError.unavailable("the catalog (Redis) is unavailable: \(e.error)")
                }
                try await Task.sleep(nanoseconds: Backoff.nanoseconds(backoff.next()))
            }
        }
    }
}
