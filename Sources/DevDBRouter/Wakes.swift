import Dispatch
import DevDBCore
import DevDBNet
import DevDBRedis
import Foundation
import Synchronization

/// Clients of hibernated databases wait here. The first waiter of a route asks the API for a
/// wake through Redis (`SADD devdb:wake-requests` + `PUBLISH devdb:wake`); every waiter is
/// answered when the route's pub/sub message says it changed and a fresh read finds it `ready`
/// (or gone: the wake failed), or when its own timeout passes. No polling of Redis in a loop.
/// Waiters are kept behind a mutex; Redis calls run on the resolver's side, callbacks on each
/// waiter's own queue.
final class WakeCoordinator: Sendable {
    enum Outcome: Sendable { case ready(RouteRecord), failed(String), timedOut }

    struct Waiter {
        let id: UInt64
        let executor: any JobExecutor
        let callback: @Sendable (Outcome) -> Void
    }

    private let redis: RedisClient
    private let resolver: RouteResolver
    private let metrics: RouterMetrics
    private let log: Log
    private let redisQueue = DispatchQueue(label: "devdb.router.wakes")
    /// route -> (when its wake was asked for, its waiters)
    private let waiting = Mutex<[String: (since: Double, waiters: [Waiter])]>([:])
    private let nextID = Atomic<UInt64>(1)

    init(redis: RedisClient, resolver: RouteResolver, metrics: RouterMetrics, log: Log) {
        self.redis = redis
        self.resolver = resolver
        self.metrics = metrics
        self.log = log
    }

    /// Waits for `name` to be woken; `callback` runs once, on `executor`.
    func wait(_ name: String, timeout: Double, on executor: any JobExecutor, callback: @escaping @Sendable (Outcome) -> Void) {
        let id = nextID.add(1, ordering: .relaxed).oldValue
        let first = waiting.withLock { w -> Bool in
            let isFirst = w[name] == nil
            w[name, default: (monotonicSeconds(), [])].waiters.append(Waiter(id: id, executor: executor, callback: callback))
            return isFirst
        }
        if first {
            metrics.wakeRequested()
            log.info("waking a hibernated database", ["route": name])
            redisQueue.async { [self] in askForWake(name, attempt: 0) }
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout) { [self] in
            let expired = waiting.withLock { w -> Waiter? in
                guard var entry = w[name], let i = entry.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                let waiter = entry.waiters.remove(at: i)
                w[name] = entry.waiters.isEmpty ? nil : entry
                return waiter
            }
            if let expired {
                metrics.wakeEnded("timeout", seconds: nil)
                expired.executor.execute { expired.callback(.timedOut) }
            }
        }
    }

    /// On `redisQueue`: asks the API for a wake, again every half second while the ask fails and
    /// clients still wait (a connection Redis closed when it restarted fails once), then reads the
    /// route (it may have been woken between the lookup and now).
    private func askForWake(_ name: String, attempt: Int) {
        guard waiting.withLock({ $0[name] != nil }) else { return }
        do throws(RedisError) {
            _ = try redis.pipeline([["SADD", RouteContract.wakeRequests, name], ["PUBLISH", RouteContract.wakeChannel, name]])
        } catch {
            if attempt == 0 { log.warning("cannot ask for a wake yet; asking again", ["route": name, "error": error.description]) }
            redisQueue.asyncAfter(deadline: .now() + 0.5) { [self] in askForWake(name, attempt: attempt + 1) }
            return
        }
        check(name)
    }

    /// A route changed (pub/sub), or every route may have (the subscription came back): re-read
    /// the routes someone waits for.
    func routeChanged(_ name: String) {
        guard waiting.withLock({ $0[name] != nil }) else { return }
        redisQueue.async { [self] in check(name) }
    }

    func recheckAll() {
        for name in waiting.withLock({ Array($0.keys) }) { routeChanged(name) }
    }

    /// The reason of a wake refusal the API wrote after this route's wake was asked for (an older
    /// one is from an earlier wake: the API answers this one anew).
    private func freshWakeRefusal(_ name: String, _ value: String?) -> String? {
        guard let value, let space = value.firstIndex(of: " "), let at = Double(value[..<space]),
              let since = waiting.withLock({ $0[name]?.since }) else { return nil }
        let askedAt = Date().timeIntervalSince1970 - (monotonicSeconds() - since)
        return at >= askedAt - 1 ? String(value[value.index(after: space)...]) : nil
    }

    /// Runs on `redisQueue`. Reads the route itself, never through the resolver's coalesced lookups: a
    /// lookup in flight since before the route changed would answer with the old route, and the
    /// waiters would wait for a message that has already come.
    private func check(_ name: String) {
        resolver.invalidate(name)
        let fields: [String: String]
        do throws(RedisError) { fields = try redis.command(["HGETALL", RouteContract.routeKey(name)]).fieldMap } catch {
            return  // Redis is away: the subscription's return re-checks every waited-for route
        }
        let outcome: Outcome
        if fields.isEmpty {
            outcome = .failed("it did not wake up (it failed, or was deleted)")
        } else if let r = try? RouteRecord(fields: fields), r.state == .ready {
            outcome = .ready(r)
        } else if let refused = freshWakeRefusal(name, fields[RouteContract.wakeRefusedField]) {
            outcome = .failed(refused)  // over the owner's awake quota (#27): say why now, not at the timeout
        } else {
            return  // still asleep or waking: keep waiting
        }
        guard let entry = waiting.withLock({ $0.removeValue(forKey: name) }) else { return }
        let seconds = monotonicSeconds() - entry.since
        if case .ready = outcome {
            metrics.wakeEnded("woken", seconds: seconds)
            log.info("database woken", ["route": name, "seconds": String(format: "%.2f", seconds), "clients": "\(entry.waiters.count)"])
        } else {
            metrics.wakeEnded("failed", seconds: nil)
        }
        for w in entry.waiters { w.executor.execute { w.callback(outcome) } }
    }
}

/// Sessions per route, reported to Redis every few seconds off the relay's path, and this
/// router's part of the hibernation fence (docs/architecture.md, "Sleep never cuts a session").
///
/// A session counts from the moment the router decides to route it (`admit`, before it connects
/// to the backend) until it ends: a mutex each time, never per byte. Every activity interval the
/// router writes `HSET devdb:activity:<route> <router id> "<open> <last active> <written>"` for
/// routes with open sessions or news, renews its lease in `devdb:routers`, and acknowledges every
/// fenced route (`devdb:fences`); it also acknowledges a fence as soon as the route's change is
/// announced. Acknowledging a fence and admitting a session take the same mutex, so every
/// session is either counted in the acknowledgement or decided after it, when a route read
/// before the fence (a lower version) is refused as stale and looked up again.
final class RouteActivity: Sendable {
    struct Entry { var open: Int; var lastActive: Double; var dirty: Bool }

    /// Everything behind the mutex.
    struct State {
        var entries: [String: Entry] = [:]
        /// Per fenced route: the lowest route version this router may still route on (the
        /// fence's), and when it learned it (monotonic; forgotten a while after the fence ends).
        var fences: [String: (version: Int, learned: Double)] = [:]
        /// Time (`leaseClock`) until which this router's lease in Redis surely holds (0: none).
        var leaseUntil: Double = 0
        /// Announced route changes not read yet (one pipelined read for a burst of them).
        var changed: Set<String> = []
        var everyRouteChanged = false
    }

    /// The lease's clock counts while the machine sleeps (CLOCK_BOOTTIME), as Redis' does: a
    /// router on a laptop that slept does not believe in a lease Redis has ended.
    static func leaseClock() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_BOOTTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Called when the lease is held again after it lapsed, before any session is admitted: the
    /// router drops its cached routes (it may have missed fences meanwhile).
    private let leaseRegained = Mutex<(@Sendable () -> Void)?>(nil)
    func onLeaseRegained(_ body: @escaping @Sendable () -> Void) { leaseRegained.withLock { $0 = body } }

    enum Admission: Equatable {
        case admitted
        /// Read before a fence this router acknowledged: look it up again.
        case stale
        /// This router could not renew its lease: the API may not be waiting for it, so it routes nothing.
        case noLease
    }

    private let redis: RedisClient
    private let log: Log
    let routerID: String
    /// How long a renewed lease lasts in Redis: four activity intervals, at least 30 s, so a
    /// router that crashed holds up hibernation that long at most.
    let leaseSeconds: Double
    private let state = Mutex<State>(State())
    private let queue = DispatchQueue(label: "devdb.router.activity")
    // Set in start() and cancelled in stop(), both called once from the router's start and drain.
    private nonisolated(unsafe) var timer: DispatchSourceTimer?
    let interval: Double

    init(redis: RedisClient, log: Log, interval: Double) {
        self.redis = redis
        self.log = log
        self.interval = interval
        leaseSeconds = max(30, 4 * interval)
        routerID = "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// The router decided to route a session to `route` (ready) as read in `record`.
    func admit(_ route: String, _ record: RouteRecord) -> Admission {
        let now = Self.leaseClock()
        let wall = Date().timeIntervalSince1970
        return state.withLock { s in
            if now >= s.leaseUntil { return .noLease }
            if let fence = s.fences[route], record.version < fence.version { return .stale }
            s.entries[route, default: Entry(open: 0, lastActive: wall, dirty: true)].open += 1
            s.entries[route]!.lastActive = wall
            s.entries[route]!.dirty = true
            return .admitted
        }
    }

    /// Forgets what this router knew of a route's fences (the route store lost it).
    func forgetFence(_ route: String) {
        _ = state.withLock { $0.fences.removeValue(forKey: route) }
    }

    /// An admitted session ended (or never reached the backend).
    func closed(_ route: String) {
        let now = Date().timeIntervalSince1970
        state.withLock { s in
            guard var entry = s.entries[route] else { return }
            entry.open = max(0, entry.open - 1)
            entry.lastActive = now
            entry.dirty = true
            s.entries[route] = entry
        }
    }

    /// Renews the lease (before the first connection is accepted) and reports every interval.
    func start() {
        queue.sync { flush() }
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + interval, repeating: interval)
        t.setEventHandler { [self] in flush() }
        t.resume()
        timer = t
    }

    /// Reports a last time and gives the lease up (the API stops waiting for this router).
    func stop() {
        timer?.cancel()
        timer = nil
        queue.sync {
            flush()
            state.withLock { $0.leaseUntil = 0 }
            do throws(RedisError) { _ = try redis.command(["HDEL", RouteContract.routers, routerID]) } catch {
                log.warning("cannot give up the router's lease; it ends by itself", ["error": error.description])
            }
        }
    }

    /// A route changed (`devdb:routes`): if it carries a fence now, honour and acknowledge it.
    /// nil: every route may have changed (the subscription came back).
    func routeChanged(_ name: String?) {
        let first = state.withLock { s -> Bool in
            let idle = s.changed.isEmpty && !s.everyRouteChanged
            if let name { s.changed.insert(name) } else { s.everyRouteChanged = true }
            return idle
        }
        guard first else { return }
        queue.async { [self] in
            let (names, all) = state.withLock { s -> ([String], Bool) in
                defer { s.changed.removeAll(); s.everyRouteChanged = false }
                return (Array(s.changed), s.everyRouteChanged)
            }
            if all { acknowledgeAllFences() } else { acknowledgeFences(names) }
        }
    }

    private func acknowledgeAllFences() {
        do throws(RedisError) {
            guard case .array(let items) = try redis.command(["SMEMBERS", RouteContract.fences]) else { return }
            let names = items.compactMap(\.string)
            acknowledgeFences(names)
            // Fences that ended a while ago are forgotten (a route read before one is long gone).
            // A set: this runs every interval, and a hibernation wave fences hundreds at once.
            let fenced = Set(names)
            let now = monotonicSeconds()
            state.withLock { s in
                s.fences = s.fences.filter { fenced.contains($0.key) || now - $0.value.learned < 600 }
            }
        } catch {
            log.warning("cannot read the fenced routes; trying again next interval", ["error": error.description])
        }
    }

    /// Reads the routes; for each that carries a fence: from now on no session is routed on an
    /// older version of it, and the sessions routed to it until now are acknowledged.
    private func acknowledgeFences(_ names: [String]) {
        guard !names.isEmpty else { return }
        do throws(RedisError) {
            let replies = try redis.pipeline(names.map { ["HGETALL", RouteContract.routeKey($0)] })
            var writes: [[String]] = []
            let now = monotonicSeconds()
            let wall = Date().timeIntervalSince1970
            for (name, reply) in zip(names, replies) {
                guard case .success(let value) = reply, let route = try? RouteRecord(fields: value.fieldMap),
                      let token = route.fence else { continue }
                let entry: Entry? = state.withLock { s in
                    s.fences[name] = (max(route.version, s.fences[name]?.version ?? 0), now)
                    return s.entries[name]
                }
                let open = entry?.open ?? 0
                writes.append(["HSET", RouteContract.fenceAcksKey(name), routerID, "\(token) \(open)"])
                writes.append(["EXPIRE", RouteContract.fenceAcksKey(name), "3600"])
                // The activity too, so the next idle check sees what the acknowledgement says.
                let last = open > 0 ? wall : entry?.lastActive ?? 0
                if entry != nil {
                    writes.append(["HSET", RouteContract.activityKey(name), routerID, "\(open) \(Int(last)) \(Int(wall))"])
                    writes.append(["EXPIRE", RouteContract.activityKey(name), "604800"])
                }
            }
            guard !writes.isEmpty else { return }
            for case .failure(let error) in try redis.pipeline(writes) { throw error }
        } catch {
            // Acknowledged again next interval (the route stays in devdb:fences while fenced).
            log.warning("cannot acknowledge a hibernation fence yet", ["error": error.description])
        }
    }

    private func renewLease() {
        let sent = Self.leaseClock()
        do throws(RedisError) {
            _ = try redis.eval(RouteContract.renewLeaseScript, keys: [RouteContract.routers], args: [routerID, String(leaseSeconds), String(interval)])
            if state.withLock({ sent >= $0.leaseUntil }) {
                // Held again after a lapse (or at start): the API did not wait for this router
                // meanwhile, so learn every fence and drop cached routes before admitting anyone.
                acknowledgeAllFences()
                leaseRegained.withLock { $0 }?()
            }
            // Ends a second before Redis' copy can, whatever the delay of the answer.
            state.withLock { $0.leaseUntil = sent + leaseSeconds - 1 }
        } catch {
            log.warning("cannot renew the router's lease", ["error": error.description,
                                                           "routes_sessions_until_s": String(format: "%.0f", max(0, state.withLock { $0.leaseUntil } - sent))])
        }
    }

    private func flush() {
        renewLease()
        let now = Date().timeIntervalSince1970
        let due: [(String, Entry)] = state.withLock { s in
            let out = s.entries.filter { $0.value.dirty || $0.value.open > 0 }.map { ($0.key, $0.value) }
            for (name, entry) in out {
                if entry.open > 0 { s.entries[name]!.lastActive = now }
                s.entries[name]!.dirty = false
                if entry.open == 0 { s.entries.removeValue(forKey: name) }
            }
            return out
        }
        if !due.isEmpty {
            var commands: [[String]] = []
            for (name, entry) in due {
                let last = entry.open > 0 ? now : entry.lastActive
                commands.append(["HSET", RouteContract.activityKey(name), routerID, "\(entry.open) \(Int(last)) \(Int(now))"])
                commands.append(["EXPIRE", RouteContract.activityKey(name), "604800"])
            }
            do throws(RedisError) { _ = try redis.pipeline(commands) } catch {
                // Written again next time (open routes always are; closed ones are marked dirty again).
                state.withLock { s in for (name, entry) in due where s.entries[name] == nil { s.entries[name] = Entry(open: entry.open, lastActive: entry.lastActive, dirty: true) } }
                log.warning("cannot report route activity", ["error": error.description])
            }
        }
        acknowledgeAllFences()
    }
}
