import DevDBNet
@testable import DevDBRouter
import DevDBCore
import DevDBTestSupport
import Foundation
import Testing

/// The router's default event-loop count: one per CPU the process can keep busy, so a pod limited
/// to 2 CPUs on a big node does not run a loop per node core (taking turns on its quota).
@Suite struct UsableCPUsTests {
    @Test func cgroupQuotasRoundUpToWholeCPUs() {
        #expect(UsableCPUs.quota(cpuMax: "max 100000\n") == nil)
        #expect(UsableCPUs.quota(cpuMax: "200000 100000\n") == 2)
        #expect(UsableCPUs.quota(cpuMax: "150000 100000") == 2)
        #expect(UsableCPUs.quota(cpuMax: "50000 100000") == 1)
        #expect(UsableCPUs.quota(cpuMax: "-1 100000") == nil)  // cgroup v1's "no quota"
        #expect(UsableCPUs.quota(cpuMax: "") == nil)
        #expect(UsableCPUs.quota(cpuMax: "garbage") == nil)
    }

    @Test func theAffinityMaskLimitsTheCount() throws {
        let online = sysconf(Int32(_SC_NPROCESSORS_ONLN))
        #expect(UsableCPUs.count() >= 1 && UsableCPUs.count() <= online)
        guard online > 1 else { return }  // one CPU: nothing to narrow
        // Narrow this thread's mask with taskset (what `taskset -c 0 devdb-router` does to the
        // process), count on the same thread, and give the thread its CPUs back.
        let tid = try #require(try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self").split(separator: "/").last)
        try #require(try run(["taskset", "-pc", "0", String(tid)], check: false).status == 0)
        defer { _ = try? run(["taskset", "-pc", "0-\(online - 1)", String(tid)], check: false) }
        #expect(UsableCPUs.count() == 1)
    }
}

/// The default loop count built on `UsableCPUs`: one loop on small machines (measured: a second
/// loop on two shared cores costs CPU per transaction and buys no TPS), one per CPU above.
@Suite struct DefaultEventLoopsTests {
    @Test func oneLoopUpToTwoUsableCPUsThenOnePerCPU() {
        #expect(Router.defaultEventLoops(usableCPUs: 1) == 1)
        #expect(Router.defaultEventLoops(usableCPUs: 2) == 1)
        #expect(Router.defaultEventLoops(usableCPUs: 3) == 3)
        #expect(Router.defaultEventLoops(usableCPUs: 8) == 8)
    }
}

/// The route cache's packed entry gives back the route it was made from, and its age.
@Suite struct RouteCacheEntryTests {
    @Test func aPackedEntryKeepsEveryFieldOfTheRoute() {
        let routes = [RouteRecord(host: "127.0.0.1", port: 5432, state: .ready),
                      RouteRecord(host: "db-kate-feature-login.devdb.svc.cluster.local", port: 65535, state: .hibernated,
                                  backendTLS: true, version: 1 << 40, fence: "f-123")]
        for route in routes { #expect(RouteResolver.Entry(route, fetchedAt: 100).route == route) }
        #expect(RouteResolver.Entry(nil, fetchedAt: 100).route == nil)
        #expect(MemoryLayout<RouteResolver.Entry>.size <= 48)
        let entry = RouteResolver.Entry(routes[0], fetchedAt: 1_000_000)
        #expect(abs(entry.age(now: 1_000_006.05) - 6) < 0.2)
    }
}
