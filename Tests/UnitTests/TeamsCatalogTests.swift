import DevDBTestSupport
import Foundation
import Testing
@testable import DevDBCatalog
@testable import DevDBRedis

/// Quotas, the audit stream and the usage log in the catalog, against a real Redis: a limit holds
/// under many creates at once because it is decided in the create's own transaction.
@Suite struct TeamsCatalogTests {
    let redisServer: RedisServer
    let catalog: CatalogEngine

    init() throws {
        let dir = try TestPaths.makeTemporaryDirectory("devdb-teams-unit")
        try killLeftoversWhenTestsEnd(under: dir)
        redisServer = try RedisServer(directory: dir)
        catalog = RedisCatalogStore(redis: RedisPool(url: try RedisURL(parsing: redisServer.url))).engine
        _ = try catalog.createProject(Project(name: "shop", postgresMajor: 15, dumpUrl: "file:///x"), firstGeneration: true)
    }

    func record(_ name: String, owner: String) -> DatabaseRecord {
        DatabaseRecord(name: name, project: "shop", owner: owner, user: "app", password: "pw", database: "app")
    }

    @Test func sixteenCreatesAtOnceAgainstALimitOfThreeLetExactlyThreeThrough() throws {
        try catalog.setQuota(user: "kate", QuotaLimits(databases: 3))
        let outcomes = Outcomes()
        // Sixteen threads of their own (not concurrentPerform: it runs one per core), released at once.
        let start = DispatchSemaphore(value: 0), done = DispatchGroup()
        let catalog = self.catalog
        for i in 0..<16 {
            done.enter()
            let r = record("k-\(i)", owner: "kate")
            Thread.detachNewThread {
                start.wait()
                let outcome: String
                do { try catalog.createDatabase(r); outcome = "created" } catch let q as QuotaRefusal {
                    outcome = "\(q.resource) \(Int(q.use))/\(Int(q.limit))"
                } catch { outcome = "\(error)" }
                outcomes.add(outcome)
                done.leave()
            }
        }
        for _ in 0..<16 { start.signal() }
        done.wait()
        let all = outcomes.all
        #expect(all.filter { $0 == "created" }.count == 3, "\(all)")
        #expect(all.filter { $0 == "databases 3/3" }.count == 13, "\(all)")
        #expect(try catalog.databases(owner: "kate").count == 3)
        // The usage log has exactly the three creates: written in their transactions.
        #expect(try catalog.usageEvents(owner: "kate").count == 3)
        // Another user is not limited by kate's quota; the default applies to everyone else.
        try catalog.setQuota(user: nil, QuotaLimits(databases: 1, awake: 5))
        try catalog.createDatabase(record("lee-1", owner: "lee"))
        #expect(throws: QuotaRefusal.self) { try catalog.createDatabase(record("lee-2", owner: "lee")) }
        // kate's own limit wins over the default.
        #expect(throws: QuotaRefusal.self) { try catalog.createDatabase(record("k-extra", owner: "kate")) }
        try catalog.setQuota(user: "kate", QuotaLimits(databases: 4))
        try catalog.createDatabase(record("k-extra", owner: "kate"))
        try catalog.setQuota(user: nil, QuotaLimits())
    }

    @Test func theAuditStreamIsBoundedByCountAndAge() throws {
        for i in 0..<8 {
            try catalog.appendAudit(AuditRecord(user: "kate", how: "token", action: "database.create", object: "d\(i)", outcome: "ok"), maxEntries: 5, maxAge: 3600)
        }
        let kept = try catalog.auditEntries(AuditQuery())
        #expect(kept.map(\.object) == ["d7", "d6", "d5", "d4", "d3"], "newest first, the oldest trimmed")
        #expect(try catalog.auditEntries(AuditQuery(object: "d6")).count == 1)
        // An entry older than max-age goes on the next append.
        Thread.sleep(forTimeInterval: 1.2)
        try catalog.appendAudit(AuditRecord(user: "lee", how: "sso", action: "snapshot.create", object: "x@s", outcome: "ok"), maxEntries: 5, maxAge: 1)
        #expect(try catalog.auditEntries(AuditQuery()).map(\.object) == ["x@s"])
        #expect(try catalog.auditEntries(AuditQuery(user: "kate")).isEmpty)
    }
}

/// What the threads of a test report, behind a lock.
final class Outcomes: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ s: String) { lock.withLock { items.append(s) } }
    var all: [String] { lock.withLock { items } }
}
