import DevDBCatalog
import DevDBRedis
import DevDBTestSupport
import Foundation
import Testing

/// Database listings a page at a time, against Redis and memory: name order, no gaps or
/// repeats across pages, filters applied before the page is cut, a cursor that outlives its
/// database.
@Suite struct DatabasePageTests {
    /// 37 databases of three owners across two projects, created out of name order.
    func populated(_ kind: StoreKind) async throws -> (any CatalogStore, RedisServer?) {
        let (store, server) = try kind.make()
        for p in ["shop", "blog"] { _ = try await store.createProject(Project(name: p, postgresMajor: 15, dumpUrl: "file:///x.dump", state: .ready), firstGeneration: false) }
        for i in (0..<37).reversed() {
            var d = DatabaseRecord(name: String(format: "db-%02d", i), project: i % 2 == 0 ? "shop" : "blog", owner: ["kate", "omar", "li"][i % 3],
                                   user: "app", password: "pw", database: "app")
            if i % 5 == 0 { d.state = .hibernated }
            try await store.createDatabase(d)
        }
        return (store, server)
    }

    func allPages(_ store: any CatalogStore, owner: String? = nil, project: String? = nil, limit: Int,
                  keep: @escaping @Sendable (DatabaseRecord) -> Bool = { _ in true }) async throws -> [[String]] {
        var pages: [[String]] = [], after: String?
        repeat {
            let page = try await store.databasePage(owner: owner, project: project, after: after, limit: limit, where: keep)
            pages.append(page.records.map(\.name))
            after = page.next
            #expect(pages.count < 100, "pagination ends")
        } while after != nil && pages.count < 100
        return pages
    }

    @Test(arguments: StoreKind.allCases) func pagesCoverEveryDatabaseOnceInNameOrder(kind: StoreKind) async throws {
        let (store, server) = try await populated(kind)
        defer { server?.stop() }
        let everything = try await store.databases(owner: nil).map(\.name).sorted()
        #expect(everything.count == 37)
        for limit in [1, 5, 10, 36, 37, 1000] {
            let pages = try await allPages(store, limit: limit)
            #expect(pages.flatMap { $0 } == everything, "limit \(limit)")
            #expect(pages.dropLast().allSatisfy { $0.count == limit }, "every page but the last is full (limit \(limit))")
        }
        let whole = try await store.databasePage(owner: nil, project: nil, after: nil, limit: nil) { _ in true }
        #expect(whole.records.map(\.name) == everything && whole.next == nil)
    }

    /// Everyone's pages come from the name index; a catalog written before it (the index absent
    /// or short) is listed from the set of names until reconcile rebuilds the index.
    @Test(arguments: StoreKind.allCases) func everyonesPagesWithAndWithoutTheNameIndex(kind: StoreKind) async throws {
        let (store, server) = try await populated(kind)
        defer { server?.stop() }
        let everything = try await store.databases(owner: nil).map(\.name).sorted()
        let asleep = try await store.databases(owner: nil).filter { $0.state == .hibernated }.map(\.name).sorted()
        func drop(_ names: [String]? = nil) async throws {
            let writes: [RedisWrite] = names.map { $0.map { .sortedSetRemove(CatalogKey.databasesByName, $0) } } ?? [.delete([CatalogKey.databasesByName])]
            if let server {
                let redis = try RedisClient(url: try RedisURL(parsing: server.url))
                for w in writes {
                    switch w {
                    case .delete(let keys): _ = try redis.command(["DEL"] + keys)
                    case .sortedSetRemove(let k, let m): _ = try redis.command(["ZREM", k, m])
                    default: break
                    }
                }
            } else { try #require(store as? MemoryCatalogStore).memory.write(writes) }
        }
        for (when, change) in [("with the index", nil), ("without it", Optional([String]?.none)), ("with it short", Optional(Optional(["db-03", "db-20"])))] {
            if let change { try await drop(change) }
            for limit in [1, 7, 36, 100] {
                #expect(try await allPages(store, limit: limit).flatMap { $0 } == everything, "\(when), limit \(limit)")
                #expect(try await allPages(store, limit: limit) { $0.state == .hibernated }.flatMap { $0 } == asleep, "\(when), limit \(limit)")
                // A rare match: a page needs more than one read of names.
                #expect(try await allPages(store, limit: limit) { $0.name.hasSuffix("6") }.flatMap { $0 } == ["db-06", "db-16", "db-26", "db-36"], "\(when), limit \(limit)")
            }
            _ = try await store.repairDatabaseIndexes(checking: nil)
        }
        #expect(try await store.repairDatabaseIndexes(checking: try await store.databases(owner: nil)) == false, "rebuilt: the name index matches")
    }

    @Test(arguments: StoreKind.allCases) func filtersComeBeforeThePageIsCut(kind: StoreKind) async throws {
        let (store, server) = try await populated(kind)
        defer { server?.stop() }
        let all = try await store.databases(owner: nil)
        let kateShop = all.filter { $0.owner == "kate" && $0.project == "shop" }.map(\.name).sorted()
        #expect(!kateShop.isEmpty)
        #expect(try await allPages(store, owner: "kate", project: "shop", limit: 2).flatMap { $0 } == kateShop)
        let asleep = all.filter { $0.state == .hibernated }.map(\.name).sorted()
        let pages = try await allPages(store, limit: 3) { $0.state == .hibernated }
        #expect(pages.flatMap { $0 } == asleep)
        #expect(pages.dropLast().allSatisfy { $0.count == 3 }, "a filtered page is still full")
        #expect(try await allPages(store, project: "blog", limit: 4).flatMap { $0 } == all.filter { $0.project == "blog" }.map(\.name).sorted())
    }

    @Test(arguments: StoreKind.allCases) func aPageStartsAfterTheNameGivenEvenIfThatDatabaseIsGone(kind: StoreKind) async throws {
        let (store, server) = try await populated(kind)
        defer { server?.stop() }
        let page = try await store.databasePage(owner: nil, project: nil, after: "db-10", limit: 3) { _ in true }
        #expect(page.records.map(\.name) == ["db-11", "db-12", "db-13"] && page.next == "db-13")
        let gone = try await store.databasePage(owner: nil, project: nil, after: "db-10x", limit: 2) { _ in true }
        #expect(gone.records.map(\.name) == ["db-11", "db-12"])
        #expect(try await store.databasePage(owner: nil, project: nil, after: "db-36", limit: 2) { _ in true }.records.isEmpty)
    }
}
