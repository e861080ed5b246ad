import DevDBCatalog
import DevDBCore
import DevDBRedis
import DevDBTestSupport
import Foundation
import Testing

/// A store to run the contract against: Redis (a server of its own) or memory.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible {
    case redis, memory
    var testDescription: String { rawValue }

    /// The store, and what keeps its server running until the test ends.
    func make(maxSnapshots: Int = 10) throws -> (any CatalogStore, RedisServer?) {
        switch self {
        case .memory: return (MemoryCatalogStore(maxSnapshotsPerDatabase: maxSnapshots), nil)
        case .redis:
            let dir = try TestPaths.makeTemporaryDirectory("devdb-store-contract")
            try killLeftoversWhenTestsEnd(under: dir)
            let server = try RedisServer(directory: dir)
            let store = RedisCatalogStore(redis: RedisPool(url: try RedisURL(parsing: server.url)), maxSnapshotsPerDatabase: maxSnapshots)
            return (store, server)
        }
    }
}

/// The same assertions against `RedisCatalogStore` and `MemoryCatalogStore`: the in-memory
/// store used by in-process tests means what the Redis one means (guards, atomic transitions,
/// snapshot reference counting, port leases, tokens).
@Suite struct CatalogStoreContractTests {
    let instance = DatabaseLifecycle.Instance(host: "127.0.0.1", port: 7001, cloneMethod: "copy", generation: 1)

    /// A project with a ready generation 1 and a ready database `name` on port 7001.
    func readyDatabase(_ store: any CatalogStore, _ name: String = "kate-pg", port: Int = 7001) async throws -> DatabaseRecord {
        if try await store.project("shop") == nil {
            _ = try await store.createProject(Project(name: "shop", postgresMajor: 15, dumpUrl: "file:///x.dump"))
            try await store.apply(.succeeded(seconds: 1, bytes: 10), project: "shop", generation: 1)
        }
        let d = DatabaseRecord(name: name, project: "shop", owner: "kate", user: "app", password: "pw", database: "app")
        try await store.createDatabase(d)
        var i = instance
        i.port = port
        let t = try await store.transition(name, .succeeded(operation: d.operation!.id, i))
        return try #require(t?.record)
    }

    @Test(arguments: StoreKind.allCases) func projectsAndGenerations(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        let g = try await store.createProject(Project(name: "shop", postgresMajor: 15, dumpUrl: "file:///x.dump"))
        #expect(g?.number == 1)
        await #expect(throws: CatalogError.conflict("project \"shop\" already exists")) {
            _ = try await store.createProject(Project(name: "shop", postgresMajor: 15, dumpUrl: "file:///y.dump"))
        }
        // A seed's outcome moves the project along in the same transaction.
        try await store.apply(.succeeded(seconds: 1, bytes: 10), project: "shop", generation: 1)
        #expect(try await store.project("shop")?.state == .ready)
        #expect(try await store.newGeneration(project: "shop", fingerprint: "f2")?.number == 2)
        #expect(try await store.project("shop")?.dumpFingerprint == "f2")
        #expect(try await store.generations("shop").map(\.number) == [1, 2])
        try await store.removeGeneration(try #require(try await store.generation("shop", 2)))
        #expect(try await store.generations("shop").map(\.number) == [1])

        // A project with a database cannot be deleted; without one it can, and goes entirely.
        _ = try await readyDatabase(store)
        guard case .refuse = try #require(try await store.requestProjectDelete("shop")) else { Issue.record("a project with a database was deleted"); return }
        _ = try await store.transition("kate-pg", .delete)
        let deleting = try await store.transition("kate-pg", .deleted(operation: try #require(try await store.database("kate-pg")?.operation?.id)))
        #expect(deleting?.record == nil)
        guard case .commit = try #require(try await store.requestProjectDelete("shop")) else { Issue.record("an empty project was not deleted"); return }
        #expect(try await store.newGeneration(project: "shop") == nil)
        try await store.removeProject("shop")
        #expect(try await store.projects().isEmpty)
        #expect(try await store.strayGenerationKeys(known: []).isEmpty)
    }

    /// Each finished operation is recorded with its outcome in the transition that ends it,
    /// newest first, at most `OperationHistory.maxEntries`, and goes with the database.
    @Test(arguments: StoreKind.allCases) func finishedOperationsAreKeptBoundedAndGoWithTheDatabase(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        _ = try await readyDatabase(store)
        #expect(try await store.operations(of: "kate-pg", limit: 50).map(\.kind) == [.create])
        _ = try await store.transition("kate-pg", .snapshot(name: "s1"), conditions: [])
        let snap = try #require(try await store.database("kate-pg")?.operation)
        #expect(snap.startedAt != nil)
        _ = try await store.transition("kate-pg", .snapshotFailed(operation: snap.id, reason: "disk full", instanceRunning: true), conditions: [])
        let failed = try #require(try await store.operations(of: "kate-pg", limit: 1).first)
        #expect(failed.kind == .snapshot && failed.outcome == .failed && failed.reason == "disk full" && failed.target == "s1")
        #expect(failed.startedAt == snap.startedAt && failed.finishedAt >= failed.startedAt)
        // Bounded: stop and start over and over keeps the newest 50.
        for _ in 0..<26 {
            _ = try await store.transition("kate-pg", .hibernate(now: Date()), conditions: [])
            let stop = try #require(try await store.database("kate-pg")?.operation)
            _ = try await store.transition("kate-pg", .stopped(operation: stop.id, at: Date()), conditions: [])
            _ = try await store.transition("kate-pg", .wake, conditions: [])
            let start = try #require(try await store.database("kate-pg")?.operation)
            _ = try await store.transition("kate-pg", .succeeded(operation: start.id, instance), conditions: [])
        }
        let all = try await store.operations(of: "kate-pg", limit: 100)
        #expect(all.count == OperationHistory.maxEntries)
        #expect(all.first?.kind == .start && all.first?.outcome == .succeeded && all.dropFirst().first?.kind == .stop)
        #expect(!all.contains { $0.kind == .create }, "the oldest entries go, not the newest")
        // Deleted with the database.
        _ = try await store.transition("kate-pg", .delete, conditions: [])
        _ = try await store.transition("kate-pg", .deleted(operation: try #require(try await store.database("kate-pg")?.operation?.id)), conditions: [])
        #expect(try await store.operations(of: "kate-pg", limit: 50).isEmpty)
    }

    @Test(arguments: StoreKind.allCases) func aTransitionCommitsTheRecordWithItsRoute(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        let d = try await readyDatabase(store)
        #expect(d.state == .ready && d.backendPort == 7001)
        let route = try #require(try await store.route("kate-pg"))
        #expect(route.port == 7001 && route.state == .ready && route.version == d.routeVersion)
        #expect(try await store.routedNames() == ["kate-pg"])
        // A stale outcome is ignored and writes nothing.
        let stale = try await store.transition("kate-pg", .succeeded(operation: "stale", instance))
        #expect(stale?.applied == false)
        // A refusal of the state machine reaches the caller.
        _ = try await store.transition("kate-pg", .reset(latest: false))
        await #expect(throws: DatabaseLifecycle.Refusal.self) { _ = try await store.transition("kate-pg", .snapshot(name: "s1")) }
        #expect(try await store.route("kate-pg") == nil)
        #expect(try await store.transition("nobody", .delete) == nil)
    }

    @Test(arguments: StoreKind.allCases) func snapshotsAreRefusedTypedAndCountedByTheirBranches(kind: StoreKind) async throws {
        let (store, server) = try kind.make(maxSnapshots: 1)
        defer { server?.stop() }
        _ = try await readyDatabase(store)
        let taking = try #require(try await store.transition("kate-pg", .snapshot(name: "s1")))
        #expect(try await store.snapshot("kate-pg", "s1")?.state == .taking)
        await #expect(throws: CatalogRefusal.snapshotBeingTaken(database: "kate-pg", snapshot: "s1")) { _ = try await store.deleteSnapshot("kate-pg", "s1") }
        let op = try #require(taking.record?.operation?.id)
        _ = try await store.transition("kate-pg", .snapshotTaken(operation: op, SnapshotOutcome(method: "copy", sizeBytes: 1, unavailableSeconds: 0)))
        #expect(try await store.snapshot("kate-pg", "s1")?.state == .ready)
        await #expect(throws: CatalogRefusal.snapshotExists(database: "kate-pg", snapshot: "s1")) { _ = try await store.transition("kate-pg", .snapshot(name: "s1")) }
        await #expect(throws: CatalogRefusal.tooManySnapshots(database: "kate-pg", count: 1)) { _ = try await store.transition("kate-pg", .snapshot(name: "s2")) }

        // A branch holds its snapshot: it cannot be deleted, and outlives its database.
        var branch = DatabaseRecord(name: "kate-branch", project: "shop", owner: "kate", user: "app", password: "pw", database: "app")
        branch.base = "kate-pg@s1"
        try await store.createDatabase(branch)
        #expect(try await store.snapshotUsers("kate-pg", "s1") == ["kate-branch"])
        await #expect(throws: CatalogRefusal.snapshotInUse(database: "kate-pg", snapshot: "s1", branches: ["kate-branch"])) {
            _ = try await store.deleteSnapshot("kate-pg", "s1")
        }
        let deleting = try #require(try await store.transition("kate-pg", .delete)?.record?.operation?.id)
        let gone = try #require(try await store.transition("kate-pg", .deleted(operation: deleting)))
        #expect(gone.removedSnapshots.isEmpty)
        #expect(try await store.snapshot("kate-pg", "s1")?.databaseDeleted == true)
        // The last branch gone, the snapshot goes with it.
        let branchCreate = try #require(branch.operation?.id)
        _ = try await store.transition("kate-branch", .failed(operation: branchCreate, reason: "test"))
        let branchDelete = try #require(try await store.transition("kate-branch", .delete)?.record?.operation?.id)
        let last = try #require(try await store.transition("kate-branch", .deleted(operation: branchDelete)))
        #expect(last.removedSnapshots.map(\.reference) == ["kate-pg@s1"])
        #expect(try await store.snapshot("kate-pg", "s1") == nil)
        #expect(try await store.allSnapshots().isEmpty)
    }

    @Test(arguments: StoreKind.allCases) func aConditionThatNoLongerHoldsWritesNothing(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        _ = try await readyDatabase(store)
        let before = try await store.database("kate-pg")
        await #expect(throws: CatalogError.self) {
            _ = try await store.transition("kate-pg", .reset(latest: false), conditions: [.snapshotUnchanged(database: "kate-pg", snapshot: "gone", raw: "{}")])
        }
        #expect(try await store.database("kate-pg") == before)
    }

    @Test(arguments: StoreKind.allCases) func portLeasesBelongToOneDatabase(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        _ = try await store.createProject(Project(name: "shop", postgresMajor: 15, dumpUrl: "file:///x.dump"))
        for n in ["a", "b"] { try await store.createDatabase(DatabaseRecord(name: n, project: "shop", owner: "kate", user: "app", password: "pw", database: "app")) }
        #expect(try await store.claimPort(7100, for: "a"))
        #expect(try await store.claimPort(7100, for: "b") == false)
        #expect(try await store.claimPort(7101, for: "a") == false)  // a keeps the port it has
        #expect(try await store.portOwners() == [7100: "a"])
        #expect(try await store.database("a")?.backendPort == 7100)
        // A lease is released only while its owner is as read.
        let read = try await store.databaseAsRead("a")
        #expect(try await store.releaseLease(7100, owner: "a", ifDatabaseIs: "stale") == false)
        #expect(try await store.releaseLease(7100, owner: "a", ifDatabaseIs: read.raw))
        #expect(try await store.portOwners().isEmpty)
        // Deleting a database ends its lease.
        #expect(try await store.claimPort(7102, for: "b"))
        let created = try #require(try await store.database("b")?.operation?.id)
        _ = try await store.transition("b", .failed(operation: created, reason: "test"))
        let op = try #require(try await store.transition("b", .delete)?.record?.operation?.id)
        _ = try await store.transition("b", .deleted(operation: op))
        #expect(try await store.portOwners().isEmpty)
    }

    @Test(arguments: StoreKind.allCases) func tokensAreStoredOnlyAsHashes(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        let (token, record) = try await store.createToken(user: "kate", admin: false)
        #expect(try await store.token(plaintext: token)?.id == record.id)
        #expect(try await store.token(plaintext: token + "x") == nil)
        #expect(try await store.tokens().map(\.id) == [record.id])
        try await store.revokeToken(id: record.id)
        #expect(try await store.token(plaintext: token) == nil)
        await #expect(throws: CatalogError.notFound("token \(record.id) does not exist")) { try await store.revokeToken(id: record.id) }
    }

    // MARK: indexes over database records (#29)

    /// The state counts, the ready index and the expiry index say what the records say.
    func expectIndexesMatchRecords(_ store: any CatalogStore, _ when: String) async throws {
        let records = try await store.databases()
        var counts: [DatabaseRecord.State: Int] = [:]
        for d in records { counts[d.state, default: 0] += 1 }
        #expect(try await store.databaseStateCounts() == counts, "\(when)")
        #expect(Set(try await store.readyDatabases().map(\.name)) == Set(records.filter { $0.state == .ready }.map(\.name)), "\(when)")
        // False: nothing to rebuild, every index (its raw keys too) is as the records imply.
        #expect(try await store.repairDatabaseIndexes(checking: records) == false, "\(when): the indexes differ from the records")
    }

    /// Removes the index keys, as a catalog written before they existed lacks them.
    func dropIndexes(_ store: any CatalogStore, _ server: RedisServer?) throws {
        let keys = [CatalogKey.databaseStates, CatalogKey.readyDatabases, CatalogKey.databaseExpiry, CatalogKey.databasesByName]
        if let server { _ = try RedisClient(url: try RedisURL(parsing: server.url)).command(["DEL"] + keys) }
        else { try #require(store as? MemoryCatalogStore).memory.write([.delete(keys)]) }
    }

    /// The history streams of an earlier version go (once a start, by reconcile); the history
    /// lists and everything else stay.
    @Test(arguments: StoreKind.allCases) func legacyOperationStreamsAreRemoved(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        _ = try await readyDatabase(store, "a", port: 7001)
        let legacy = ["devdb:database:a:operations", "devdb:database:gone:operations"]
        if let server {
            let redis = try RedisClient(url: try RedisURL(parsing: server.url))
            for k in legacy { _ = try redis.command(["XADD", k, "*", "e", "{}"]) }
        } else {
            try #require(store as? MemoryCatalogStore).memory.write(legacy.map { .streamAdd($0, value: "{}", maxLength: 50, approximate: false) })
        }
        let history = try await store.operations(of: "a", limit: 50)
        #expect(!history.isEmpty)
        #expect(try await store.removeLegacyOperationStreams() == 2)
        #expect(try await store.removeLegacyOperationStreams() == 0)
        #expect(try await store.operations(of: "a", limit: 50) == history)
        #expect(try await store.database("a") != nil)
    }

    /// The passes' reads of many records (the hibernator's ready set, reconcile's whole catalog)
    /// keep what they decoded last time; every change is still seen on the next read.
    @Test(arguments: StoreKind.allCases) func repeatedPassReadsSeeEveryChange(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        _ = try await readyDatabase(store, "a", port: 7001)
        _ = try await readyDatabase(store, "b", port: 7002)
        for round in 1...3 {
            let before: Double? = round == 1 ? nil : Double(round - 1)
            #expect(try await store.readyDatabases().first { $0.name == "a" }?.hibernateAfterSeconds == before)
            let all = try await store.allDatabasesAsRead()
            #expect(all["a"]?.value?.hibernateAfterSeconds == before)
            #expect(all["a"]?.raw == (try await store.databaseAsRead("a").raw), "the text is the record's text now")
            _ = try await store.updateDatabase("a") { $0.hibernateAfterSeconds = Double(round) }
        }
        #expect(try await store.readyDatabases().first { $0.name == "a" }?.hibernateAfterSeconds == 3)
        #expect(try await store.allDatabasesAsRead()["a"]?.value?.hibernateAfterSeconds == 3)
        _ = try await store.transition("a", .hibernate(now: Date()))
        #expect(try await store.readyDatabases().map(\.name) == ["b"])
        #expect(try await store.allDatabasesAsRead()["a"]?.value?.state == .hibernating)
    }

    @Test(arguments: StoreKind.allCases) func indexesMoveWithEveryTransition(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        let now = Date()
        _ = try await readyDatabase(store, "a", port: 7001)
        let b = try await readyDatabase(store, "b", port: 7002)
        try await store.createDatabase(DatabaseRecord(name: "c", project: "shop", owner: "kate", user: "app", password: "pw", database: "app",
                                                      expiresAt: now.addingTimeInterval(-10)))
        try await store.createDatabase(DatabaseRecord(name: "d", project: "shop", owner: "joe", user: "app", password: "pw", database: "app",
                                                      expiresAt: now.addingTimeInterval(3600)))
        #expect(try await store.databaseStateCounts() == [.ready: 2, .provisioning: 2])
        #expect(try await store.readyDatabases().map(\.name).sorted() == ["a", "b"])
        #expect(try await store.expiredDatabases(now: now).map(\.name) == ["c"])
        try await expectIndexesMatchRecords(store, "after creates")

        // A TTL changed or removed moves the database in the expiry index.
        _ = try await store.updateDatabase("d") { $0.expiresAt = now.addingTimeInterval(-1) }
        _ = try await store.updateDatabase("c") { $0.expiresAt = nil }
        #expect(try await store.expiredDatabases(now: now).map(\.name) == ["d"])
        try await expectIndexesMatchRecords(store, "after TTL changes")

        _ = try await store.transition("a", .hibernate(now: now))
        #expect(try await store.readyDatabases().map(\.name) == ["b"])
        try await expectIndexesMatchRecords(store, "after a stop")

        let op = try #require(try await store.transition(b.name, .delete)?.record?.operation?.id)
        _ = try await store.transition(b.name, .deleted(operation: op))
        #expect(try await store.readyDatabases().isEmpty)
        try await expectIndexesMatchRecords(store, "after a delete")
        // A record that goes leaves the expiry index with it.
        let created = try #require(try await store.database("d")?.operation?.id)
        _ = try await store.transition("d", .failed(operation: created, reason: "test"))
        let op2 = try #require(try await store.transition("d", .delete)?.record?.operation?.id)
        _ = try await store.transition("d", .deleted(operation: op2))
        #expect(try await store.database("d") == nil)
        #expect(try await store.expiredDatabases(now: now).isEmpty)
        try await expectIndexesMatchRecords(store, "after deletes")
    }

    @Test(arguments: StoreKind.allCases) func concurrentTransitionsKeepTheCountsExact(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        _ = try await readyDatabase(store, "db-0", port: 7000)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 1..<12 { group.addTask { _ = try await self.readyDatabase(store, "db-\(i)", port: 7000 + i) } }
            try await group.waitForAll()
        }
        try await expectIndexesMatchRecords(store, "after concurrent creates")
        // Each database gets a stop, a delete and a wake at once: whichever wins, the counts follow.
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<12 {
                for event in [DatabaseLifecycle.Event.hibernate(now: Date()), .delete, .wake, .hibernate(now: Date(), idle: true)] {
                    group.addTask { _ = try? await store.transition("db-\(i)", event) }
                }
            }
        }
        #expect(try await store.databaseStateCounts()[.ready] ?? 0 < 12, "no transition landed")
        try await expectIndexesMatchRecords(store, "after concurrent transitions")
    }

    @Test(arguments: StoreKind.allCases) func reconcileRebuildsTheIndexesOfAnOlderCatalog(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        _ = try await readyDatabase(store, "a", port: 7001)
        try await store.createDatabase(DatabaseRecord(name: "c", project: "shop", owner: "kate", user: "app", password: "pw", database: "app",
                                                      expiresAt: Date().addingTimeInterval(-10)))
        try dropIndexes(store, server)
        #expect(try await store.databaseStateCounts().isEmpty)
        #expect(try await store.readyDatabases().isEmpty)
        #expect(try await store.repairDatabaseIndexes(checking: try await store.databases()))
        #expect(try await store.expiredDatabases(now: Date()).map(\.name) == ["c"])
        try await expectIndexesMatchRecords(store, "after the rebuild")
        // Without records to compare with it reads them; nothing differs now, so nothing is written.
        #expect(try await store.repairDatabaseIndexes(checking: nil) == false)
        try dropIndexes(store, server)
        #expect(try await store.repairDatabaseIndexes(checking: nil))
        try await expectIndexesMatchRecords(store, "after the second rebuild")
    }
}
