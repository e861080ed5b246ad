@testable import DevDBCatalog
import DevDBCore
import DevDBRedis
import DevDBTestSupport
import Foundation
import Testing

/// Every guard kind of the transaction engine, round trip through real Redis (and the memory
/// backend, which must agree): when the guard holds the writes are applied, when it does not
/// nothing is written.
@Suite(.serialized) struct GuardScriptTests {
    let server: RedisServer
    let redis: RedisClient
    let backends: [(String, any CatalogBackend)]

    init() throws {
        let dir = try TestPaths.makeTemporaryDirectory("devdb-guards")
        try killLeftoversWhenTestsEnd(under: dir)
        server = try RedisServer(directory: dir)
        let url = try RedisURL(parsing: server.url)
        redis = RedisClient(url: url)
        backends = [("redis", RedisBackend(redis: RedisPool(url: url))), ("memory", MemoryBackend())]
    }

    /// Seeds `backend` with one key of each kind.
    func seed(_ backend: any CatalogBackend) throws {
        #expect(try backend.commit(Transaction(writes: [.set("s", "one"), .hashSet("h", [.init("f", "v")]), .setAdd("set", "a"), .setAdd("set", "b")])))
    }

    /// `guard` holding and `failing` not: the first commit writes `marker`, the second nothing.
    func roundTrip(_ holding: Guard, _ failing: Guard) throws {
        for (name, backend) in backends {
            _ = try redis.command(["FLUSHALL"])
            try seed(backend)
            #expect(try backend.commit(Transaction(guards: [holding], writes: [.set("marker", "applied")])), "\(name): \(holding) should hold")
            #expect(try backend.get("marker") == "applied", "\(name)")
            #expect(try backend.commit(Transaction(guards: [holding, failing], writes: [.set("marker", "again"), .delete(["s"])])) == false,
                    "\(name): \(failing) should fail")
            #expect(try backend.get("marker") == "applied" && backend.get("s") == "one", "\(name): a failed guard wrote")
        }
    }

    @Test func valueGuards() throws {
        try roundTrip(.value("s", "one"), .value("s", "two"))
        try roundTrip(.value("absent", nil), .value("s", nil))
        try roundTrip(.value("s", "one"), .value("absent", "one"))
    }

    @Test func fieldGuards() throws {
        try roundTrip(.field("h", "f", "v"), .field("h", "f", "w"))
        try roundTrip(.field("h", "g", nil), .field("h", "f", nil))
        try roundTrip(.field("h", "f", "v"), .field("h", "g", "v"))
    }

    @Test func cardinalityGuards() throws {
        try roundTrip(.cardinality("set", 2), .cardinality("set", 1))
        try roundTrip(.cardinality("absent", 0), .cardinality("set", 0))
    }

    @Test func existsGuards() throws {
        try roundTrip(.exists("s"), .exists("absent"))
        try roundTrip(.exists("set"), .exists("h2"))
    }

    /// Every write kind leaves the same keys and values in Redis and in memory.
    @Test func everyWriteMeansTheSameInBothBackends() throws {
        _ = try redis.command(["FLUSHALL"])
        let writes: [RedisWrite] = [
            .set("s", "1"), .set("gone", "x"), .delete(["gone"]), .setAdd("set", "a"), .setAdd("set", "b"), .setRemove("set", "a"),
            .setAdd("empty", "a"), .setRemove("empty", "a"), .hashSet("h", [.init("f", "1"), .init("g", "2")]),
            .hashDeleteIfEquals("h", field: "f", value: "1"), .hashDeleteIfEquals("h", field: "g", value: "other"),
            .listAppend("l", "1"), .listAppend("l", "2"), .listAppend("l", "1"), .listRemove("l", "1"),
            .listAppend("k", "1"), .listAppend("k", "2"), .listAppend("k", "3"), .listKeepLast("k", count: 2),
            .publish(channel: "devdb:test", message: "hello"),
        ]
        for (name, backend) in backends {
            #expect(try backend.commit(Transaction(writes: writes)), "\(name)")
            #expect(try backend.get("s") == "1" && backend.get("gone") == nil, "\(name)")
            #expect(try backend.setMembers("set") == ["b"] && backend.setCount("empty") == 0, "\(name)")
            #expect(try backend.hash("h") == ["g": "2"], "\(name)")
            #expect(try backend.list("l") == ["2"], "\(name)")
            #expect(try backend.list("k") == ["2", "3"], "\(name)")
            #expect(try backend.scan("*").sorted() == ["h", "k", "l", "s", "set"], "\(name)")
        }
    }

    /// Redis forgot the script (a restart, SCRIPT FLUSH): it is loaded again and the commit runs once.
    @Test func aForgottenScriptIsLoadedAgain() throws {
        _ = try redis.command(["FLUSHALL"])
        let backend = RedisBackend(redis: RedisPool(url: redis.url))
        #expect(try backend.commit(Transaction(writes: [.listAppend("l", "1")])))
        _ = try redis.command(["SCRIPT", "FLUSH"])
        #expect(try backend.commit(Transaction(writes: [.listAppend("l", "2")])))
        #expect(try backend.list("l") == ["1", "2"])
    }
}
