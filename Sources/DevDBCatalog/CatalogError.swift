/// Why a catalog call failed: a name taken, an entry missing, Redis away, an unreadable entry.
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

/// A business rule the catalog enforces inside a transaction (it can only be checked against
/// what the transaction reads). The API words each one, with what to do, in its views.
public enum CatalogRefusal: Error, Sendable, Equatable {
    /// The database already has a snapshot of this name.
    case snapshotExists(database: String, snapshot: String)
    /// The database has `count` snapshots, the most one may have.
    case tooManySnapshots(database: String, count: Int)
    /// The snapshot is still being taken.
    case snapshotBeingTaken(database: String, snapshot: String)
    /// Branches made from the snapshot still exist.
    case snapshotInUse(database: String, snapshot: String, branches: [String])
    /// The database is being reset to this snapshot.
    case snapshotBeingRestored(database: String, snapshot: String)
}
