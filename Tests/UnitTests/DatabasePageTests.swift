import DevDBTestSupport
import Foundation
import Testing
@testable import DevDBCatalog
@testable import DevDBRedis

/// Database listings a page at a time against a real Redis: name order, no gaps or repeats
/// across pages, filters applied before the page is cut, and a page reading only its records.
@Suite struct DatabasePageTests {
    let redisServer: RedisServer
    let catalog: Catalog

    init() throws {
        let dir = try TestPaths.makeTemporaryDirectory("devdb-pages")
        try killLeftoversWhenTestsEnd(under: dir)
        redisServer = try RedisServer(directory: dir)
        catalog = Catalog(redis: RedisPool(url: try RedisURL(parsing: redisServer.url)))
        for p in ["shop", "blog"] { _ = try catalog.createProject(Project(name: p, postgresMajor: 15, dumpUrl: "file:///x.dump", state: .ready)) }
        // 37 databases of three owners across two projects, created out of name order.
        for i in (0..<37).reversed() {
            let owner = ["kate", "omar", "li"][i % 3]
            var d = DatabaseRecord(name: String(format: "db-%02d", i), project: i % 2 == 0 ? "shop" : "blog", owner: owner,
                                   user: "app", password: "pw", database: "app")
            if i % 5 == 0 { d.state = .hibernated }
            try catalog.createDatabase(d)
        }
    }

    func allPages(owner: String? = nil, project: String? = nil, limit: Int, keep: @escaping (DatabaseRecord) -> Bool = { _ in true }) throws -> [[String]] {
        var pages: [[String]] = [], after: String?
        repeat {
            let page = try catalog.databasePage(owner: owner, project: project, after: after, limit: limit, where: keep)
            pages.append(page.records.map(\.name))
            after = page.next
            #expect(pages.count < 100, "pagination ends")
        } while after != nil
        return pages
    }

    @Test func pagesCoverEveryDatabaseOnceInNameOrder() throws {
        let everything = try catalog.databases().map(\.name).sorted()
        #expect(everything.count == 37)
        for limit in [1, 5, 10, 36, 37, 1000] {
            let pages = try allPages(limit: limit)
            #expect(pages.flatMap { $0 } == everything, "limit \(limit)")
            #expect(pages.dropLast().allSatisfy { $0.count == limit }, "every page but the last is full (limit \(limit))")
            #expect(pages.last!.count == (everything.count % limit == 0 ? limit : everything.count % limit) || limit > everything.count)
        }
        // Without a limit: everything, and no next.
        let whole = try catalog.databasePage(owner: nil, project: nil)
        #expect(whole.records.map(\.name) == everything && whole.next == nil)
    }

    @Test func filtersComeBeforeThePageIsCut() throws {
        let kateShop = try catalog.databases().filter { $0.owner == "kate" && $0.project == "shop" }.map(\.name).sorted()
        #expect(!kateShop.isEmpty)
        #expect(try allPages(owner: "kate", project: "shop", limit: 2).flatMap { $0 } == kateShop)
        let asleep = try catalog.databases().filter { $0.state == .hibernated }.map(\.name).sorted()
        let pages = try allPages(limit: 3) { $0.state == .hibernated }
        #expect(pages.flatMap { $0 } == asleep)
        #expect(pages.dropLast().allSatisfy { $0.count == 3 }, "a filtered page is still full")
        #expect(try allPages(project: "blog", limit: 4).flatMap { $0 } == (try catalog.databases().filter { $0.project == "blog" }.map(\.name).sorted()))
    }

    @Test func aPageStartsAfterTheNameGivenEvenIfThatDatabaseIsGone() throws {
        let page = try catalog.databasePage(owner: nil, project: nil, after: "db-10", limit: 3)
        #expect(page.records.map(\.name) == ["db-11", "db-12", "db-13"] && page.next == "db-13")
        let gone = try catalog.databasePage(owner: nil, project: nil, after: "db-10x", limit: 2)
        #expect(gone.records.map(\.name) == ["db-11", "db-12"])
        #expect(try catalog.databasePage(owner: nil, project: nil, after: "db-36", limit: 2).records.isEmpty)
    }
}
