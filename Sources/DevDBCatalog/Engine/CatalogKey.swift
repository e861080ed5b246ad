/// The catalog's Redis key layout (docs/redis-keys.md). Routes, fences, activity and wake keys
/// are the router contract's (`RouteContract`).
public enum CatalogKey {
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
    public static let installation = "devdb:installation"
    /// Databases per state: field a state, value how many (kept by every transaction that
    /// writes a record, `CatalogEngine.indexWrites`; /metrics reads it).
    public static let databaseStates = "devdb:database-states"
    /// Names of the databases in state `ready` (the hibernator's candidates).
    public static let readyDatabases = "devdb:databases:ready"
    /// Sorted set: names of databases with a TTL, scored by expiry (epoch seconds; the reaper).
    public static let databaseExpiry = "devdb:databases:expiry"
    /// Sorted set: every database's name, all scored 0, so `ZRANGEBYLEX` gives a page of names in
    /// name order after a name (an admin's page reads one page of names, not every name).
    public static let databasesByName = "devdb:databases:by-name"
}
