import DevDBCore
import Foundation

/// A `CatalogStore` whose aggregates are the shared `CatalogEngine`: the store only decides
/// where the engine's calls run (`perform`) and how failures are retried. Both stores conform,
/// so Redis and memory cannot drift apart in what they decide.
public protocol CatalogEngineStore: CatalogStore {
    /// Runs `body` against the engine (Redis: on a blocking thread, retried while Redis is away).
    func perform<T: Sendable>(_ body: @escaping @Sendable (CatalogEngine) throws -> T) async throws -> T
}

extension CatalogEngineStore {
    public func ping() async throws { try await perform { try $0.ping() } }

    // MARK: projects

    public func createProject(_ p: Project, firstGeneration: Bool) async throws -> Generation? {
        try await perform { try $0.createProject(p, firstGeneration: firstGeneration) }
    }
    public func project(_ name: String) async throws -> Project? { try await perform { try $0.project(name) } }
    public func projects() async throws -> [Project] { try await perform { try $0.projects() } }
    public func projectDatabases(_ name: String) async throws -> [String] { try await perform { try $0.projectDatabases(name) } }
    public func requestProjectDelete(_ name: String) async throws -> ProjectLifecycle.DeleteDecision? {
        try await perform { try $0.requestProjectDelete(name) }
    }
    public func removeProject(_ name: String) async throws { try await perform { try $0.removeProject(name) } }
    public func updateProject(_ name: String, _ change: @escaping @Sendable (inout Project) throws -> Void) async throws -> Project? {
        try await perform { try $0.updateProject(name, change) }
    }
    public func newGeneration(project: String, fingerprint: String?, scheduledAt: Date?) async throws -> Generation? {
        try await perform { try $0.newGeneration(project: project, fingerprint: fingerprint, scheduledAt: scheduledAt) }
    }
    public func generation(_ project: String, _ number: Int) async throws -> Generation? { try await perform { try $0.generation(project, number) } }
    public func generations(_ project: String) async throws -> [Generation] { try await perform { try $0.generations(project) } }
    @discardableResult
    public func apply(_ event: GenerationLifecycle.Event, project: String, generation: Int) async throws -> Generation? {
        try await perform { try $0.apply(event, project: project, generation: generation) }
    }
    public func failGeneration(_ g: Generation, reason: String) async throws { try await perform { try $0.failGeneration(g, reason: reason) } }
    public func removeGeneration(_ g: Generation) async throws { try await perform { try $0.removeGeneration(g) } }
    public func strayGenerationKeys(known: Set<String>) async throws -> [StrayKey] { try await perform { try $0.strayGenerationKeys(known: known) } }
    public func removeStrayKey(_ key: StrayKey) async throws -> Bool { try await perform { try $0.removeStrayKey(key) } }
    public func installationIdentity() async throws -> InstallationIdentity { try await perform { try $0.installationIdentity() } }

    // MARK: databases

    public func createDatabase(_ d: DatabaseRecord) async throws { try await perform { try $0.createDatabase(d) } }
    public func database(_ name: String) async throws -> DatabaseRecord? { try await perform { try $0.database(name) } }
    public func databaseAsRead(_ name: String) async throws -> RecordAsRead<DatabaseRecord> { try await perform { try $0.databaseAsRead(name) } }
    public func databasesAsRead(_ names: [String]) async throws -> [String: RecordAsRead<DatabaseRecord>] {
        try await perform { try $0.databasesAsRead(names) }
    }
    public func removeLegacyOperationStreams() async throws -> Int { try await perform { try $0.removeLegacyOperationStreams() } }
    public func allDatabasesAsRead() async throws -> [String: RecordAsRead<DatabaseRecord>] {
        try await perform { try $0.allDatabasesAsRead() }
    }
    public func databases(owner: String?) async throws -> [DatabaseRecord] { try await perform { try $0.databases(owner: owner) } }
    public func databasePage(owner: String?, project: String?, after: String?, limit: Int?,
                             where keep: @escaping @Sendable (DatabaseRecord) -> Bool) async throws -> DatabasePage {
        try await perform { try $0.databasePage(owner: owner, project: project, after: after, limit: limit, where: keep) }
    }
    public func updateDatabase(_ name: String, _ change: @escaping @Sendable (inout DatabaseRecord) -> Void) async throws -> DatabaseRecord? {
        try await perform { try $0.updateDatabase(name, change) }
    }
    public func transition(_ name: String, _ event: DatabaseLifecycle.Event, conditions: [CatalogCondition]) async throws -> Transition? {
        try await perform { try $0.transition(name, event, conditions: conditions) }
    }
    public func databaseStateCounts() async throws -> [DatabaseRecord.State: Int] { try await perform { try $0.databaseStateCounts() } }
    public func readyDatabases() async throws -> [DatabaseRecord] { try await perform { try $0.readyDatabases() } }
    public func expiredDatabases(now: Date) async throws -> [DatabaseRecord] { try await perform { try $0.expiredDatabases(now: now) } }
    public func repairDatabaseIndexes(checking: [DatabaseRecord]?) async throws -> Bool {
        try await perform { try $0.repairDatabaseIndexes(checking: checking) }
    }

    // MARK: snapshots

    public func snapshot(_ db: String, _ name: String) async throws -> SnapshotRecord? { try await perform { try $0.snapshot(db, name) } }
    public func snapshotAsRead(_ db: String, _ name: String) async throws -> RecordAsRead<SnapshotRecord> {
        try await perform { try $0.snapshotAsRead(db, name) }
    }
    public func snapshots(of db: String) async throws -> [SnapshotRecord] { try await perform { try $0.snapshots(of: db) } }
    public func snapshotUsers(_ db: String, _ name: String) async throws -> [String] { try await perform { try $0.snapshotUsers(db, name) } }
    public func deleteSnapshot(_ db: String, _ name: String) async throws -> SnapshotRecord? { try await perform { try $0.deleteSnapshot(db, name) } }
    public func allSnapshots() async throws -> [(SnapshotRecord, String)] {
        try await perform { try $0.allSnapshots().map { SnapshotAsRead(record: $0.0, raw: $0.1) } }.map { ($0.record, $0.raw) }
    }
    public func removeSnapshotRecord(_ s: SnapshotRecord, ifUnchanged raw: String) async throws -> Bool {
        try await perform { try $0.removeSnapshotRecord(s, ifUnchanged: raw) }
    }
    public func failSnapshot(_ s: SnapshotRecord, raw: String, reason: String) async throws -> Bool {
        try await perform { try $0.failSnapshot(s, raw: raw, reason: reason) }
    }

    // MARK: tokens

    public func createToken(user: String, admin: Bool) async throws -> (token: String, record: TokenRecord) {
        let made = try await perform { try NewToken($0.createToken(user: user, admin: admin)) }
        return (made.token, made.record)
    }
    public func storeToken(hash: String, _ record: TokenRecord) async throws { try await perform { try $0.storeToken(hash: hash, record) } }
    public func token(plaintext: String) async throws -> TokenRecord? { try await perform { try $0.token(plaintext: plaintext) } }
    public func tokens() async throws -> [TokenRecord] { try await perform { try $0.tokens() } }
    public func revokeToken(id: String) async throws { try await perform { try $0.revokeToken(id: id) } }

    // MARK: port leases

    public func claimPort(_ port: Int, for name: String) async throws -> Bool { try await perform { try $0.claimPort(port, for: name) } }
    public func releaseLease(_ port: Int, owner: String, ifDatabaseIs raw: String?) async throws -> Bool {
        try await perform { try $0.releaseLease(port, owner: owner, ifDatabaseIs: raw) }
    }
    public func portOwners() async throws -> [Int: String] { try await perform { try $0.portOwners() } }

    // MARK: routes

    public func route(_ name: String) async throws -> RouteRecord? { try await perform { try $0.route(name) } }
    public func routes(_ names: [String]) async throws -> [String: RouteRecord] { try await perform { try $0.routes(names) } }
    public func routedNames() async throws -> [String] { try await perform { try $0.routedNames() } }
    public func removeRoute(_ name: String, ifDatabaseIs raw: String?) async throws -> Bool {
        try await perform { try $0.removeRoute(name, ifDatabaseIs: raw) }
    }
    public func announceRoute(_ name: String) async throws { try await perform { try $0.announceRoute(name) } }
    public func activities(_ names: [String], now: Date, fresh: Double) async throws -> [String: RouteUsage] {
        try await perform { try $0.activities(names, now: now, fresh: fresh) }
    }
    public func liveRouters() async throws -> [String: Double] { try await perform { try $0.liveRouters() } }
    public func fenceReport(_ name: String, token: String) async throws -> FenceReport { try await perform { try $0.fenceReport(name, token: token) } }
    public func wakeRequests() async throws -> [String] { try await perform { try $0.wakeRequests() } }
    public func clearWakeRequest(_ name: String) async throws { try await perform { try $0.clearWakeRequest(name) } }

    // MARK: teams (#27)

    public func quotaLimits(user: String?) async throws -> (defaults: QuotaLimits, own: QuotaLimits) {
        let pair = try await perform { e -> [QuotaLimits] in let (d, o) = try e.quotaLimits(user: user); return [d, o] }
        return (pair[0], pair[1])
    }
    public func updateQuota(user: String?, _ change: @escaping @Sendable (inout QuotaLimits) -> Void) async throws -> QuotaLimits {
        try await perform { try $0.updateQuota(user: user, change) }
    }
    public func quotaUse(owner: String) async throws -> QuotaUse {
        // Pinning every limit makes it count every resource.
        try await perform { try $0.quotaUse(owner: owner, pinning: QuotaLimits(databases: 0, snapshots: 0, storageBytes: 0, awake: 0)).use }
    }
    public func checkQuota(owner: String, adding change: QuotaChange) async throws {
        try await perform { try $0.checkQuota(owner: owner, adding: change) }
    }
    public func setWakeRefusal(_ name: String, _ text: String) async throws { try await perform { try $0.setWakeRefusal(name, text) } }
    public func appendAudit(_ r: AuditRecord, maxEntries: Int, maxAge: Double) async throws {
        try await perform { try $0.appendAudit(r, maxEntries: maxEntries, maxAge: maxAge) }
    }
    public func auditEntries(_ q: AuditQuery) async throws -> [AuditRecord] { try await perform { try $0.auditEntries(q) } }
    public func usageEvents(owner: String?) async throws -> [UsageEvent] { try await perform { try $0.usageEvents(owner: owner) } }
}

// Sendable carriers for results that are tuples.
private struct SnapshotAsRead: Sendable { var record: SnapshotRecord; var raw: String }
private struct NewToken: Sendable {
    var token: String, record: TokenRecord
    init(_ t: (token: String, record: TokenRecord)) { token = t.token; record = t.record }
}
