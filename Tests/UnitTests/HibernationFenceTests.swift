import DevDBTestSupport
import Foundation
import Testing
@testable import DevDBCatalog
@testable import DevDBCore
@testable import DevDBRedis
@testable import DevDBRouter

/// The router's part of the hibernation fence and the API's reading of it, against a real Redis:
/// sessions admitted before an acknowledgement are counted in it, routes read before the fence
/// are refused as stale, leases end and are given up.
@Suite struct HibernationFenceProtocolTests {
    let redisServer: RedisServer
    let redis: RedisClient
    let catalog: CatalogEngine

    init() throws {
        let dir = try TestPaths.makeTemporaryDirectory("devdb-fence-unit")
        try killLeftoversWhenTestsEnd(under: dir)
        redisServer = try RedisServer(directory: dir)
        let url = try RedisURL(parsing: redisServer.url)
        redis = RedisClient(url: url)
        catalog = RedisCatalogStore(redis: RedisPool(url: url)).engine
    }

    func write(_ name: String, _ route: RouteRecord) throws {
        _ = try redis.command(["DEL", RouteContract.routeKey(name)])
        _ = try redis.command(["HSET", RouteContract.routeKey(name)] + route.fields.flatMap { [$0.0, $0.1] })
        if route.fence != nil { _ = try redis.command(["SADD", RouteContract.fences, name]) }
    }

    @Test func anAcknowledgementCountsEverySessionAdmittedBeforeItAndNoStaleRouteIsAdmittedAfter() throws {
        let activity = RouteActivity(redis: RedisClient(url: redis.url), log: Log(level: .error), interval: 1)
        let ready = RouteRecord(host: "127.0.0.1", port: 5000, state: .ready, version: 5)
        // No lease yet: nothing is routed.
        #expect(activity.admit("kate", ready) == .noLease)
        activity.start()
        #expect(activity.admit("kate", ready) == .admitted)
        #expect(activity.admit("kate", ready) == .admitted)
        activity.closed("kate")

        // The API fences the route; the router acknowledges with the one session still open.
        try write("kate", RouteRecord(host: "127.0.0.1", port: 5000, state: .hibernated, version: 6, fence: "op1"))
        activity.routeChanged("kate")
        try waitUntil(timeout: 5, "acknowledgement") {
            (try? catalog.fenceReport("kate", token: "op1").acknowledged[activity.routerID]) == 1
        }
        var report = try catalog.fenceReport("kate", token: "op1")
        #expect(report.routers[activity.routerID] == 1 && report.waitingFor.isEmpty && report.openSessions == 1)
        // Another fence's token is not this one's acknowledgement.
        #expect(try catalog.fenceReport("kate", token: "op2").waitingFor == [activity.routerID])
        // A route read before the fence is stale; one written after it is routed.
        #expect(activity.admit("kate", ready) == .stale)
        #expect(activity.admit("kate", RouteRecord(host: "127.0.0.1", port: 5000, state: .ready, version: 7)) == .admitted)
        // A route store that went back in time (restored from an older copy) is trusted once forgotten.
        activity.forgetFence("kate")
        #expect(activity.admit("kate", ready) == .admitted)
        activity.closed("kate")
        // Other routes are not affected.
        #expect(activity.admit("ben", RouteRecord(host: "127.0.0.1", port: 5001, state: .ready, version: 1)) == .admitted)

        // A fence the router only finds in devdb:fences (its announcement missed) is acknowledged
        // at the next activity report.
        try write("ana", RouteRecord(host: "127.0.0.1", port: 5002, state: .hibernated, version: 9, fence: "op3"))
        try waitUntil(timeout: 5, "acknowledgement from the report") {
            (try? catalog.fenceReport("ana", token: "op3").acknowledged[activity.routerID]) == 0
        }

        // A graceful stop gives the lease up: the API waits for this router no more, and it routes nothing.
        activity.stop()
        report = try catalog.fenceReport("kate", token: "op1")
        #expect(report.routers[activity.routerID] == nil)
        #expect(activity.admit("kate", RouteRecord(host: "127.0.0.1", port: 5000, state: .ready, version: 8)) == .noLease)
    }

    @Test func routersWhoseLeaseEndedAreNotWaitedForAndAreRemoved() throws {
        _ = try redis.command(["HSET", RouteContract.routers, "ghost", "1000 5", "alive", "99999999999999 3"])
        _ = try redis.command(["HSET", RouteContract.fenceAcksKey("kate"), "alive", "op1 0", "ghost", "op1 2"])
        let report = try catalog.fenceReport("kate", token: "op1")
        #expect(report.routers == ["alive": 3])
        #expect(report.acknowledged == ["alive": 0])
        #expect(try redis.command(["HEXISTS", RouteContract.routers, "ghost"]).integer == 0)
    }
}
