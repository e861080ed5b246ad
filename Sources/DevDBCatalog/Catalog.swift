import COpenSSL
import DevDBCore
import DevDBRedis
import Dispatch
import Foundation

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
/// KEYS. Unique names come from SET NX: of two concurrent creates exactly one wins.
/// Calls block on Redis; async callers go through `run`, which hops to a private queue.
public final class Catalog: Sendable {
    public let redis: RedisClient
    private let queue = DispatchQueue(label: "devdb.catalog", attributes: .concurrent)

    public init(redis: RedisClient) { self.redis = redis }

    public func run<T: Sendable>(_ body: @escaping @Sendable (Catalog) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { cont in
            queue.async {
                do { cont.resume(returning: try body(self)) } catch { cont.resume(throwing: error) }
            }
        }
    }

    // MARK: keys

    enum Key {
        static let projects = "devdb:projects"
        static func project(_ n: String) -> String { "devdb:project:\(n)" }
        static func generationSeq(_ p: String) -> String { "devdb:project:\(p):generation-seq" }
        static func generations(_ p: String) -> String { "devdb:project:\(p):generations" }
        static func generation(_ p: String, _ n: Int) -> String { "devdb:generation:\(p):\(n)" }
        static let databases = "devdb:databases"
        static func database(_ n: String) -> String { "devdb:database:\(n)" }
        static func ownerDatabases(_ o: String) -> String { "devdb:owner:\(o):databases" }
        static let tokens = "devdb:tokens"
        static func tokenByHash(_ h: String) -> String { "devdb:token:\(h)" }
        static func tokenByID(_ id: String) -> String { "devdb:tokenid:\(id)" }
        static let ports = "devdb:local:ports"
    }

    // MARK: helpers

    func cmd(_ args: [String]) throws(CatalogError) -> RedisValue {
        do throws(RedisError) { return try redis.command(args) } catch {
            throw .unavailable("the catalog (Redis) is unavailable: \(error)")
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
        guard let text = try cmd(["GET", key]).string else { return nil }
        return try Self.decode(T.self, text, key: key)
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

    /// Checks that Redis answers.
    public func ping() throws(CatalogError) { _ = try cmd(["PING"]) }

    // MARK: projects

    public func createProject(_ p: Project) throws(CatalogError) {
        guard try cmd(["SET", Key.project(p.name), Self.encode(p), "NX"]) != .null else {
            throw .conflict("project \"\(p.name)\" already exists")
        }
        _ = try cmd(["SADD", Key.projects, p.name])
    }

    public func project(_ name: String) throws(CatalogError) -> Project? { try getJSON(Project.self, Key.project(name)) }

    public func projects() throws(CatalogError) -> [Project] {
        try mgetJSON(Project.self, try members(Key.projects).map(Key.project))
    }

    public func updateProject(_ p: Project) throws(CatalogError) {
        guard try cmd(["SET", Key.project(p.name), Self.encode(p), "XX"]) != .null else {
            throw .notFound("project \"\(p.name)\" does not exist")
        }
    }

    public func deleteProject(_ name: String) throws(CatalogError) {
        for g in try generations(name) { _ = try cmd(["DEL", Key.generation(name, g.number)]) }
        _ = try cmd(["DEL", Key.project(name), Key.generations(name), Key.generationSeq(name)])
        _ = try cmd(["SREM", Key.projects, name])
    }

    // MARK: generations

    public func newGeneration(project: String) throws(CatalogError) -> Generation {
        guard let n = try cmd(["INCR", Key.generationSeq(project)]).integer else { throw .corrupt("generation counter") }
        let g = Generation(project: project, number: n)
        _ = try cmd(["SET", Key.generation(project, n), Self.encode(g)])
        _ = try cmd(["RPUSH", Key.generations(project), String(n)])
        return g
    }

    public func updateGeneration(_ g: Generation) throws(CatalogError) {
        _ = try cmd(["SET", Key.generation(g.project, g.number), Self.encode(g)])
    }

    public func generations(_ project: String) throws(CatalogError) -> [Generation] {
        guard case .array(let items) = try cmd(["LRANGE", Key.generations(project), "0", "-1"]) else { return [] }
        let numbers = items.compactMap { $0.integer }
        return try mgetJSON(Generation.self, numbers.map { Key.generation(project, $0) })
    }

    public func removeGeneration(_ g: Generation) throws(CatalogError) {
        _ = try cmd(["DEL", Key.generation(g.project, g.number)])
        _ = try cmd(["LREM", Key.generations(g.project), "0", String(g.number)])
    }

    // MARK: databases

    public func createDatabase(_ d: DatabaseRecord) throws(CatalogError) {
        guard try cmd(["SET", Key.database(d.name), Self.encode(d), "NX"]) != .null else {
            throw .conflict("database \"\(d.name)\" already exists")
        }
        _ = try cmd(["SADD", Key.databases, d.name])
        _ = try cmd(["SADD", Key.ownerDatabases(d.owner), d.name])
    }

    public func database(_ name: String) throws(CatalogError) -> DatabaseRecord? { try getJSON(DatabaseRecord.self, Key.database(name)) }

    public func databases(owner: String? = nil) throws(CatalogError) -> [DatabaseRecord] {
        let names = try members(owner.map(Key.ownerDatabases) ?? Key.databases)
        return try mgetJSON(DatabaseRecord.self, names.map(Key.database))
    }

    /// Writes a database only if it still exists (a concurrent delete wins).
    @discardableResult
    public func updateDatabase(_ d: DatabaseRecord) throws(CatalogError) -> Bool {
        try cmd(["SET", Key.database(d.name), Self.encode(d), "XX"]) != .null
    }

    public func deleteDatabase(_ d: DatabaseRecord) throws(CatalogError) {
        _ = try cmd(["DEL", Key.database(d.name)])
        _ = try cmd(["SREM", Key.databases, d.name])
        _ = try cmd(["SREM", Key.ownerDatabases(d.owner), d.name])
    }

    // MARK: routes (the router contract)

    public func setRoute(_ name: String, _ route: RouteRecord) throws(CatalogError) {
        _ = try cmd(["HSET", RouteContract.routeKey(name)] + route.fields.flatMap { [$0.0, $0.1] })
        _ = try cmd(["PUBLISH", RouteContract.routesChannel, name])
    }

    public func deleteRoute(_ name: String) throws(CatalogError) {
        _ = try cmd(["DEL", RouteContract.routeKey(name)])
        _ = try cmd(["PUBLISH", RouteContract.routesChannel, name])
    }

    public func route(_ name: String) throws(CatalogError) -> RouteRecord? {
        let fields = try cmd(["HGETALL", RouteContract.routeKey(name)]).fieldMap
        return fields.isEmpty ? nil : try? RouteRecord(fields: fields)
    }

    // MARK: local ports

    /// Claims a free port in `range` for `owner`.
    public func allocatePort(in range: ClosedRange<Int>, for owner: String) throws(CatalogError) -> Int {
        for port in range {
            if try cmd(["HSETNX", Key.ports, String(port), owner]).integer == 1 { return port }
        }
        throw .conflict("no free port left in \(range.lowerBound)-\(range.upperBound); delete databases or widen --port-range")
    }

    public func releasePort(_ port: Int) throws(CatalogError) { _ = try cmd(["HDEL", Key.ports, String(port)]) }

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
        _ = try cmd(["SET", Key.tokenByHash(hash), Self.encode(record)])
        _ = try cmd(["SET", Key.tokenByID(record.id), hash])
        _ = try cmd(["SADD", Key.tokens, record.id])
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
        _ = try cmd(["DEL", Key.tokenByHash(hash), Key.tokenByID(id)])
        _ = try cmd(["SREM", Key.tokens, id])
    }
}
