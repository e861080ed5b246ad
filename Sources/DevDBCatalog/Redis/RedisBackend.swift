import DevDBCore
import DevDBRedis

/// Redis could not be reached or the connection broke: worth trying again (`RedisCatalogStore`
/// retries the whole operation with backoff; a transaction applied whose answer was lost fails
/// its guard on the retry, so nothing is applied twice).
struct RedisUnavailable: Error, CustomStringConvertible {
    let error: RedisError
    var description: String { "\(error)" }
}

/// `CatalogBackend` on Redis through blocking hiredis connections (run them on
/// `BlockingExecutor.io`). Transactions run the guard engine (`GuardScript`) by EVALSHA.
final class RedisBackend: CatalogBackend {
    let redis: RedisPool
    private let transaction = LoadedScript(GuardScript.text)
    private let liveRoutersScript = LoadedScript(RouteContract.liveRoutersScript)

    init(redis: RedisPool) { self.redis = redis }

    private func mapped<T>(_ what: String, _ body: () throws(RedisError) -> T) throws -> T {
        do throws(RedisError) { return try body() } catch {
            if case .reply(let text) = error { throw CatalogError.unavailable("Redis refused \(what): \(text)") }
            throw RedisUnavailable(error: error)
        }
    }

    func cmd(_ args: [String]) throws -> RedisValue {
        let client = redis.client
        return try mapped(args.first ?? "") { () throws(RedisError) in try client.command(args) }
    }

    func get(_ key: String) throws -> String? { try cmd(["GET", key]).string }

    /// `MGET`s of 2,000 keys: a read of thousands of records blocks Redis a moment at a time.
    func getMany(_ keys: [String]) throws -> [String?] {
        try keys.chunks(of: 2000).flatMap { chunk -> [String?] in
            guard case .array(let items) = try cmd(["MGET"] + chunk) else { return chunk.map { _ in nil } }
            return items.map(\.string)
        }
    }

    func setMembers(_ key: String) throws -> [String] {
        guard case .array(let items) = try cmd(["SMEMBERS", key]) else { return [] }
        return items.compactMap(\.string)
    }

    func setCount(_ key: String) throws -> Int { try cmd(["SCARD", key]).integer ?? 0 }
    func hashField(_ key: String, _ field: String) throws -> String? { try cmd(["HGET", key, field]).string }
    func hash(_ key: String) throws -> [String: String] { try cmd(["HGETALL", key]).fieldMap }

    /// Pipelines of 1,000 (a hibernator pass costs one round trip per 1,000 databases, not one each).
    func hashes(_ keys: [String]) throws -> [[String: String]] {
        var out: [[String: String]] = []
        for chunk in keys.chunks(of: 1000) {
            let client = redis.client
            let replies = try mapped("HGETALL") { () throws(RedisError) in try client.pipeline(chunk.map { ["HGETALL", $0] }) }
            out += replies.map { (try? $0.get())?.fieldMap ?? [:] }
        }
        return out
    }

    func list(_ key: String) throws -> [String] {
        guard case .array(let items) = try cmd(["LRANGE", key, "0", "-1"]) else { return [] }
        return items.compactMap(\.string)
    }

    func sortedSet(_ key: String, maxScore: Double?) throws -> [ScoredMember] {
        guard case .array(let items) = try cmd(["ZRANGEBYSCORE", key, "-inf", maxScore.map { String($0) } ?? "+inf", "WITHSCORES"]) else { return [] }
        return stride(from: 0, to: items.count - 1, by: 2).compactMap { i in
            guard let m = items[i].string, let score = items[i + 1].string.flatMap(Double.init) else { return nil }
            return ScoredMember(member: m, score: score)
        }
    }

    func sortedSetMembers(_ key: String, after: String?, count: Int) throws -> [String] {
        guard case .array(let items) = try cmd(["ZRANGEBYLEX", key, after.map { "(" + $0 } ?? "-", "+", "LIMIT", "0", String(count)]) else { return [] }
        return items.compactMap(\.string)
    }

    func sortedSetCount(_ key: String) throws -> Int { try cmd(["ZCARD", key]).integer ?? 0 }

    func increment(_ key: String) throws -> Int { try cmd(["INCR", key]).integer ?? 0 }
    func setIfAbsent(_ key: String, _ value: String) throws { _ = try cmd(["SET", key, value, "NX"]) }
    func ping() throws { _ = try cmd(["PING"]) }

    func scan(_ pattern: String) throws -> [String] {
        var cursor = "0", out: [String] = []
        repeat {
            guard case .array(let reply) = try cmd(["SCAN", cursor, "MATCH", pattern, "COUNT", "10000"]), reply.count == 2,
                  let next = reply[0].string, case .array(let keys) = reply[1] else { break }
            out += keys.compactMap(\.string)
            cursor = next
        } while cursor != "0"
        return out
    }

    func streamRange(_ key: String, start: String, end: String, count: Int, reverse: Bool) throws -> [StreamEntry] {
        let args = reverse ? ["XREVRANGE", key, end, start] : ["XRANGE", key, start, end]
        guard case .array(let rows) = try cmd(args + ["COUNT", String(count)]) else { return [] }
        var out: [StreamEntry] = []
        for case .array(let row) in rows where row.count == 2 {
            guard let id = row[0].string, case .array(let fields) = row[1], fields.count >= 2, let value = fields[1].string else { continue }
            out.append(StreamEntry(id: id, value: value))
        }
        return out
    }

    func commit(_ t: Transaction) throws -> Bool {
        let client = redis.client, args = GuardScript.arguments(for: t), script = transaction
        return try mapped("a transaction") { () throws(RedisError) in try script.run(client, keys: [], args: args) }.integer == 1
    }

    func liveRouters(acksKey: String) throws -> [LiveRouter] {
        let client = redis.client, script = liveRoutersScript
        let reply = try mapped("reading router leases") { () throws(RedisError) in
            try script.run(client, keys: [RouteContract.routers, acksKey], args: [])
        }
        guard case .array(let rows) = reply else { return [] }
        var out: [LiveRouter] = []
        for case .array(let row) in rows where row.count >= 2 {
            guard let id = row[0].string else { continue }
            out.append(LiveRouter(id: id, interval: row[1].string ?? "5", acknowledgement: row.count >= 3 ? row[2].string : nil))
        }
        return out
    }
}
