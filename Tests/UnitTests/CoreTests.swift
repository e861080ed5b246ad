import Testing
import Foundation
import Synchronization
@testable import DevDBCore
@testable import DevDBRedis
@testable import DevDBRouter

@Suite struct CoreTests {
    @Test func databaseNamesAreDNSLabels() {
        for good in ["a", "kate-pg", "0", String(repeating: "x", count: 63)] { #expect(DatabaseName.isValid(good), "\(good)") }
        for bad in ["", "Kate", "kate_pg", "kate.pg", "ké", String(repeating: "x", count: 64), "a b", "-kate", "kate-", "-"] {
            #expect(!DatabaseName.isValid(bad), "\(bad)")
            #expect(DatabaseName.problem(with: bad) != nil)
        }
    }

    @Test func routeRecordsDecodeStrictly() throws {
        let r = try RouteRecord(fields: ["host": "10.0.0.5", "port": "5432", "state": "ready"])
        #expect(r == RouteRecord(host: "10.0.0.5", port: 5432, state: .ready))
        #expect(try RouteRecord(fields: ["host": "h", "port": "1", "state": "stopped", "tls": "true"]).backendTLS)
        #expect(throws: RouteRecord.DecodeError.missingField("host")) { try RouteRecord(fields: ["port": "1", "state": "ready"]) }
        #expect(throws: RouteRecord.DecodeError.badField("port", "70000")) { try RouteRecord(fields: ["host": "h", "port": "70000", "state": "ready"]) }
        #expect(throws: RouteRecord.DecodeError.badField("state", "up")) { try RouteRecord(fields: ["host": "h", "port": "1", "state": "up"]) }
        #expect(RouteContract.routeKey("kate") == "devdb:route:kate")
        // The fence's fields: a version (0 when absent) and a fence token, both round-trip.
        let fenced = RouteRecord(host: "h", port: 1, state: .hibernated, version: 42, fence: "op7")
        #expect(try RouteRecord(fields: Dictionary(uniqueKeysWithValues: fenced.fields)) == fenced)
        #expect(r.version == 0 && r.fence == nil)
        #expect(throws: RouteRecord.DecodeError.badField("version", "-1")) { try RouteRecord(fields: ["host": "h", "port": "1", "state": "ready", "version": "-1"]) }
    }

    @Test func redisURLs() throws {
        let u = try RedisURL(parsing: "redis://:s3cret@redis.internal:6380/2")
        #expect(u == RedisURL(host: "redis.internal", port: 6380, user: nil, password: "s3cret", database: 2))
        #expect(!u.description.contains("s3cret"))
        #expect(try RedisURL(parsing: "redis://app:pw@h").user == "app")
        #expect(try RedisURL(parsing: "redis://127.0.0.1").port == 6379)
        #expect(try RedisURL(parsing: "redis://[::1]:7000/0").host == "::1")
        #expect(throws: RedisURL.ParseError.self) { try RedisURL(parsing: "http://x") }
        #expect(throws: RedisURL.ParseError.self) { try RedisURL(parsing: "redis://h:port") }
    }

    @Test func environmentFillsOptionsTheCommandLineLeavesOut() {
        let flagged = EnvironmentOptions(prefix: "DEVDB_API_", names: ["hibernate-after"], repeatable: [], flags: ["allow-private-dump-hosts"])
        #expect(flagged.merge(arguments: [], environment: ["DEVDB_API_ALLOW_PRIVATE_DUMP_HOSTS": "true", "DEVDB_API_HIBERNATE_AFTER": "2h"])
                == ["--hibernate-after", "2h", "--allow-private-dump-hosts"])
        #expect(flagged.merge(arguments: [], environment: ["DEVDB_API_ALLOW_PRIVATE_DUMP_HOSTS": "false"]) == [])
        let env = EnvironmentOptions(prefix: "DEVDB_ROUTER_", names: ["listen", "redis", "db-domain"], repeatable: ["listen", "db-domain"])
        #expect(env.variable(for: "db-domain") == "DEVDB_ROUTER_DB_DOMAIN")
        let merged = env.merge(arguments: ["--redis", "redis://cli"],
                               environment: ["DEVDB_ROUTER_REDIS": "redis://env", "DEVDB_ROUTER_LISTEN": "0.0.0.0:5432, [::]:5432",
                                             "DEVDB_ROUTER_DB_DOMAIN": ""])
        #expect(merged == ["--redis", "redis://cli", "--listen", "0.0.0.0:5432", "--listen", "[::]:5432"])
    }

    @Test func sniNamesARouteOnlyUnderAConfiguredDomain() throws {
        var config = RouterConfig()
        config.dbDomains = ["db.devdb.example.com"]
        config.metricsListen = nil
        let redis = RedisClient(url: RedisURL())
        let metrics = RouterMetrics()
        let log = Log(level: .error)
        let resolver = RouteResolver(redis: redis, metrics: metrics, log: log, negativeTTL: 1, refreshAfter: 1)
        let ctx = RouterContext(config: config, log: log, metrics: metrics, resolver: resolver,
                                cancelKeys: CancelKeyRegistry(redis: redis, metrics: metrics, log: log, ttl: 30),
                                serverTLS: nil,
                                wakes: WakeCoordinator(redis: redis, resolver: resolver, metrics: metrics, log: log),
                                activity: RouteActivity(redis: redis, log: log, interval: 5))
        #expect(ctx.routeName(fromSNI: "kate-pg.db.devdb.example.com") == "kate-pg")
        #expect(ctx.routeName(fromSNI: "KATE-PG.DB.DEVDB.EXAMPLE.COM") == "kate-pg")
        #expect(ctx.routeName(fromSNI: "kate-pg.db.devdb.example.com.") == "kate-pg", "a fully qualified name with its trailing dot")
        #expect(ctx.routeName(fromSNI: "a.b.db.devdb.example.com") == nil)
        #expect(ctx.routeName(fromSNI: "db.devdb.example.com") == nil)
        #expect(ctx.routeName(fromSNI: "kate.otherdb.devdb.example.com") == nil)
        #expect(ctx.routeName(fromSNI: "kate.xdb.devdb.example.com") == nil)
    }

    @Test func routerCancelKeysAreRandomAndShapedLikeTheBackends() {
        let backend = BackendKeyShape.make(secretLength: 32)
        let a = CancelKeyRegistry.makeRouterKey(like: backend)
        let b = CancelKeyRegistry.makeRouterKey(like: backend)
        #expect(a.secretKey.count == 32)
        #expect(a != b)
        #expect(a.processID > 0 && a.processID <= 0x7FFF_FFFF)
        #expect(CancelKeyRegistry.makeRouterKey(like: BackendKeyShape.make(secretLength: 4)).secretKey.count == 4)
    }

    @Test func hexRoundTrip() {
        #expect(hex([0, 0xAB, 0xFF]) == "00abff")
        #expect(unhex("00abff") == [0, 0xAB, 0xFF])
        #expect(unhex("0g") == nil)
        #expect(unhex("abc") == nil)
    }

    @Test func prometheusTextHasHelpTypeAndSortedSeries() {
        let m = RouterMetrics()
        m.connection(.routed, route: "b")
        m.connection(.routed, route: "a")
        m.connection(.unknownRoute, route: "zz")
        m.observeHandshake(seconds: 0.003)
        let text = m.render(ready: true)
        #expect(text.contains("# TYPE devdb_router_connections_total counter"))
        let a = text.range(of: "route=\"a\"}")!.lowerBound, b = text.range(of: "route=\"b\"}")!.lowerBound
        #expect(a < b)
        #expect(text.contains("devdb_router_handshake_duration_seconds_bucket{le=\"0.005\"} 1"))
        #expect(text.contains("devdb_router_handshake_duration_seconds_bucket{le=\"0.0025\"} 0"))
        #expect(text.contains("devdb_router_ready 1"))
    }
}

import PostgresWire
enum BackendKeyShape {
    static func make(secretLength: Int) -> BackendKey { BackendKey(processID: 1, secretKey: Array(repeating: 0, count: secretLength)) }
}

@Suite("Backoff and BlockingExecutor")
struct BackoffAndExecutorTests {
    @Test func backoffDoublesToItsCapAndResets() {
        var b = Backoff(initial: 0.1, cap: 0.5)
        #expect([b.next(), b.next(), b.next(), b.next(), b.next()] == [0.1, 0.2, 0.4, 0.5, 0.5])
        b.reset()
        #expect(b.next() == 0.1)
        #expect(b.fits(now: 10, deadline: 10.3))
        #expect(!b.fits(now: 10, deadline: 10.1))
    }

    @Test func executorBoundsHowManyRunAtOnce() async throws {
        let executor = BlockingExecutor(label: "test", width: 3)
        final class Gauge: Sendable { let m = Mutex((now: 0, peak: 0)) }
        let gauge = Gauge()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<12 {
                group.addTask {
                    await executor.run {
                        gauge.m.withLock { $0.now += 1; $0.peak = max($0.peak, $0.now) }
                        usleep(20_000)
                        gauge.m.withLock { $0.now -= 1 }
                    }
                }
            }
        }
        let peak = gauge.m.withLock { $0.peak }
        #expect(peak == 3, "at most `width` bodies run at once, and with 12 queued all 3 slots fill")
    }

    @Test func executorPassesErrorsThrough() async {
        struct Boom: Error {}
        await #expect(throws: Boom.self) { try await BlockingExecutor.io.run { () throws(Boom) -> Int in throw Boom() } }
    }
}
