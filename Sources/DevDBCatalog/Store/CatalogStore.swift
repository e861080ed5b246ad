import DevDBCore
import Foundation

// The catalog as the control plane sees it: one async protocol per aggregate, grouped by
// `CatalogStore`. Two implementations share one engine (Sources/DevDBCatalog/Engine) and so the
// same guards and transactions: `RedisCatalogStore` (production; key layout in
// docs/redis-keys.md, which routers read) and `MemoryCatalogStore` (in-process tests).

/// Projects and their generations (seeded copies of the project's dump).
public protocol ProjectStore: Sendable {
    /// Adds a project (and its generation 1 when `firstGeneration`); `.conflict` if the name is taken.
    func createProject(_ p: Project, firstGeneration: Bool) async throws -> Generation?
    func project(_ name: String) async throws -> Project?
    func projects() async throws -> [Project]
    /// Names of the project's databases (the index the project delete is guarded by).
    func projectDatabases(_ name: String) async throws -> [String]
    /// Marks the project for deletion, atomically with the check that it has no database.
    func requestProjectDelete(_ name: String) async throws -> ProjectLifecycle.DeleteDecision?
    /// Removes the project and every generation key in one transaction.
    func removeProject(_ name: String) async throws
    /// Changes a project's settings (guarded: a concurrent change makes it read and apply again).
    func updateProject(_ name: String, _ change: @escaping @Sendable (inout Project) throws -> Void) async throws -> Project?
    /// A new generation, unless the project is being deleted (nil then); the dump's fingerprint
    /// and a scheduled refresh's time are recorded on the project in the same transaction.
    func newGeneration(project: String, fingerprint: String?, scheduledAt: Date?) async throws -> Generation?
    func generation(_ project: String, _ number: Int) async throws -> Generation?
    func generations(_ project: String) async throws -> [Generation]
    /// Applies a seed's progress or outcome (and the project's state when it ends).
    @discardableResult
    func apply(_ event: GenerationLifecycle.Event, project: String, generation: Int) async throws -> Generation?
    /// Marks a generation failed whatever it was (its snapshot is gone).
    func failGeneration(_ g: Generation, reason: String) async throws
    func removeGeneration(_ g: Generation) async throws
    /// Generation keys whose project is not among `known` (reconcile), and their removal,
    /// guarded by the project still being absent.
    func strayGenerationKeys(known: Set<String>) async throws -> [StrayKey]
    func removeStrayKey(_ key: StrayKey) async throws -> Bool
    /// This catalog's installation identity, made on first use.
    func installationIdentity() async throws -> InstallationIdentity
}

/// A key left by a project that no longer exists.
public struct StrayKey: Sendable, Equatable {
    public var key: String
    public var project: String
}

/// Databases, and the one way their lifecycle state changes: `transition`.
public protocol DatabaseStore: Sendable {
    /// Adds a database and its index entries, unless the name is taken or the project is gone or
    /// being deleted; a branch takes a use of its snapshot.
    func createDatabase(_ d: DatabaseRecord) async throws
    func database(_ name: String) async throws -> DatabaseRecord?
    /// The record with the exact text it was read as (the guard of a later removal).
    func databaseAsRead(_ name: String) async throws -> RecordAsRead<DatabaseRecord>
    /// Many records with their raw text at once (reconcile).
    func databasesAsRead(_ names: [String]) async throws -> [String: RecordAsRead<DatabaseRecord>]
    /// Every database's record with its raw text, by name (reconcile's one read of the catalog).
    func allDatabasesAsRead() async throws -> [String: RecordAsRead<DatabaseRecord>]
    /// Deletes the operation-history streams an earlier version kept (`devdb:database:*:operations`);
    /// how many there were.
    func removeLegacyOperationStreams() async throws -> Int
    func databases(owner: String?) async throws -> [DatabaseRecord]
    /// Databases in name order after `after`, that `keep` accepts, at most `limit` (nil: all),
    /// reading the owner's or project's index (or everyone's) and only the records the page needs.
    func databasePage(owner: String?, project: String?, after: String?, limit: Int?,
                      where keep: @escaping @Sendable (DatabaseRecord) -> Bool) async throws -> DatabasePage
    /// Changes settings that are not lifecycle state (TTL, hibernate-after), guarded.
    func updateDatabase(_ name: String, _ change: @escaping @Sendable (inout DatabaseRecord) -> Void) async throws -> DatabaseRecord?
    /// Applies `event` through `DatabaseLifecycle` and commits the record with its effects
    /// (route, indexes, port lease, snapshots) in one transaction; `conditions` must still hold.
    /// Throws the state machine's `DatabaseLifecycle.Refusal` or a `CatalogRefusal`. Nil when
    /// the database does not exist.
    func transition(_ name: String, _ event: DatabaseLifecycle.Event, conditions: [CatalogCondition]) async throws -> Transition?
    /// The database's finished operations (`OperationHistory`), newest first, at most `limit`.
    func operations(of name: String, limit: Int) async throws -> [OperationRecord]
    /// How many databases are in each state (absent: none), from the count kept with every
    /// transition: one read however many databases there are.
    func databaseStateCounts() async throws -> [DatabaseRecord.State: Int]
    /// The databases in state `ready`, read through their index (the hibernator's candidates).
    func readyDatabases() async throws -> [DatabaseRecord]
    /// The databases whose expiry is at or before `now`, read through the expiry index.
    func expiredDatabases(now: Date) async throws -> [DatabaseRecord]
    /// Rebuilds the state counts and the ready and expiry indexes from the records if they differ
    /// from what `checking` (records just read; nil: read them) implies, in one transaction
    /// guarded by every record. True when it rewrote them (reconcile: catalogs of older versions).
    func repairDatabaseIndexes(checking: [DatabaseRecord]?) async throws -> Bool
}

/// A value and the exact text it was read as (nil, nil: it does not exist).
public struct RecordAsRead<Value: Sendable>: Sendable {
    public var value: Value?
    public var raw: String?
    public init(value: Value?, raw: String?) { self.value = value; self.raw = raw }
}

/// Something a transition requires besides its own record, checked inside its transaction.
public enum CatalogCondition: Sendable, Equatable {
    /// The snapshot's record is still exactly `raw` (as read).
    case snapshotUnchanged(database: String, snapshot: String, raw: String)
}

/// The result of a lifecycle event applied to a database.
public struct Transition: Sendable {
    /// The record after the event (nil: removed).
    public var record: DatabaseRecord?
    public var actions: [DatabaseLifecycle.Action]
    /// False when the event was ignored (stale or repeated): nothing was written.
    public var applied = true
    /// Snapshots whose records this transition removed: their files or VolumeSnapshots go next.
    public var removedSnapshots: [SnapshotRecord] = []
}

/// Snapshots of databases (their records; the provisioner holds their data).
public protocol SnapshotStore: Sendable {
    func snapshot(_ db: String, _ name: String) async throws -> SnapshotRecord?
    func snapshotAsRead(_ db: String, _ name: String) async throws -> RecordAsRead<SnapshotRecord>
    /// A database's snapshots, oldest first.
    func snapshots(of db: String) async throws -> [SnapshotRecord]
    /// Branches made from a snapshot.
    func snapshotUsers(_ db: String, _ name: String) async throws -> [String]
    /// Deletes a snapshot's records; refused (`CatalogRefusal`) while it is being taken, used by
    /// branches, or being reset to. Returns the record (its data goes next).
    func deleteSnapshot(_ db: String, _ name: String) async throws -> SnapshotRecord?
    /// Every snapshot record with its raw text (reconcile).
    func allSnapshots() async throws -> [(SnapshotRecord, String)]
    /// Removes a snapshot's keys if still as read and unused (reconcile).
    func removeSnapshotRecord(_ s: SnapshotRecord, ifUnchanged raw: String) async throws -> Bool
    /// Marks a snapshot failed if it is still as read (reconcile).
    func failSnapshot(_ s: SnapshotRecord, raw: String, reason: String) async throws -> Bool
}

/// API tokens: only their hashes are stored.
public protocol TokenStore: Sendable {
    /// Makes a token for `user`; the plaintext is returned once and never stored.
    func createToken(user: String, admin: Bool) async throws -> (token: String, record: TokenRecord)
    /// Stores a token whose plaintext the caller chose (the admin token).
    func storeToken(hash: String, _ record: TokenRecord) async throws
    func token(plaintext: String) async throws -> TokenRecord?
    func tokens() async throws -> [TokenRecord]
    func revokeToken(id: String) async throws
}

/// Local ports leased to databases (the local provisioner's instances listen on them).
public protocol PortLeaseStore: Sendable {
    /// Leases `port` to database `name` and records it on the database, in one transaction.
    /// False when the port is leased to another or the database has another port.
    func claimPort(_ port: Int, for name: String) async throws -> Bool
    /// Removes a lease if it still belongs to `owner` and the owner's record is still `raw`.
    func releaseLease(_ port: Int, owner: String, ifDatabaseIs raw: String?) async throws -> Bool
    func portOwners() async throws -> [Int: String]
}

/// What the store shares with routers: routes, fences, activity and wake requests.
public protocol RouteStore: Sendable {
    func route(_ name: String) async throws -> RouteRecord?
    /// The routes of many databases at once (reconcile); absent ones are left out.
    func routes(_ names: [String]) async throws -> [String: RouteRecord]
    /// Names of every database that has a route (reconcile).
    func routedNames() async throws -> [String]
    /// Removes a route if the database is still as read (`raw`, nil: absent) and the route exists.
    func removeRoute(_ name: String, ifDatabaseIs raw: String?) async throws -> Bool
    /// Announces the route on `devdb:routes` (routers re-read it).
    func announceRoute(_ name: String) async throws
    /// Open sessions and last use of many routes, as routers report them.
    func activities(_ names: [String], now: Date, fresh: Double) async throws -> [String: RouteUsage]
    /// The routers whose lease holds, with their activity intervals.
    func liveRouters() async throws -> [String: Double]
    func fenceReport(_ name: String, token: String) async throws -> FenceReport
    /// Names routers asked to wake (the set survives an API that was not listening).
    func wakeRequests() async throws -> [String]
    func clearWakeRequest(_ name: String) async throws
}

/// What routers report of a route: open sessions (from routers heard from lately) and last use.
public struct RouteUsage: Sendable, Equatable {
    public var open: Int
    public var lastActive: Date?
    public init(open: Int, lastActive: Date?) { self.open = open; self.lastActive = lastActive }
}

/// What the routers say about a fence: those whose lease holds (with their activity
/// interval), and the sessions each that acknowledged the fence's token routed to the database.
public struct FenceReport: Sendable, Equatable {
    public var routers: [String: Double] = [:]
    public var acknowledged: [String: Int] = [:]
    public init() {}
    /// Routers whose lease holds that have not acknowledged this fence yet.
    public var waitingFor: [String] { routers.keys.filter { acknowledged[$0] == nil }.sorted() }
    public var openSessions: Int { acknowledged.values.reduce(0, +) }
}

/// Teams (#27): quota limits and use, the audit stream and the usage event log.
public protocol TeamsStore: Sendable {
    /// The default limits and the user's own (each empty when unset).
    func quotaLimits(user: String?) async throws -> (defaults: QuotaLimits, own: QuotaLimits)
    /// Changes the stored limits of a user (nil: the default) from what they are; returns them.
    func updateQuota(user: String?, _ change: @escaping @Sendable (inout QuotaLimits) -> Void) async throws -> QuotaLimits
    /// What the user holds now, every resource counted.
    func quotaUse(owner: String) async throws -> QuotaUse
    /// Throws `QuotaRefusal` if `change` would go over `owner`'s limits now.
    func checkQuota(owner: String, adding change: QuotaChange) async throws
    /// Marks a route's wake refused (`wake_refused`) and tells the routers, if the route exists.
    func setWakeRefusal(_ name: String, _ text: String) async throws
    func appendAudit(_ r: AuditRecord, maxEntries: Int, maxAge: Double) async throws
    /// Audit entries matching the query, newest first.
    func auditEntries(_ q: AuditQuery) async throws -> [AuditRecord]
    /// Usage events (of `owner` only, when given), oldest first.
    func usageEvents(owner: String?) async throws -> [UsageEvent]
}

/// The whole catalog.
public protocol CatalogStore: ProjectStore, DatabaseStore, SnapshotStore, TokenStore, PortLeaseStore, RouteStore, TeamsStore {
    /// Checks that the store answers.
    func ping() async throws
}

extension ProjectStore {
    public func createProject(_ p: Project) async throws -> Generation? { try await createProject(p, firstGeneration: true) }
    public func newGeneration(project: String, fingerprint: String? = nil) async throws -> Generation? {
        try await newGeneration(project: project, fingerprint: fingerprint, scheduledAt: nil)
    }
}

extension DatabaseStore {
    public func databases() async throws -> [DatabaseRecord] { try await databases(owner: nil) }
    public func transition(_ name: String, _ event: DatabaseLifecycle.Event) async throws -> Transition? {
        try await transition(name, event, conditions: [])
    }
}

extension RouteStore {
    public func activities(_ names: [String]) async throws -> [String: RouteUsage] {
        try await activities(names, now: Date(), fresh: 60)
    }
}
