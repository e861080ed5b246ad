import DevDBCore
import DevDBRedis
import Synchronization

/// The Lua transaction engine: checks a transaction's guards and applies its writes atomically
/// inside Redis, or writes nothing. ARGV protocol (encoded by `arguments(for:)`, decoded in
/// `text`): the guard count, then each guard as a kind letter and its operands —
/// `V key present(0|1) value`, `F key field present(0|1) value`, `C key count`, `E key` — then
/// each write as its argument count and a Redis command, where `HDELIFEQ key field value`
/// deletes the field only if it holds the value. Replies 1 (applied) or 0 (a guard failed).
enum GuardScript {
    static let text = """
        local i = 1
        local ng = tonumber(ARGV[i]); i = i + 1
        for g = 1, ng do
          local kind = ARGV[i]
          if kind == 'V' then
            local v = redis.call('GET', ARGV[i + 1])
            if (v == false and ARGV[i + 2] ~= '0') or (v ~= false and (ARGV[i + 2] ~= '1' or v ~= ARGV[i + 3])) then return 0 end
            i = i + 4
          elseif kind == 'F' then
            local v = redis.call('HGET', ARGV[i + 1], ARGV[i + 2])
            if (v == false and ARGV[i + 3] ~= '0') or (v ~= false and (ARGV[i + 3] ~= '1' or v ~= ARGV[i + 4])) then return 0 end
            i = i + 5
          elseif kind == 'C' then
            if redis.call('SCARD', ARGV[i + 1]) ~= tonumber(ARGV[i + 2]) then return 0 end
            i = i + 3
          elseif kind == 'E' then
            if redis.call('EXISTS', ARGV[i + 1]) ~= 1 then return 0 end
            i = i + 2
          else
            return redis.error_reply('unknown guard ' .. kind)
          end
        end
        while i <= #ARGV do
          local n = tonumber(ARGV[i]); i = i + 1
          if ARGV[i] == 'HDELIFEQ' then
            if redis.call('HGET', ARGV[i + 1], ARGV[i + 2]) == ARGV[i + 3] then redis.call('HDEL', ARGV[i + 1], ARGV[i + 2]) end
          else
            redis.call(unpack(ARGV, i, i + n - 1))
          end
          i = i + n
        end
        return 1
        """

    static func arguments(for t: Transaction) -> [String] {
        var args: [String] = [String(t.guards.count)]
        for g in t.guards {
            switch g {
            case .value(let key, let raw): args += ["V", key, raw == nil ? "0" : "1", raw ?? ""]
            case .field(let key, let field, let value): args += ["F", key, field, value == nil ? "0" : "1", value ?? ""]
            case .cardinality(let key, let n): args += ["C", key, String(n)]
            case .exists(let key): args += ["E", key]
            }
        }
        for w in t.allWrites {
            let c = command(w)
            args += [String(c.count)] + c
        }
        return args
    }

    /// A write as the Redis command the script runs.
    static func command(_ w: RedisWrite) -> [String] {
        switch w {
        case .set(let k, let v): return ["SET", k, v]
        case .delete(let keys): return ["DEL"] + keys
        case .setAdd(let k, let m): return ["SADD", k, m]
        case .setRemove(let k, let m): return ["SREM", k, m]
        case .hashSet(let k, let fields): return ["HSET", k] + fields.flatMap { [$0.name, $0.value] }
        case .hashDeleteIfEquals(let k, let f, let v): return ["HDELIFEQ", k, f, v]
        case .hashIncrement(let k, let f, let n): return ["HINCRBY", k, f, String(n)]
        case .sortedSetAdd(let k, let m, let score): return ["ZADD", k, String(score), m]
        case .sortedSetRemove(let k, let m): return ["ZREM", k, m]
        case .listAppend(let k, let v): return ["RPUSH", k, v]
        case .listRemove(let k, let v): return ["LREM", k, "0", v]
        case .listKeepLast(let k, let n): return ["LTRIM", k, String(-max(1, n)), "-1"]
        case .publish(let channel, let message): return ["PUBLISH", channel, message]
        case .streamAdd(let k, let v, let n, let approximate):
            return ["XADD", k, "MAXLEN"] + (approximate ? ["~"] : []) + [String(n), "*", "e", v]
        case .streamTrimBefore(let k, let id): return ["XTRIM", k, "MINID", String(id)]
        }
    }
}

/// A Lua script loaded into Redis once (`SCRIPT LOAD`) and run by its hash (`EVALSHA`): the
/// script's text is not sent with every call. Loaded again when Redis has forgotten it
/// (`NOSCRIPT`: a restart, a `SCRIPT FLUSH`).
final class LoadedScript: Sendable {
    let text: String
    /// The hash Redis answered to SCRIPT LOAD; nil until loaded (protected by the mutex).
    private let sha = Mutex<String?>(nil)

    init(_ text: String) { self.text = text }

    func run(_ client: RedisClient, keys: [String], args: [String]) throws(RedisError) -> RedisValue {
        for attempt in 0..<2 {
            let hash: String
            if let known = sha.withLock({ $0 }) { hash = known } else {
                guard let loaded = try client.command(["SCRIPT", "LOAD", text]).string else { throw .reply("SCRIPT LOAD returned no hash") }
                sha.withLock { $0 = loaded }
                hash = loaded
            }
            do throws(RedisError) {
                return try client.command(["EVALSHA", hash, String(keys.count)] + keys + args)
            } catch {
                guard case .reply(let text) = error, text.hasPrefix("NOSCRIPT"), attempt == 0 else { throw error }
                sha.withLock { $0 = nil }
            }
        }
        throw .reply("NOSCRIPT after loading the script again")
    }
}
