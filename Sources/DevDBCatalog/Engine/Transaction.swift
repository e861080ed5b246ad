import DevDBCore

/// A condition checked inside a transaction, on values read before it.
public enum Guard: Sendable, Equatable {
    /// The string at key is exactly `raw` (nil: the key does not exist).
    case value(String, String?)
    /// The hash field is exactly `value` (nil: absent).
    case field(String, String, String?)
    /// The set has exactly `count` members.
    case cardinality(String, Int)
    /// The key exists (of any type).
    case exists(String)
}

/// One write of a transaction. Typed so both backends apply exactly the same set of writes.
public enum RedisWrite: Sendable, Equatable {
    case set(String, String)
    case delete([String])
    case setAdd(String, String)
    case setRemove(String, String)
    /// Replaces nothing: sets the given fields (in order) of the hash.
    case hashSet(String, [HashField])
    /// Deletes the field only if it holds `value` (a port lease of this database, not another's).
    case hashDeleteIfEquals(String, field: String, value: String)
    /// Adds `by` to the integer in a hash field (absent: 0).
    case hashIncrement(String, field: String, by: Int)
    /// Adds (or rescores) a member of a sorted set.
    case sortedSetAdd(String, member: String, score: Double)
    case sortedSetRemove(String, String)
    case listAppend(String, String)
    /// Removes every occurrence of `value` from the list.
    case listRemove(String, String)
    /// Keeps only the last `count` entries of the list (`LTRIM key -count -1`).
    case listKeepLast(String, count: Int)
    case publish(channel: String, message: String)
    /// Appends an entry (one field `e` holding `value`) to a stream with a new id (`*`), then keeps
    /// at most `maxLength` entries (`approximate`: Redis may keep a few more, which is cheaper).
    case streamAdd(String, value: String, maxLength: Int, approximate: Bool)
    /// Removes the stream's entries with ids below `minimumID` (milliseconds: older than that time).
    case streamTrimBefore(String, minimumID: Int64)

    public struct HashField: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(_ name: String, _ value: String) { self.name = name; self.value = value }
    }
}

/// Writes applied together when every guard holds, or not at all.
public struct Transaction: Sendable, Equatable {
    public var guards: [Guard] = []
    public var writes: [RedisWrite] = []
    /// Route names to announce on `devdb:routes` after the writes.
    public var publish: [String] = []
    public init(guards: [Guard] = [], writes: [RedisWrite] = []) { self.guards = guards; self.writes = writes }

    /// The writes in order, announcements last.
    var allWrites: [RedisWrite] { writes + publish.map { .publish(channel: RouteContract.routesChannel, message: $0) } }
}
