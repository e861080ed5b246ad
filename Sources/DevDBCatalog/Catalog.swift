import COpenSSL
import DevDBCore
import DevDBRedis
import Dispatch
import Foundation

public func monotonicNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

public enum CatalogError: Error, Equatable, CustomStringConvertible {
    case conflict(String)
    case notFound(String)
    case unavailable(String)
    case corrupt(String)

    public var description: String {
        switch self {
        case .conflict(let s), .notFound(let s), .unavailable(let s), .corrupt(let s): return s
        }
    }
}

/// The catalog in Redis (key schema in docs/redis-keys.md). Listing uses index sets, never
/// KEYS. Every change that touches several keys is one transaction: a Lua script that checks
/// guards (values read before the change) and applies all writes, or none if another writer got
/// there first; the caller then reads again and decides again (optimistic concurrency).
/// Calls block on Redis; async callers go through `run`, which hops to a private queue.
/// Transient Redis errors are retried with backoff for up to `retrySeconds`.
public final class Catalog: Sendable {
    public let redis: RedisPool
    public let retrySeconds: Double
    /// Snapshots one database may have (the API's --max-snapshots).
    public let maxSnapshotsPerDatabase: Int
    private let queue = DispatchQueue(label: "devdb.catalog", attributes: .concurrent)

    public init(redis: RedisPool, retrySeconds: Double = 4, maxSnapshotsPerDatabase: Int = 10) {
        self.redis = redis
        self.retrySeconds = retrySeconds
        self.maxSnapshotsPerDatabase = maxSnapshotsPerDatabase
    }

    public func run<T: Sendable>(_ body: @escaping @Sendable (Catalog) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { cont in
            queue.async {
                do { cont.resume(returning: try body(self)) } catch { cont.resume(throwing: error) }
            }
        }
    }

    // MARK: keys

    public enum Key {
        public static let projects = "devdb:projects"
        public static func project(_ n: String) -> String { "devdb:project:\(n)" }
        public static func generationSeq(_ p: String) -> String { "devdb:project:\(p):generation-seq" }
        public static func generations(_ p: String) -> String { "devdb:project:\(p):generations" }
        public static func projectDatabases(_ p: String) -> String { "devdb:project:\(p):databases" }
        public static func generation(_ p: String, _ n: Int) -> String { "devdb:generation:\(p):\(n)" }
        public static let databases = "devdb:databases"
        public static func database(_ n: String) -> String { "devdb:database:\(n)" }
        public static func ownerDatabases(_ o: String) -> String { "devdb:owner:\(o):databases" }
        public static let tokens = "devdb:tokens"
        public static func tokenByHash(_ h: String) -> String { "devdb:token:\(h)" }
        public static func tokenByID(_ id: String) -> String { "devdb:tokenid:\(id)" }
        public static let ports = "devdb:local:ports"
        public static func snapshot(_ db: String, _ snap: String) -> String { "devdb:snapshot:\(db):\(snap)" }
        /// Branches made from a snapshot (they keep it when its database is deleted).
        public static func snapshotUsers(_ db: String, _ snap: String) -> String { "devdb:snapshot:\(db):\(snap):users" }
        public static func databaseSnapshots(_ db: String) -> String { "devdb:database:\(db):snapshots" }
    }

    // MARK: helpers

    /// One command, retried on transient errors (a blip, a restart, a timeout) with backoff.
    /// Only idempotent commands go through here; transactions go through `commit`, whose guards
    /// make a retry of an applied write fail its guard instead of applying twice.
    func cmd(_ args: [String]) throws(CatalogError) -> RedisValue {
        let deadline = monotonicNow() + retrySeconds
        var delay = 0.05
        while true {
            do throws(RedisError) { return try redis.client.command(args) } catch {
                guard case .unavailable = error, monotonicNow() + delay < deadline else {
                    if case .reply(let text) = error { throw .unavailable("Redis refused \(args.first ?? ""): \(text)") }
                    throw .unavailable("the catalog (Redis) is unavailable: \(error)")
                }
                usleep(UInt32(delay * 1_000_000))
                delay = min(delay * 2, 1)
            }
        }
    }

    static func encode<T: Encodable>(_ value: T) -> String {
        String(decoding: try! CatalogJSON.encoder.encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String, key: String) throws(CatalogError) -> T {
        do { return try CatalogJSON.decoder.decode(T.self, from: Data(text.utf8)) } catch {
            throw .corrupt("catalog entry \(key) cannot be read: \(error)")
        }
    }

    func getJSON<T: Decodable>(_ type: T.Type, _ key: String) throws(CatalogError) -> T? {
        try getRaw(T.self, key)?.value
    }

    /// A value with the exact text it was read as (the guard of a later transaction).
    func getRaw<T: Decodable>(_ type: T.Type, _ key: String) throws(CatalogError) -> (value: T, raw: String)? {
        guard let text = try cmd(["GET", key]).string else { return nil }
        return (try Self.decode(T.self, text, key: key), text)
    }

    func mgetJSON<T: Decodable>(_ type: T.Type, _ keys: [String]) throws(CatalogError) -> [T] {
        guard !keys.isEmpty else { return [] }
        guard case .array(let items) = try cmd(["MGET"] + keys) else { return [] }
        var out: [T] = []
        for (k, item) in zip(keys, items) { if let s = item.string { out.append(try Self.decode(T.self, s, key: k)) } }
        return out
    }

    func members(_ key: String) throws(CatalogError) -> [String] {
        guard case .array(let items) = try cmd(["SMEMBERS", key]) else { return [] }
        return items.compactMap(\.string).sorted()
    }

    /// Keys matching `pattern`, by SCAN (reconcile only; listings use the index sets).
    public func scan(_ pattern: String) throws(CatalogError) -> [String] {
        var cursor = "0", out: [String] = []
        repeat {
            guard case .array(let reply) = try cmd(["SCAN", cursor, "MATCH", pattern, "COUNT", "500"]), reply.count == 2,
                  let next = reply[0].string, case .array(let keys) = reply[1] else { break }
            out += keys.compactMap(\.string)
            cursor = next
        } while cursor != "0"
        return out
    }

    /// Checks that Redis answers.
    public func ping() throws(CatalogError) { _ = try cmd(["PING"]) }

    // MARK: transactions

    /// A condition checked inside the transaction, on values read before it.
    public enum Guard: Sendable {
        /// The string at key is exactly `raw` (nil: the key does not exist).
        case value(String, String?)
        /// The hash field is exactly `value` (nil: absent).
        case field(String, String, String?)
        /// The set has exactly `count` members.
        case cardinality(String, Int)
        /// The key exists (of any type).
        case exists(String)
    }

    /// Writes applied together when every guard holds. `HDELIFEQ key field value` deletes the
    /// field only if it holds `value` (a port lease of this database, not another's).
    public struct Transaction: Sendable {
        public var guards: [Guard] = []
        public var commands: [[String]] = []
        /// Route names to announce on `devdb:routes` after the writes.
        public var publish: [String] = []
        public init() {}
    }

    static let transactionScript = """
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

    /// Applies the transaction; false when a guard no longer holds (nothing was written).
    /// A transient error is retried; if the first try was applied but its answer lost, the retry
    /// fails its guard and the caller re-reads, so nothing is applied twice.
    public func commit(_ t: Transaction) throws(CatalogError) -> Bool {
        var args: [String] = [String(t.guards.count)]
        for g in t.guards {
            switch g {
            case .value(let key, let raw): args += ["V", key, raw == nil ? "0" : "1", raw ?? ""]
            case .field(let key, let field, let value): args += ["F", key, field, value == nil ? "0" : "1", value ?? ""]
            case .cardinality(let key, let n): args += ["C", key, String(n)]
            case .exists(let key): args += ["E", key]
            }
        }
        for c in t.commands + t.publish.map({ ["PUBLISH", RouteContract.routesChannel, $0] }) { args += [String(c.count)] + c }
        return try cmd(["EVAL", Self.transactionScript, "0"] + args).integer == 1
    }

    /// Reads, decides and commits until the commit lands (another writer changed what was read:
    /// read and decide again).
    func optimistic<T>(_ what: String, _ attempt: () throws -> (Transaction, T)?) throws -> T? {
        for _ in 0..<100 {
            guard let (t, result) = try attempt() else { return nil }
            if try commit(t) { return result }
        }
        throw CatalogError.unavailable("\(what) kept conflicting with concurrent changes; try again")
    }

    // MARK: projects

    public func createProject(_ p: Project, firstGeneration: Bool = true) throws(CatalogError) -> Generation? {
        var t = Transaction()
        t.guards = [.value(Key.project(p.name), nil)]
        t.commands = [["SET", Key.project(p.name), Self.encode(p)], ["SADD", Key.projects, p.name]]
        var g: Generation?
        if firstGeneration {
            // A new project starts at generation 1 (a leftover counter of an old project of this name is replaced).
            g = Generation(project: p.name, number: 1)
            t.commands += [["DEL", Key.generations(p.name)], ["SET", Key.generationSeq(p.name), "1"],
                           ["SET", Key.generation(p.name, 1), Self.encode(g!)], ["RPUSH", Key.generations(p.name), "1"]]
        }
        guard try commit(t) else { throw .conflict("project \"\(p.name)\" already exists") }
        return g
    }

    public func project(_ name: String) throws(CatalogError) -> Project? { try getJSON(Project.self, Key.project(name)) }

    public func projects() throws(CatalogError) -> [Project] {
        try mgetJSON(Project.self, try members(Key.projects).map(Key.project))
    }

    /// Names of the project's databases (the index the project delete is guarded by).
    public func projectDatabases(_ name: String) throws(CatalogError) -> [String] { try members(Key.projectDatabases(name)) }

    /// Marks the project for deletion, atomically with the check that it has no database.
    public func requestProjectDelete(_ name: String) throws -> ProjectLifecycle.DeleteDecision? {
        try optimistic("deleting project \(name)") { () throws -> (Transaction, ProjectLifecycle.DeleteDecision)? in
            guard let (p, raw) = try getRaw(Project.self, Key.project(name)) else { return nil }
            let dbs = try projectDatabases(name)
            let decision = ProjectLifecycle.delete(p, databases: dbs)
            var t = Transaction()
            t.guards = [.value(Key.project(name), raw), .cardinality(Key.projectDatabases(name), 0)]
            guard case .commit(let next) = decision else {
                // Nothing to write; the empty transaction still checks nothing changed underneath.
                t.guards = [.value(Key.project(name), raw)]
                return (t, decision)
            }
            t.commands = [["SET", Key.project(name), Self.encode(next)]]
            return (t, decision)
        }
    }

    /// Removes the project and every generation key in one transaction.
    public func removeProject(_ name: String) throws(CatalogError) {
        var keys = [Key.project(name), Key.generations(name), Key.generationSeq(name), Key.projectDatabases(name)]
        keys += try scan("devdb:generation:\(name):*")
        var t = Transaction()
        t.commands = [["DEL"] + keys, ["SREM", Key.projects, name]]
        _ = try commit(t)
    }

    // MARK: generations

    /// Changes a project's settings (guarded: a concurrent change makes it read and apply again).
    public func updateProject(_ name: String, _ change: (inout Project) throws -> Void) throws -> Project? {
        try optimistic("project \(name)") { () throws -> (Transaction, Project)? in
            guard let (p, raw) = try getRaw(Project.self, Key.project(name)) else { return nil }
            var next = p
            try change(&next)
            var t = Transaction()
            t.guards = [.value(Key.project(name), raw)]
            t.commands = [["SET", Key.project(name), Self.encode(next)]]
            return (t, next)
        }
    }

    /// A new generation, unless the project is being deleted (nil then). The dump's fingerprint
    /// and the time of a scheduled refresh are recorded on the project in the same transaction,
    /// so a restart neither repeats nor skips a refresh.
    public func newGeneration(project: String, fingerprint: String? = nil, scheduledAt: Date? = nil) throws -> Generation? {
        try optimistic("a new generation of \(project)") { () throws -> (Transaction, Generation)? in
            guard let (p, raw) = try getRaw(Project.self, Key.project(project)), p.state != .deleting else { return nil }
            let n = (try cmd(["GET", Key.generationSeq(project)]).integer ?? 0) + 1
            let g = Generation(project: project, number: n)
            var t = Transaction()
            t.guards = [.value(Key.project(project), raw), .value(Key.generationSeq(project), n == 1 ? nil : String(n - 1))]
            t.commands = [["SET", Key.generationSeq(project), String(n)], ["SET", Key.generation(project, n), Self.encode(g)],
                          ["RPUSH", Key.generations(project), String(n)]]
            if n == 1 { t.guards[1] = .value(Key.generationSeq(project), nil) }
            var seeding = p
            seeding.state = p.state == .failed ? .seeding : p.state
            if let fingerprint { seeding.dumpFingerprint = fingerprint }
            if let scheduledAt { seeding.lastScheduledRefresh = scheduledAt }
            if seeding != p { t.commands.append(["SET", Key.project(project), Self.encode(seeding)]) }
            return (t, g)
        }
    }

    public func generation(_ project: String, _ number: Int) throws(CatalogError) -> Generation? {
        try getJSON(Generation.self, Key.generation(project, number))
    }

    /// Applies a seed's progress or outcome; when it ends, the project's state follows in the
    /// same transaction. Nil when the generation is gone or no longer seeding.
    @discardableResult
    public func apply(_ event: GenerationLifecycle.Event, project: String, generation number: Int) throws -> Generation? {
        try optimistic("generation \(number) of \(project)") { () throws -> (Transaction, Generation)? in
            guard let (g, raw) = try getRaw(Generation.self, Key.generation(project, number)),
                  var next = GenerationLifecycle.decide(g, event) else { return nil }
            next.stampPhase(since: g)
            var t = Transaction()
            t.guards = [.value(Key.generation(project, number), raw)]
            t.commands = [["SET", Key.generation(project, number), Self.encode(next)]]
            if next.state == .ready || next.state == .failed, let (p, praw) = try getRaw(Project.self, Key.project(project)) {
                let all = try generations(project).map { $0.number == number ? next : $0 }
                if let np = ProjectLifecycle.afterSeed(p, generations: all) {
                    t.guards.append(.value(Key.project(project), praw))
                    t.commands.append(["SET", Key.project(project), Self.encode(np)])
                }
            }
            return (t, next)
        }
    }

    /// Marks a generation failed whatever it was (its snapshot is gone).
    public func failGeneration(_ g: Generation, reason: String) throws {
        _ = try optimistic("generation \(g.number) of \(g.project)") { () throws -> (Transaction, Void)? in
            guard let (cur, raw) = try getRaw(Generation.self, Key.generation(g.project, g.number)), cur.state != .failed else { return nil }
            var next = cur
            next.state = .failed; next.reason = reason
            var t = Transaction()
            t.guards = [.value(Key.generation(g.project, g.number), raw)]
            t.commands = [["SET", Key.generation(g.project, g.number), Self.encode(next)]]
            return (t, ())
        }
    }

    public func generations(_ project: String) throws(CatalogError) -> [Generation] {
        guard case .array(let items) = try cmd(["LRANGE", Key.generations(project), "0", "-1"]) else { return [] }
        let numbers = items.compactMap { $0.integer }
        return try mgetJSON(Generation.self, numbers.map { Key.generation(project, $0) })
    }

    public func removeGeneration(_ g: Generation) throws(CatalogError) {
        var t = Transaction()
        t.commands = [["DEL", Key.generation(g.project, g.number)], ["LREM", Key.generations(g.project), "0", String(g.number)]]
        _ = try commit(t)
    }

    // MARK: databases

    /// Adds a database and its index entries, unless the name is taken or the project is gone
    /// or being deleted.
    public func createDatabase(_ d: DatabaseRecord) throws {
        _ = try optimistic("creating database \(d.name)") { () throws -> (Transaction, Void)? in
            guard let (p, raw) = try getRaw(Project.self, Key.project(d.project)) else {
                throw CatalogError.notFound("project \"\(d.project)\" does not exist")
            }
            guard p.state != .deleting else { throw CatalogError.conflict("project \"\(d.project)\" is being deleted") }
            if try cmd(["EXISTS", Key.database(d.name)]).integer == 1 { throw CatalogError.conflict("database \"\(d.name)\" already exists") }
            var t = Transaction()
            t.guards = [.value(Key.project(d.project), raw), .value(Key.database(d.name), nil)]
            t.commands = [["SET", Key.database(d.name), Self.encode(d)], ["SADD", Key.databases, d.name],
                          ["SADD", Key.ownerDatabases(d.owner), d.name], ["SADD", Key.projectDatabases(d.project), d.name]]
            if let base = d.base, let (db, snap) = SnapshotRecord.parse(base) {
                // A branch holds on to its snapshot: it cannot be deleted while the branch exists.
                guard let (s, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(db, snap)), s.state != .failed else {
                    throw CatalogError.notFound("snapshot \(base) does not exist")
                }
                t.guards.append(.value(Key.snapshot(db, snap), sraw))
                t.commands.append(["SADD", Key.snapshotUsers(db, snap), d.name])
            }
            // Teams (#27): quotas decided in this transaction; the state interval log starts.
            t.guards += try quotaGuards(owner: d.owner, adding: QuotaChange(databases: 1, awake: 1))
            t.commands.append(UsageLog.event(before: nil, after: d))
            return (t, ())
        }
    }

    public func database(_ name: String) throws(CatalogError) -> DatabaseRecord? { try getJSON(DatabaseRecord.self, Key.database(name)) }

    /// Changes settings of a database that are not lifecycle state (TTL, hibernate-after), guarded.
    public func updateDatabase(_ name: String, _ change: @escaping (inout DatabaseRecord) -> Void) throws -> DatabaseRecord? {
        try optimistic("database \(name)") { () throws -> (Transaction, DatabaseRecord)? in
            guard let (d, raw) = try getRaw(DatabaseRecord.self, Key.database(name)) else { return nil }
            var next = d
            change(&next)
            var t = Transaction()
            t.guards = [.value(Key.database(name), raw)]
            t.commands = [["SET", Key.database(name), Self.encode(next)]]
            return (t, next)
        }
    }

    public func databases(owner: String? = nil) throws(CatalogError) -> [DatabaseRecord] {
        let names = try members(owner.map(Key.ownerDatabases) ?? Key.databases)
        return try mgetJSON(DatabaseRecord.self, names.map(Key.database))
    }

    /// The result of a lifecycle event applied to a database.
    public struct Transition: Sendable {
        /// The record after the event (nil: removed, or it did not exist).
        public var record: DatabaseRecord?
        public var actions: [DatabaseLifecycle.Action]
        /// False when the event was ignored (stale or repeated): nothing was written.
        public var applied = true
        /// Snapshots whose records this transition removed: their files or VolumeSnapshots go next.
        public var removedSnapshots: [SnapshotRecord] = []
    }

    /// Applies `event` to database `name` through the lifecycle state machine and commits the
    /// record with its effects (route, indexes, port lease) in one transaction, routes announced
    /// after it. Throws the state machine's refusal. Nil when the database does not exist.
    public func transition(_ name: String, _ event: DatabaseLifecycle.Event, guards extra: [Guard] = []) throws -> Transition? {
        try optimistic("database \(name)") { () throws -> (Transaction, Transition)? in
            guard let (d, raw) = try getRaw(DatabaseRecord.self, Key.database(name)) else { return nil }
            var t = Transaction()
            t.guards = [.value(Key.database(name), raw)] + extra
            var removed: [SnapshotRecord] = []
            switch DatabaseLifecycle.decide(d, event) {
            case .refuse(let refusal): throw refusal
            case .ignore: return (t, Transition(record: d, actions: [], applied: false))
            case .commit(var next, let effects, let actions):
                next?.stampPhase(since: d)
                // Teams (#27): quotas of a snapshot or wake, decided in this transaction; state intervals.
                t.guards += try quotaGuards(for: d, event, next: next)
                if let e = UsageLog.transitionEvent(before: d, after: next, effects: effects) { t.commands.append(e) }
                // A fresh version per route write: routers tell a route read before a fence from one
                // after it. The record carries it, so a concurrent transition's guard fails.
                var routeVersion = 0
                if effects.contains(where: { if case .setRoute = $0 { return true }; return false }) {
                    routeVersion = try cmd(["INCR", RouteContract.routeVersionCounter]).integer ?? 0
                    next?.routeVersion = routeVersion
                }
                if let next { t.commands.append(["SET", Key.database(name), Self.encode(next)]) }
                for e in effects {
                    switch e {
                    case .setRoute(var route):
                        route.version = routeVersion
                        t.commands += [["DEL", RouteContract.routeKey(name)],
                                       ["HSET", RouteContract.routeKey(name)] + route.fields.flatMap { [$0.0, $0.1] }
                                        + ["project", d.project, "owner", d.owner]]
                        t.commands += route.fence != nil ? [["SADD", RouteContract.fences, name]] : Self.endFence(name)
                        t.publish = [name]
                    case .removeRoute:
                        t.commands.append(["DEL", RouteContract.routeKey(name)])
                        t.commands += Self.endFence(name)
                        t.publish = [name]
                    case .removeRecord:
                        t.commands += [["DEL", Key.database(name)], ["SREM", Key.databases, name],
                                       ["SREM", Key.ownerDatabases(d.owner), name], ["SREM", Key.projectDatabases(d.project), name]]
                        if let port = d.backendPort { t.commands.append(["HDELIFEQ", Key.ports, String(port), name]) }
                        removed += try releaseSnapshots(of: d, into: &t)
                    case .addSnapshot(let snap):
                        let existing = try members(Key.databaseSnapshots(name))
                        if existing.contains(snap) {
                            throw DatabaseLifecycle.Refusal(message: "database \"\(name)\" already has a snapshot \"\(snap)\"",
                                                            hint: "choose another name with --as, or delete it: devdb db snapshot delete \(name) \(snap)")
                        }
                        guard existing.count < maxSnapshotsPerDatabase else {
                            throw DatabaseLifecycle.Refusal(message: "database \"\(name)\" has \(existing.count) snapshots, the most one database may have",
                                                            hint: "delete one first: devdb db snapshots \(name), then devdb db snapshot delete \(name) SNAP")
                        }
                        let record = SnapshotRecord(database: name, name: snap, owner: d.owner, project: d.project, generation: d.generation)
                        t.guards += [.value(Key.snapshot(name, snap), nil), .cardinality(Key.databaseSnapshots(name), existing.count)]
                        t.commands += [["SET", Key.snapshot(name, snap), Self.encode(record)], ["SADD", Key.databaseSnapshots(name), snap]]
                    case .finishSnapshot(let snap, let outcome, let reason):
                        guard let (cur, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(name, snap)) else { continue }
                        var done = cur
                        done.state = outcome == nil ? .failed : .ready
                        done.reason = reason
                        done.method = outcome?.method; done.sizeBytes = outcome?.sizeBytes; done.unavailableSeconds = outcome?.unavailableSeconds
                        t.guards.append(.value(Key.snapshot(name, snap), sraw))
                        t.commands.append(["SET", Key.snapshot(name, snap), Self.encode(done)])
                    }
                }
                return (t, Transition(record: next, actions: actions, removedSnapshots: removed))
            }
        }
    }

    /// When a database goes: its snapshots no branch uses are removed, the others are kept (marked
    /// `database_deleted`) for their branches; its own use of the snapshot it was branched from
    /// ends, and that snapshot goes too if its database is gone and nothing else uses it.
    private func releaseSnapshots(of d: DatabaseRecord, into t: inout Transaction) throws -> [SnapshotRecord] {
        var removed: [SnapshotRecord] = []
        for snap in try members(Key.databaseSnapshots(d.name)) {
            guard let (s, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(d.name, snap)) else { continue }
            let users = try members(Key.snapshotUsers(d.name, snap)).filter { $0 != d.name }
            t.guards += [.value(Key.snapshot(d.name, snap), sraw), .cardinality(Key.snapshotUsers(d.name, snap), users.count)]
            if users.isEmpty {
                t.commands += [["DEL", Key.snapshot(d.name, snap), Key.snapshotUsers(d.name, snap)]]
                removed.append(s)
            } else {
                var kept = s
                kept.databaseDeleted = true
                t.commands.append(["SET", Key.snapshot(d.name, snap), Self.encode(kept)])
            }
        }
        t.commands.append(["DEL", Key.databaseSnapshots(d.name)])
        if let base = d.base, let (db, snap) = SnapshotRecord.parse(base) {
            t.commands.append(["SREM", Key.snapshotUsers(db, snap), d.name])
            if let (s, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(db, snap)), s.databaseDeleted == true {
                let others = try members(Key.snapshotUsers(db, snap)).filter { $0 != d.name }
                t.guards += [.value(Key.snapshot(db, snap), sraw), .cardinality(Key.snapshotUsers(db, snap), others.count + 1)]
                if others.isEmpty {
                    t.commands += [["DEL", Key.snapshot(db, snap), Key.snapshotUsers(db, snap)]]
                    removed.append(s)
                }
            }
        }
        return removed
    }

    // MARK: snapshots

    public func snapshot(_ db: String, _ name: String) throws(CatalogError) -> SnapshotRecord? { try getJSON(SnapshotRecord.self, Key.snapshot(db, name)) }
    public func snapshotRaw(_ db: String, _ name: String) throws(CatalogError) -> String? { try cmd(["GET", Key.snapshot(db, name)]).string }

    /// A database's snapshots, oldest first.
    public func snapshots(of db: String) throws(CatalogError) -> [SnapshotRecord] {
        try mgetJSON(SnapshotRecord.self, try members(Key.databaseSnapshots(db)).map { Key.snapshot(db, $0) }).sorted { $0.createdAt < $1.createdAt }
    }

    /// Branches made from a snapshot.
    public func snapshotUsers(_ db: String, _ name: String) throws(CatalogError) -> [String] { try members(Key.snapshotUsers(db, name)) }

    /// Deletes a snapshot's records, refused (409) while it is being taken, while branches use it,
    /// or while its database is being reset to it. Returns the record (its files go next).
    public func deleteSnapshot(_ db: String, _ name: String) throws -> SnapshotRecord? {
        try optimistic("snapshot \(db)@\(name)") { () throws -> (Transaction, SnapshotRecord)? in
            guard let (s, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(db, name)) else { return nil }
            let (d, dbRaw) = try databaseAsRead(db)
            if s.state == .taking {
                throw DatabaseLifecycle.Refusal(message: "snapshot \(s.reference) is being taken", hint: "wait until it is ready (devdb db snapshots \(db)), then delete it")
            }
            let users = try members(Key.snapshotUsers(db, name))
            guard users.isEmpty else {
                throw DatabaseLifecycle.Refusal(message: "snapshot \(s.reference) is used by branch(es) \(users.joined(separator: ", "))",
                                                hint: "delete them first: " + users.map { "devdb db delete \($0)" }.joined(separator: "; "))
            }
            if let d, d.operation?.target == s.reference {
                throw DatabaseLifecycle.Refusal(message: "database \(db) is being reset to snapshot \(name)", hint: "wait until it is ready, then delete the snapshot")
            }
            var t = Transaction()
            t.guards = [.value(Key.snapshot(db, name), sraw), .cardinality(Key.snapshotUsers(db, name), 0), .value(Key.database(db), dbRaw)]
            t.commands = [["DEL", Key.snapshot(db, name), Key.snapshotUsers(db, name)], ["SREM", Key.databaseSnapshots(db), name],
                          UsageLog.snapshotRemoved(s)]  // Teams (#27): its bytes stop counting
            return (t, s)
        }
    }

    /// Removes a snapshot's keys if they are still as read (reconcile).
    public func removeSnapshotRecord(_ s: SnapshotRecord, ifUnchanged raw: String) throws(CatalogError) -> Bool {
        var t = Transaction()
        t.guards = [.value(Key.snapshot(s.database, s.name), raw), .cardinality(Key.snapshotUsers(s.database, s.name), 0)]
        t.commands = [["DEL", Key.snapshot(s.database, s.name), Key.snapshotUsers(s.database, s.name)], ["SREM", Key.databaseSnapshots(s.database), s.name]]
        return try commit(t)
    }

    /// Every snapshot record with its raw text, by SCAN (reconcile).
    public func allSnapshots() throws(CatalogError) -> [(SnapshotRecord, String)] {
        var out: [(SnapshotRecord, String)] = []
        for key in try scan("devdb:snapshot:*") where !key.hasSuffix(":users") {
            if let r = try getRaw(SnapshotRecord.self, key) { out.append((r.value, r.raw)) }
        }
        return out
    }

    /// Marks a snapshot failed if it is still as read (reconcile: taken by work that is gone).
    public func failSnapshot(_ s: SnapshotRecord, raw: String, reason: String) throws(CatalogError) -> Bool {
        var failed = s
        failed.state = .failed; failed.reason = reason
        var t = Transaction()
        t.guards = [.value(Key.snapshot(s.database, s.name), raw)]
        t.commands = [["SET", Key.snapshot(s.database, s.name), Self.encode(failed)]]
        return try commit(t)
    }

    // MARK: scale to zero

    /// What routers report of a route: open sessions (from routers heard from in the last
    /// `fresh` seconds) and the last time any router saw it in use.
    public func activity(_ name: String, now: Date = Date(), fresh: Double = 60) throws(CatalogError) -> (open: Int, lastActive: Date?) {
        Self.activity(from: try cmd(["HGETALL", RouteContract.activityKey(name)]).fieldMap, now: now, fresh: fresh)
    }

    /// `activity` of many routes, read in pipelines of 500 (a hibernator pass costs one round
    /// trip per 500 databases, not one each).
    public func activities(_ names: [String], now: Date = Date(), fresh: Double = 60) throws(CatalogError) -> [String: (open: Int, lastActive: Date?)] {
        var out: [String: (open: Int, lastActive: Date?)] = [:]
        var start = 0
        while start < names.count {
            let chunk = Array(names[start..<min(names.count, start + 500)])
            start += chunk.count
            let replies: [Result<RedisValue, RedisError>]
            do throws(RedisError) { replies = try redis.client.pipeline(chunk.map { ["HGETALL", RouteContract.activityKey($0)] }) } catch {
                throw .unavailable("the catalog (Redis) is unavailable: \(error)")
            }
            for (name, reply) in zip(chunk, replies) {
                guard case .success(let value) = reply else { continue }
                out[name] = Self.activity(from: value.fieldMap, now: now, fresh: fresh)
            }
        }
        return out
    }

    static func activity(from fields: [String: String], now: Date, fresh: Double) -> (open: Int, lastActive: Date?) {
        var open = 0
        var last: Double?
        for (_, value) in fields {
            let parts = value.split(separator: " ").compactMap { Double($0) }
            guard parts.count == 3 else { continue }
            if now.timeIntervalSince1970 - parts[2] <= fresh { open += Int(parts[0]) }
            last = max(last ?? 0, parts[1])
        }
        return (open, last.map { Date(timeIntervalSince1970: $0) })
    }

    /// Names routers asked to wake (the set survives an API that was not listening).
    public func wakeRequests() throws(CatalogError) -> [String] { try members(RouteContract.wakeRequests) }
    public func clearWakeRequest(_ name: String) throws(CatalogError) { _ = try cmd(["SREM", RouteContract.wakeRequests, name]) }

    // MARK: routes (the router contract)

    /// Announces the route on `devdb:routes` (routers drop their cached copy and re-read it).
    public func announceRoute(_ name: String) throws(CatalogError) {
        _ = try cmd(["PUBLISH", RouteContract.routesChannel, name])
    }

    /// The writes that end a route's fence, if it had one.
    static func endFence(_ name: String) -> [[String]] {
        [["SREM", RouteContract.fences, name], ["DEL", RouteContract.fenceAcksKey(name)]]
    }

    /// What the routers say about a fence: those whose lease holds (with their activity
    /// interval), and the sessions each that acknowledged `token` has routed to the database.
    public struct FenceReport: Sendable, Equatable {
        public var routers: [String: Double] = [:]
        public var acknowledged: [String: Int] = [:]
        /// Routers whose lease holds that have not acknowledged this fence yet.
        public var waitingFor: [String] { routers.keys.filter { acknowledged[$0] == nil }.sorted() }
        public var openSessions: Int { acknowledged.values.reduce(0, +) }
    }

    /// The routers whose lease holds, with their activity intervals (ended leases are removed).
    public func liveRouters() throws(CatalogError) -> [String: Double] {
        try fenceReport("", token: "").routers
    }

    public func fenceReport(_ name: String, token: String) throws(CatalogError) -> FenceReport {
        var report = FenceReport()
        guard case .array(let rows) = try cmd(["EVAL", RouteContract.liveRoutersScript, "2", RouteContract.routers, RouteContract.fenceAcksKey(name)]) else {
            return report
        }
        for case .array(let row) in rows where row.count >= 2 {
            guard let id = row[0].string else { continue }
            report.routers[id] = Double(row[1].string ?? "") ?? 5
            if row.count >= 3, let ack = row[2].string {
                let parts = ack.split(separator: " ")
                if parts.count == 2, parts[0] == token, let open = Int(parts[1]) { report.acknowledged[id] = open }
            }
        }
        return report
    }

    public func route(_ name: String) throws(CatalogError) -> RouteRecord? {
        let fields = try cmd(["HGETALL", RouteContract.routeKey(name)]).fieldMap
        return fields.isEmpty ? nil : try? RouteRecord(fields: fields)
    }

    /// Removes a route if the database is still as read (`raw`, nil: it does not exist) and the
    /// route is still there (false: nothing was removed).
    public func removeRoute(_ name: String, ifDatabaseIs raw: String?) throws(CatalogError) -> Bool {
        var t = Transaction()
        t.guards = [.value(Key.database(name), raw), .exists(RouteContract.routeKey(name))]
        t.commands = [["DEL", RouteContract.routeKey(name)]] + Self.endFence(name)
        t.publish = [name]
        return try commit(t)
    }

    /// Deletes a key left by a project that no longer exists (guarded: the project is still
    /// absent and the key still there).
    public func removeOrphanKey(_ key: String, project: String) throws(CatalogError) -> Bool {
        var t = Transaction()
        t.guards = [.value(Key.project(project), nil), .exists(key)]
        t.commands = [["DEL", key]]
        return try commit(t)
    }

    /// A database record with the exact text it was read as (for guards); both nil when it does not exist.
    public func databaseAsRead(_ name: String) throws(CatalogError) -> (DatabaseRecord?, String?) {
        guard let (d, raw) = try getRaw(DatabaseRecord.self, Key.database(name)) else { return (nil, nil) }
        return (d, raw)
    }

    // MARK: local ports

    /// Leases `port` to database `name` and records it on the database, in one transaction.
    /// False when the port is leased already or the database changed; a database that has a
    /// port keeps it.
    public func claimPort(_ port: Int, for name: String) throws -> Bool {
        try optimistic("a port for \(name)") { () throws -> (Transaction, Bool)? in
            guard let (d, raw) = try getRaw(DatabaseRecord.self, Key.database(name)) else {
                throw CatalogError.notFound("database \"\(name)\" was deleted")
            }
            if let mine = d.backendPort, mine != port { return (Transaction(), false) }
            var next = d
            next.backendPort = port
            next.backendHost = d.backendHost ?? "127.0.0.1"
            var t = Transaction()
            t.guards = [.value(Key.database(name), raw)]
            if d.backendPort != port {
                let owner = try cmd(["HGET", Key.ports, String(port)]).string
                if owner != nil && owner != name { return (Transaction(), false) }
                t.guards.append(.field(Key.ports, String(port), owner))
            }
            t.commands = [["HSET", Key.ports, String(port), name], ["SET", Key.database(name), Self.encode(next)]]
            return (t, true)
        } ?? false
    }

    /// Removes a lease if it still belongs to `owner` and the owner's record is still `raw`
    /// (false: nothing was removed).
    public func releaseLease(_ port: Int, owner: String, ifDatabaseIs raw: String?) throws(CatalogError) -> Bool {
        var t = Transaction()
        t.guards = [.value(Key.database(owner), raw), .field(Key.ports, String(port), owner)]
        t.commands = [["HDELIFEQ", Key.ports, String(port), owner]]
        return try commit(t)
    }

    public func portOwners() throws(CatalogError) -> [Int: String] {
        var out: [Int: String] = [:]
        for (k, v) in try cmd(["HGETALL", Key.ports]).fieldMap { if let p = Int(k) { out[p] = v } }
        return out
    }

    // MARK: tokens

    public static func sha256Hex(_ text: String) -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        let bytes = Array(text.utf8)
        _ = SHA256(bytes, bytes.count, &digest)
        return digest.map { String(format: "%02x", $0) }.joined()
    }

    public static func randomHex(_ bytes: Int) -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &rng)) }.joined()
    }

    /// Makes a token for `user`; the plaintext is returned once and never stored.
    public func createToken(user: String, admin: Bool) throws(CatalogError) -> (token: String, record: TokenRecord) {
        let token = "ddb_" + Self.randomHex(24)
        let record = TokenRecord(id: "tok_" + Self.randomHex(6), user: user, admin: admin)
        try storeToken(hash: Self.sha256Hex(token), record)
        return (token, record)
    }

    /// Stores a token whose plaintext the caller chose (the admin token from a file).
    public func storeToken(hash: String, _ record: TokenRecord) throws(CatalogError) {
        var t = Transaction()
        t.commands = [["SET", Key.tokenByHash(hash), Self.encode(record)], ["SET", Key.tokenByID(record.id), hash], ["SADD", Key.tokens, record.id]]
        _ = try commit(t)
    }

    public func token(plaintext: String) throws(CatalogError) -> TokenRecord? {
        try getJSON(TokenRecord.self, Key.tokenByHash(Self.sha256Hex(plaintext)))
    }

    public func tokens() throws(CatalogError) -> [TokenRecord] {
        let ids = try members(Key.tokens)
        var out: [TokenRecord] = []
        for id in ids {
            if let hash = try cmd(["GET", Key.tokenByID(id)]).string, let r = try getJSON(TokenRecord.self, Key.tokenByHash(hash)) {
                out.append(r)
            }
        }
        return out
    }

    public func revokeToken(id: String) throws(CatalogError) {
        guard let hash = try cmd(["GET", Key.tokenByID(id)]).string else { throw .notFound("token \(id) does not exist") }
        var t = Transaction()
        t.commands = [["DEL", Key.tokenByHash(hash), Key.tokenByID(id)], ["SREM", Key.tokens, id]]
        _ = try commit(t)
    }
}
