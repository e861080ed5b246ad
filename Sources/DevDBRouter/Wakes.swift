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
            redisQueue.async { [self] in
                do throws(RedisError) {
                    _ = try redis.pipeline([["SADD", RouteContract.wakeRequests, name], ["PUBLISH", RouteContract.wakeChannel, name]])
                } catch {
                    log.warning("cannot ask for a wake; waiting for one anyway", ["route": name, "error": error.description])
                }
                // It may have been woken between the lookup and now.
                check(name)
            }
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

    /// A route changed (pub/sub), or every route may have (the subscription came back): re-read
    /// the routes someone waits for.
    func routeChanged(_ name: String) {
        guard waiting.withLock({ $0[name] != nil }) else { return }
        redisQueue.async { [self] in check(name) }
    }

    func recheckAll() {
        for name in waiting.withLock({ Array($0.keys) }) { routeChanged(name) }
    }

    private func check(_ name: String) {
        resolver.invalidate(name)
        resolver.lookup(name, on: redisQueue) { [self] result in
            let outcome: Outcome
            switch result {
            case .found(let r) where r.state == .ready: outcome = .ready(r)
            case .notFound: outcome = .failed("it did not wake up (it failed, or was deleted)")
            default: return  // still asleep or waking, or Redis is away: keep waiting
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
}

/// Sessions per route, reported to Redis every few seconds off the relay's path: a session
/// counts once when it is routed and once when it ends (a mutex each), never per byte.
/// `HSET devdb:activity:<route> <router id> "<open> <last active> <written>"`; routes with open
/// sessions are written every time, so the API can tell busy from idle whichever router serves.
final class RouteActivity: Sendable {
    struct Entry { var open: Int; var lastActive: Double; var dirty: Bool }

    private let redis: RedisClient
    private let log: Log
    private let routerID: String
    private let entries = Mutex<[String: Entry]>([:])
    private let queue = DispatchQueue(label: "devdb.router.activity")
    // Set in start() and cancelled in stop(), both called once from the router's start and drain.
    private nonisolated(unsafe) var timer: DispatchSourceTimer?

    init(redis: RedisClient, log: Log) {
        self.redis = redis
        self.log = log
        routerID = "\(ProcessInfo.processInfo.hostName)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    }

    func opened(_ route: String) {
        let now = Date().timeIntervalSince1970
        entries.withLock { $0[route, default: Entry(open: 0, lastActive: now, dirty: true)].open += 1; $0[route]!.lastActive = now; $0[route]!.dirty = true }
    }

    func closed(_ route: String) {
        let now = Date().timeIntervalSince1970
        entries.withLock { e in
            guard var entry = e[route] else { return }
            entry.open = max(0, entry.open - 1)
            entry.lastActive = now
            entry.dirty = true
            e[route] = entry
        }
    }

    func start(interval: Double) {
        let t = DispatchSource.makeTimerSource(queue: queue)
        t.schedule(deadline: .now() + interval, repeating: interval)
        t.setEventHandler { [self] in flush() }
        t.resume()
        timer = t
    }

    func stop() {
        timer?.cancel()
        timer = nil
        queue.sync { flush() }
    }

    private func flush() {
        let now = Date().timeIntervalSince1970
        let due: [(String, Entry)] = entries.withLock { e in
            let out = e.filter { $0.value.dirty || $0.value.open > 0 }.map { ($0.key, $0.value) }
            for (name, entry) in out {
                if entry.open > 0 { e[name]!.lastActive = now }
                e[name]!.dirty = false
                if entry.open == 0 { e.removeValue(forKey: name) }
            }
            return out
        }
        guard !due.isEmpty else { return }
        var commands: [[String]] = []
        for (name, entry) in due {
            let last = entry.open > 0 ? now : entry.lastActive
            commands.append(["HSET", RouteContract.activityKey(name), routerID, "\(entry.open) \(Int(last)) \(Int(now))"])
            commands.append(["EXPIRE", RouteContract.activityKey(name), "604800"])
        }
        do throws(RedisError) { _ = try redis.pipeline(commands) } catch {
            // Written again next time (open routes always are; closed ones are marked dirty again).
            entries.withLock { e in for (name, entry) in due where e[name] == nil { e[name] = Entry(open: entry.open, lastActive: entry.lastActive, dirty: true) } }
            log.warning("cannot report route activity", ["error": error.description])
        }
    }
}
