import Foundation

/// The key-value operations the catalog engine needs, with Redis' data model (strings, sets,
/// hashes, lists). Blocking: `RedisBackend` talks to Redis, `MemoryBackend` keeps it in memory.
/// `commit` is the one way to write several keys: all of a transaction's writes, or none.
public protocol CatalogBackend: Sendable {
    func get(_ key: String) throws -> String?
    /// Values of `keys` in order (nil: absent); Redis: `MGET`, 2,000 keys a round trip.
    func getMany(_ keys: [String]) throws -> [String?]
    func setMembers(_ key: String) throws -> [String]
    func setCount(_ key: String) throws -> Int
    func hashField(_ key: String, _ field: String) throws -> String?
    func hash(_ key: String) throws -> [String: String]
    /// Whole hashes of many keys (Redis: pipelined, 1,000 a round trip).
    func hashes(_ keys: [String]) throws -> [[String: String]]
    func list(_ key: String) throws -> [String]
    /// Members of a sorted set with score at most `maxScore` (nil: all), lowest score first.
    func sortedSet(_ key: String, maxScore: Double?) throws -> [ScoredMember]
    /// Up to `count` members of a sorted set whose members all score the same, in byte order,
    /// after `after` (exclusive; nil: from the first): Redis `ZRANGEBYLEX`.
    func sortedSetMembers(_ key: String, after: String?, count: Int) throws -> [String]
    /// How many members a sorted set has.
    func sortedSetCount(_ key: String) throws -> Int
    func increment(_ key: String) throws -> Int
    /// Sets the key unless it exists.
    func setIfAbsent(_ key: String, _ value: String) throws
    /// Keys matching a glob with `*` (reconcile only; listings use index sets).
    func scan(_ pattern: String) throws -> [String]
    /// Applies every write if every guard holds; false (nothing written) otherwise.
    func commit(_ t: Transaction) throws -> Bool
    /// Routers whose lease has not ended (ended ones are removed), each with its activity
    /// interval text and its entry in `acksKey` (RouteContract.liveRoutersScript).
    func liveRouters(acksKey: String) throws -> [LiveRouter]
    func ping() throws
    /// Up to `count` entries of a stream between ids `start` and `end` (Redis XRANGE syntax:
    /// `-`, `+`, `ms`, `ms-seq`, `(id` exclusive), oldest first, or newest first when `reverse`.
    func streamRange(_ key: String, start: String, end: String, count: Int, reverse: Bool) throws -> [StreamEntry]
}

/// A sorted set's member and its score.
public struct ScoredMember: Sendable, Equatable {
    public var member: String
    public var score: Double
}

/// One stream entry: its id and the value of its field `e`.
public struct StreamEntry: Sendable, Equatable {
    public var id: String
    public var value: String
}

public struct LiveRouter: Sendable, Equatable {
    public var id: String
    public var interval: String
    public var acknowledgement: String?
}

extension Array {
    /// The array in consecutive slices of at most `size` (the last may be shorter).
    func chunks(of size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: Swift.max(1, size)).map { self[$0..<Swift.min(count, $0 + Swift.max(1, size))] }
    }
}
