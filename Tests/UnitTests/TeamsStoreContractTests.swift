import DevDBCatalog
import DevDBCore
import Foundation
import Testing

/// Teams (#27) in the store contract: the stream writes (`streamAdd` with trimming,
/// `streamTrimBefore`) and the quota guards mean the same in Redis and in memory.
extension CatalogStoreContractTests {
    @Test(arguments: StoreKind.allCases) func theAuditStreamKeepsTheNewestAndDropsTheOld(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        for i in 0..<7 {
            try await store.appendAudit(AuditRecord(user: "kate", how: "token", action: "database.create", object: "d\(i)", outcome: "ok"),
                                        maxEntries: 5, maxAge: 3600)
        }
        let kept = try await store.auditEntries(AuditQuery())
        #expect(kept.map(\.object) == ["d6", "d5", "d4", "d3", "d2"], "at most 5, newest first")
        #expect(kept.allSatisfy { $0.id != nil })
        #expect(try await store.auditEntries(AuditQuery(object: "d6", limit: 1)).count == 1)
        #expect(try await store.auditEntries(AuditQuery(limit: 2)).map(\.object) == ["d6", "d5"])
        // Entries older than maxAge go on the next append.
        try await Task.sleep(nanoseconds: 30_000_000)
        try await store.appendAudit(AuditRecord(user: "lee", how: "sso", action: "snapshot.create", object: "x@s", outcome: "ok"),
                                    maxEntries: 5, maxAge: 0.02)
        #expect(try await store.auditEntries(AuditQuery()).map(\.object) == ["x@s"])
    }

    @Test(arguments: StoreKind.allCases) func quotasAreDecidedInTheTransactionAndUsageIsLogged(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        _ = try await readyDatabase(store, "kate-a")
        #expect(try await store.quotaUse(owner: "kate").databases == 1)
        let set = try await store.updateQuota(user: "kate") { $0.databases = 1 }
        #expect(set == QuotaLimits(databases: 1))
        #expect(try await store.quotaLimits(user: "kate").own == QuotaLimits(databases: 1))
        let second = DatabaseRecord(name: "kate-b", project: "shop", owner: "kate", user: "app", password: "pw", database: "app")
        await #expect(throws: QuotaRefusal.self) { try await store.createDatabase(second) }
        await #expect(throws: QuotaRefusal.self) { try await store.checkQuota(owner: "kate", adding: QuotaChange(databases: 1)) }
        #expect(try await store.database("kate-b") == nil)
        // Raised: the create goes through. Emptied limits remove the key.
        _ = try await store.updateQuota(user: "kate") { $0.databases = nil }
        try await store.createDatabase(second)
        #expect(try await store.quotaLimits(user: "kate").own.isEmpty)
        // The usage log has the two creates and the first one's ready transition... each with its owner.
        let events = try await store.usageEvents(owner: "kate")
        #expect(events.map(\.database).filter { $0 == "kate-b" }.count == 1, "\(events)")
        #expect(events.first?.database == "kate-a" && events.first?.phase == .awake)
        #expect(try await store.usageEvents(owner: "lee").isEmpty)
    }

    @Test(arguments: StoreKind.allCases) func aRefusedWakeIsMarkedOnlyOnAnExistingRoute(kind: StoreKind) async throws {
        let (store, server) = try kind.make()
        defer { server?.stop() }
        _ = try await readyDatabase(store, "kate-a")
        let before = try await store.route("kate-a")
        #expect(before != nil)
        try await store.setWakeRefusal("kate-a", "1.000 could not be woken")
        try await store.setWakeRefusal("nobody", "1.000 could not be woken")
        #expect(try await store.route("nobody") == nil, "no route is made for a database without one")
        #expect(try await store.route("kate-a") != nil)
    }
}
