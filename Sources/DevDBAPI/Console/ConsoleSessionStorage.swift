import DevDBCatalog
import DevDBCore
import DevDBRedis
import Foundation
import Synchronization

/// Where console sessions are kept: a session's JSON under its key, with a lifetime, and whether
/// the API token a session was signed in with still exists (revoking it ends the session).
protocol ConsoleSessionStorage: Sendable {
    func save(_ key: String, _ json: String, seconds: Int) async throws
    /// The JSON under `key`, or nil when there is none (ended, or past its lifetime).
    func load(_ key: String) async throws -> String?
    func remove(_ key: String) async throws
    /// The JSON under `key`, removed in the same step: of two concurrent takes, one gets it.
    func take(_ key: String) async throws -> String?
    func tokenExists(hash: String) async throws -> Bool
}

/// The chosen storage for the catalog store in use: Redis beside the catalog (its pool), or
/// memory beside a `MemoryCatalogStore` (in-process tests).
func consoleSessionStorage(for store: any CatalogStore) -> any ConsoleSessionStorage {
    if let redis = store as? RedisCatalogStore { return RedisConsoleSessionStorage(redis: redis.redis) }
    if let memory = store as? MemoryCatalogStore { return MemoryConsoleSessionStorage(tokens: memory.memory) }
    preconditionFailure("no console session storage for \(type(of: store))")
}

/// Console sessions in Redis: `devdb:console-session:<sha256(id)>` with a TTL, on the catalog's pool.
struct RedisConsoleSessionStorage: ConsoleSessionStorage {
    let redis: RedisPool

    func save(_ key: String, _ json: String, seconds: Int) async throws {
        try await command(["SET", key, json, "EX", String(seconds)])
    }

    func load(_ key: String) async throws -> String? {
        try await command(["GET", key]).string
    }

    func remove(_ key: String) async throws {
        try await command(["DEL", key])
    }

    /// GETDEL (Redis 6.2+): one command, so no second take can read between a GET and a DEL.
    func take(_ key: String) async throws -> String? {
        try await command(["GETDEL", key]).string
    }

    func tokenExists(hash: String) async throws -> Bool {
        try await command(["EXISTS", CatalogKey.tokenByHash(hash)]).integer == 1
    }

    @discardableResult
    private func command(_ args: [String]) async throws -> RedisValue {
        let client = redis.client
        return try await BlockingExecutor.io.run { () throws(RedisError) -> RedisValue in try client.command(args) }
    }
}

/// Console sessions in memory, for the in-process tests: the same lifetimes, and tokens read
/// from the `MemoryCatalogStore`'s backend under the same keys as in Redis.
final class MemoryConsoleSessionStorage: ConsoleSessionStorage {
    let tokens: MemoryBackend
    /// Protected by the mutex.
    private let sessions = Mutex<[String: (json: String, expires: Date)]>([:])

    init(tokens: MemoryBackend) { self.tokens = tokens }

    func save(_ key: String, _ json: String, seconds: Int) async throws {
        sessions.withLock { $0[key] = (json, Date().addingTimeInterval(Double(seconds))) }
    }

    func load(_ key: String) async throws -> String? {
        sessions.withLock { s in
            guard let entry = s[key] else { return nil }
            guard entry.expires > Date() else { s[key] = nil; return nil }
            return entry.json
        }
    }

    func remove(_ key: String) async throws {
        _ = sessions.withLock { $0.removeValue(forKey: key) }
    }

    func take(_ key: String) async throws -> String? {
        sessions.withLock { s in
            guard let entry = s.removeValue(forKey: key), entry.expires > Date() else { return nil }
            return entry.json
        }
    }

    func tokenExists(hash: String) async throws -> Bool {
        try tokens.get(CatalogKey.tokenByHash(hash)) != nil
    }
}
