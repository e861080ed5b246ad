import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import DevDBRedis
import Logging
import ServiceLifecycle

/// Puts idle databases to sleep behind a fence every router confirms, wakes them when asked, and
/// deletes expired ones: a pass every --reap-interval.
struct Hibernator: Service, ControlPlanePart {
    let context: ControlPlaneContext

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await measurePass("reaper") { await reapExpired() }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(config.reapIntervalSeconds)) }
            } catch { return }
        }
    }

    enum FenceOutcome: Equatable {
        /// Every router whose lease holds confirmed that it has no session on the database.
        case clear
        /// A session was routed to it, a client waits for it, or a router did not answer in time.
        case inUse(String)
        /// The operation is no longer current (a person's stop took it over, a delete, a restart).
        case superseded
    }

    /// The hibernator's stop waits here until the routers answer its fence: the route already
    /// says `hibernated` with the stop's id as its fence, so every router that acknowledges it
    /// routes no new session on an older version of the route and reports the sessions it has
    /// routed to the database (docs/architecture.md, "Sleep never cuts a session").
    func confirmFence(_ name: String, _ op: DatabaseRecord.Operation) async -> FenceOutcome {
        let started = Date()
        var deadline: Date?
        while true {
            guard let d = await currentRecord(name), d.operation?.id == op.id else { return .superseded }
            // A person's stop took it over: it stops now, sessions or not.
            if d.operation?.idle != true { return .clear }
            if d.wakeQueued == true { return .inUse("a client connected while it was going to sleep") }
            if d.deleteQueued == true { return .clear }
            guard let report = try? await catalog.fenceReport(name, token: op.id) else {
                if Task.isCancelled { return .superseded }
                if Date().timeIntervalSince(started) > 60 { return .inUse("the routers' answers could not be read; trying again later") }
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            if report.openSessions > 0 {
                return .inUse("\(report.openSessions) session(s) routed to it since the idle check")
            }
            if report.waitingFor.isEmpty { return .clear }
            // Routers answer at once on the route's announcement, and at the latest at their next
            // activity report; two of their intervals and a little more is plenty.
            let wait = 2 * (report.routers.values.max() ?? 5) + 2
            let limit = deadline ?? started.addingTimeInterval(wait)
            deadline = limit
            if Date() > limit { return .inUse("router(s) \(report.waitingFor.joined(separator: ", ")) did not confirm the fence in \(Int(wait)) s; trying again later") }
            if Task.isCancelled { return .superseded }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Client sessions on the instance other than this check's own (`pg_stat_activity`), asked
    /// with the database's own credentials (the password in psql's environment); nil when it
    /// cannot be asked (then the routers' word stands).
    func sessionsOnInstance(_ d: DatabaseRecord) async -> Int? {
        guard let host = d.backendHost, let port = d.backendPort else { return nil }
        let sql = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        let conninfo = "host=\(host) port=\(port) user=\(d.user) dbname=\(d.database) sslmode=disable connect_timeout=5"
        guard let out = try? await Subprocess.run(["psql", "-X", "-At", "-c", sql, conninfo], environment: ["PGPASSWORD": d.password]),
              out.status == 0, let n = Int(out.output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            logger.info("cannot ask the instance for its sessions; the routers' word stands", metadata: ["devdb.database": "\(d.name)"])
            return nil
        }
        return n
    }

    /// Wakes a database a router (or `devdb db start`) asked for; a wake asked twice wakes once.
    func wake(_ name: String) async {
        do {
            if let t = try await request(name, .wake) {
                if t.applied && t.record?.state != .ready { await audit.automatic("database.wake", name) }  // #27
                // Awake already: say so again, so a router that holds clients for it reads the route.
                if t.record?.state == .ready { try await catalog.announceRoute(name) }
            }
        } catch let refusal as QuotaRefusal {
            await refuseWake(name, refusal)  // #27: over the awake quota; routers answer their clients
        } catch {
            // The request stays in devdb:wake-requests: the reaper's next pass tries again (a wake
            // storm under load can time a Redis call out; dropping the request would strand a client).
            logger.warning("cannot wake a database yet; trying again on the next pass", metadata: ["devdb.database": "\(name)", "devdb.error": "\(error)"])
            return
        }
        _ = try? await catalog.clearWakeRequest(name)
    }

    /// Hibernates ready databases no router has had a session on for their hibernate-after
    /// (per database, or --hibernate-after). A database with an open session never sleeps: this
    /// decision comes from the routers' last reports, and the stop it starts waits for the fence
    /// (`confirmFence`) before it stops anything.
    func hibernateIdle(now: Date = Date()) async {
        guard let databases = try? await catalog.readyDatabases() else { return }
        // A report counts while three of its router's intervals have not passed (at least a minute).
        let fresh = max(60, 3 * ((try? await catalog.liveRouters())?.values.max() ?? 0))
        let candidates = databases.filter { $0.state == .ready && ($0.hibernateAfterSeconds ?? config.hibernateAfterSeconds) > 0 }
        // Read in one pipeline per 500; a database whose activity cannot be read now is left awake.
        let activities = (try? await catalog.activities(candidates.map(\.name), now: now, fresh: fresh)) ?? [:]
        for d in candidates {
            let after = d.hibernateAfterSeconds ?? config.hibernateAfterSeconds
            guard let activity = activities[d.name], activity.open == 0 else { continue }
            let since = [activity.lastActive, d.readyAt, d.createdAt].compactMap { $0 }.max() ?? d.createdAt
            guard now.timeIntervalSince(since) >= after else { continue }
            logger.info("hibernating an idle database", metadata: ["devdb.database": "\(d.name)", "devdb.idle_seconds": "\(Int(now.timeIntervalSince(since)))"])
            if await record(d.name, .hibernate(now: now, idle: true), .bestEffort)?.applied == true { await audit.automatic("database.hibernate", d.name) }  // #27
        }
        // Wake requests a missed message left in the set.
        for name in (try? await catalog.wakeRequests()) ?? [] { await wake(name) }
    }

    func reapExpired() async {
        await hibernateIdle()
        let now = Date()
        guard let databases = try? await catalog.expiredDatabases(now: now) else { return }
        for d in databases where d.state != .deleting && d.deleteQueued != true {
            logger.info("reaping expired database", metadata: ["devdb.database": "\(d.name)"])
            await audit.automatic("database.expire", d.name, outcome: await record(d.name, .delete, .bestEffort)?.applied == true ? "ok" : "failed")  // #27
            count("reaped")
        }
    }
}
