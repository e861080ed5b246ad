import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Work the API hands to the background worker. Create answers 202 at once; the worker moves
/// the state on.
enum Job: Sendable {
    case seed(project: String, generation: Int)
    case createDatabase(String)
    case resetDatabase(String, latest: Bool)
    case deleteDatabase(String)

    /// The same job twice at once (a start-up recovery that sees work just submitted) runs once.
    var key: String {
        switch self {
        case .seed(let p, let g): return "seed:\(p)/\(g)"
        case .createDatabase(let n): return "create:\(n)"
        case .resetDatabase(let n, _): return "reset:\(n)"
        case .deleteDatabase(let n): return "delete:\(n)"
        }
    }
}

/// The lifecycle logic: what the HTTP handlers call and what the worker does.
final class ControlPlane: Sendable {
    let config: APIConfiguration
    let catalog: Catalog
    let provisioner: any Provisioner
    let logger: Logger
    let jobs: AsyncStream<Job>
    private let enqueue: AsyncStream<Job>.Continuation
    let counters = Mutex<[String: Int]>([:])
    let running = Mutex<Set<String>>([])

    init(config: APIConfiguration, catalog: Catalog, provisioner: any Provisioner, logger: Logger) {
        self.config = config
        self.catalog = catalog
        self.provisioner = provisioner
        self.logger = logger
        (jobs, enqueue) = AsyncStream.makeStream(of: Job.self)
    }

    func submit(_ job: Job) { enqueue.yield(job) }

    func count(_ key: String) { counters.withLock { $0[key, default: 0] += 1 } }

    // MARK: projects

    func createProject(name: String, postgres: Int, dumpUrl: String) async throws -> Project {
        guard postgres == 15 else {
            throw APIError.badRequest("PostgreSQL \(postgres) is not available here", hint: "this installation runs PostgreSQL 15; use --postgres 15")
        }
        do { _ = try DumpFetcher(s3: config.s3).resolve(dumpUrl) } catch {
            throw APIError.badRequest(error.description)
        }
        let project = Project(name: name, postgresMajor: postgres, dumpUrl: dumpUrl)
        try await catalog.run { try $0.createProject(project) }
        let g = try await catalog.run { try $0.newGeneration(project: name) }
        submit(.seed(project: name, generation: g.number))
        return project
    }

    func refreshProject(_ name: String) async throws -> Generation {
        guard try await catalog.run({ try $0.project(name) }) != nil else { throw APIError.notFound("project \"\(name)\"") }
        let g = try await catalog.run { try $0.newGeneration(project: name) }
        submit(.seed(project: name, generation: g.number))
        return g
    }

    func deleteProject(_ name: String) async throws {
        guard try await catalog.run({ try $0.project(name) }) != nil else { throw APIError.notFound("project \"\(name)\"") }
        let users = try await catalog.run { try $0.databases() }.filter { $0.project == name }
        guard users.isEmpty else {
            throw APIError.conflict("project \"\(name)\" still has \(users.count) database(s)",
                                    hint: "delete them first: " + users.map { "devdb db delete \($0.name)" }.joined(separator: "; "))
        }
        for g in try await catalog.run({ try $0.generations(name) }) { try await provisioner.deleteGeneration(g) }
        try await catalog.run { try $0.deleteProject(name) }
    }

    // MARK: seeding

    func seed(project name: String, generation number: Int) async {
        guard let project = try? await catalog.run({ try $0.project(name) }),
              var g = try? await catalog.run({ try $0.generations(name) }).first(where: { $0.number == number }) else { return }
        let started = Date()
        let catalog = self.catalog
        let snapshot = g
        do {
            try await provisioner.seed(project: project, generation: g) { phase, bytes in
                var update = snapshot
                update.phase = phase
                update.bytesFetched = bytes
                update.state = phase == "fetching" ? .fetching : .restoring
                try? catalog.updateGeneration(update)
            }
            g.state = .ready
            g.phase = nil
            g.readyAt = Date()
            g.restoreSeconds = Date().timeIntervalSince(started)
            if let fetched = try? await catalog.run({ try $0.generations(name) }).first(where: { $0.number == number }) {
                g.bytesFetched = fetched.bytesFetched
            }
            try await catalog.run { [g] in try $0.updateGeneration(g) }
            var p = project
            p.state = .ready
            p.reason = nil
            try await catalog.run { [p] in try $0.updateProject(p) }
            logger.info("generation ready", metadata: ["devdb.project": "\(name)", "devdb.generation": "\(number)",
                                                      "devdb.seconds": "\(Int(g.restoreSeconds ?? 0))"])
            count("seed_ok")
            await collectGenerations(name)
        } catch {
            let reason = (error as? CustomStringConvertible)?.description ?? "\(error)"
            g.state = .failed
            g.reason = reason
            try? await catalog.run { [g] in try $0.updateGeneration(g) }
            // The project fails only if it has nothing to clone from.
            let hasReady = ((try? await catalog.run({ try $0.generations(name) })) ?? []).contains { $0.state == .ready }
            if !hasReady {
                var p = project
                p.state = .failed
                p.reason = reason
                try? await catalog.run { [p] in try $0.updateProject(p) }
            }
            logger.warning("restore failed", metadata: ["devdb.project": "\(name)", "devdb.error": "\(reason)"])
            count("seed_failed")
        }
    }

    /// Removes generations that are neither the newest ready one nor used by a database.
    func collectGenerations(_ project: String) async {
        guard let generations = try? await catalog.run({ try $0.generations(project) }),
              let databases = try? await catalog.run({ try $0.databases() }) else { return }
        let used = Set(databases.filter { $0.project == project }.compactMap(\.generation))
        let newest = generations.filter { $0.state == .ready }.map(\.number).max()
        for g in generations where g.number != newest && !used.contains(g.number) && (g.state == .ready || g.state == .failed) {
            try? await provisioner.deleteGeneration(g)
            try? await catalog.run { try $0.removeGeneration(g) }
        }
    }

    /// Waits for the project's newest ready generation (restoring first if there is none).
    func readyGeneration(for project: String, onWait: () async -> Void) async throws -> Generation {
        var waited = false
        while true {
            guard let p = try await catalog.run({ try $0.project(project) }) else {
                throw ProvisioningFailure("project \"\(project)\" was deleted")
            }
            let generations = try await catalog.run { try $0.generations(project) }
            if let g = generations.filter({ $0.state == .ready }).max(by: { $0.number < $1.number }) { return g }
            if p.state == .failed { throw ProvisioningFailure("project \"\(project)\" has no data: \(p.reason ?? "its restore failed")") }
            if !generations.contains(where: { $0.state == .fetching || $0.state == .restoring }) {
                let g = try await catalog.run { try $0.newGeneration(project: project) }
                submit(.seed(project: project, generation: g.number))
            }
            if !waited { await onWait(); waited = true }
            try await Task.sleep(for: .milliseconds(300))
        }
    }

    // MARK: databases

    func update(_ name: String, _ change: @escaping @Sendable (inout DatabaseRecord) -> Void) async throws -> DatabaseRecord? {
        try await catalog.run { c in
            guard var d = try c.database(name) else { return nil }
            change(&d)
            return try c.updateDatabase(d) ? d : nil
        }
    }

    /// Progress from inside a provisioner step: a short blocking write, best effort.
    func updateNow(_ name: String, _ change: (inout DatabaseRecord) -> Void) {
        guard var d = try? catalog.database(name) else { return }
        change(&d)
        _ = try? catalog.updateDatabase(d)
    }

    func createInstance(_ name: String) async {
        guard let d = try? await catalog.run({ try $0.database(name) }) else { return }
        do {
            let g = try await readyGeneration(for: d.project) {
                _ = try? await self.update(name) { $0.state = .restoring; $0.phase = "waiting for the project's restore" }
            }
            _ = try await update(name) { $0.state = .cloning; $0.generation = g.number; $0.phase = "cloning" }
            let info = try await provisioner.create(database: d, from: g) { phase in
                self.updateNow(name) { $0.phase = phase; if phase == "starting" { $0.state = .starting } }
            }
            let ready = try await update(name) {
                $0.state = .ready; $0.phase = nil; $0.reason = nil
                $0.backendHost = info.host; $0.backendPort = info.port; $0.cloneMethod = info.cloneMethod; $0.generation = g.number
                $0.note = info.note
            }
            guard ready != nil else {
                // Deleted while it was being made: take the instance down again.
                var gone = d
                gone.backendPort = info.port
                try? await provisioner.delete(database: gone)
                return
            }
            try await catalog.run { try $0.setRoute(name, RouteRecord(host: info.host, port: info.port, state: .ready)) }
            logger.info("database ready", metadata: ["devdb.database": "\(name)", "devdb.clone": "\(info.cloneMethod)"])
            count("create_ok")
        } catch {
            let reason = (error as? CustomStringConvertible)?.description ?? "\(error)"
            _ = try? await update(name) { $0.state = .failed; $0.reason = reason; $0.phase = nil }
            logger.warning("database failed", metadata: ["devdb.database": "\(name)", "devdb.error": "\(reason)"])
            count("create_failed")
        }
    }

    func resetInstance(_ name: String, latest: Bool) async {
        guard let d = try? await catalog.run({ try $0.database(name) }) else { return }
        do {
            let target: Generation
            if latest {
                target = try await readyGeneration(for: d.project) {}
            } else {
                guard let g = try await catalog.run({ try $0.generations(d.project) }).first(where: { $0.number == d.generation }) else {
                    throw ProvisioningFailure("generation \(d.generation ?? 0) of \(d.project) is gone; use reset --latest")
                }
                target = g
            }
            try await catalog.run { try $0.setRoute(name, RouteRecord(host: d.backendHost ?? "127.0.0.1", port: d.backendPort ?? 0, state: .starting)) }
            let info = try await provisioner.reset(database: d, to: target) { phase in
                self.updateNow(name) { $0.phase = phase }
            }
            _ = try await update(name) {
                $0.state = .ready; $0.phase = nil; $0.reason = nil; $0.generation = target.number; $0.cloneMethod = info.cloneMethod; $0.note = info.note
            }
            try await catalog.run { try $0.setRoute(name, RouteRecord(host: info.host, port: info.port, state: .ready)) }
            count("reset_ok")
            await collectGenerations(d.project)
        } catch {
            let reason = (error as? CustomStringConvertible)?.description ?? "\(error)"
            _ = try? await update(name) { $0.state = .failed; $0.reason = reason; $0.phase = nil }
            try? await catalog.run { try $0.setRoute(name, RouteRecord(host: d.backendHost ?? "127.0.0.1", port: d.backendPort ?? 1, state: .stopped)) }
            count("reset_failed")
        }
    }

    func deleteInstance(_ name: String) async {
        guard let d = try? await catalog.run({ try $0.database(name) }) else { return }
        do {
            try await catalog.run { try $0.deleteRoute(name) }
            try await provisioner.delete(database: d)
            try await catalog.run { try $0.deleteDatabase(d) }
            count("delete_ok")
            await collectGenerations(d.project)
        } catch {
            _ = try? await update(name) { $0.state = .failed; $0.reason = "delete failed: \(error)" }
            count("delete_failed")
        }
    }

    // MARK: startup and housekeeping

    /// Compares the catalog with what runs: removes instances and generations nobody knows,
    /// marks catalogued instances that are gone or unhealthy, and brings back ones that recovered.
    /// Runs after a start and then every reconcile interval.
    @discardableResult
    func reconcile() async throws -> ([DatabaseRecord], RecoveryReport) {
        let databases = try await catalog.run { try $0.databases() }
        var generations: [Generation] = []
        for p in try await catalog.run({ try $0.projects() }) { generations += try await catalog.run { try $0.generations(p.name) } }
        let report = try await provisioner.recover(databases: databases, generations: generations)
        if !report.orphansRemoved.isEmpty {
            logger.warning("removed instances with no catalog entry", metadata: ["devdb.instances": "\(report.orphansRemoved.joined(separator: ","))"])
        }
        if !report.restarted.isEmpty {
            logger.info("restarted instances", metadata: ["devdb.instances": "\(report.restarted.joined(separator: ","))"])
        }
        // Only instances nothing else is working on: create, reset and delete move the state away
        // from ready first, and each change below applies only if it is still ready/unavailable.
        let settled: @Sendable (DatabaseRecord) -> Bool = { $0.state == .ready || $0.state == .unavailable }
        for name in report.missing {
            guard let d = try? await update(name, { if settled($0) { $0.state = .failed; $0.reason = "its instance is gone; run \"devdb db reset \(name)\" or delete it" } }),
                  d.state == .failed else { continue }
            try? await catalog.run { try $0.setRoute(name, RouteRecord(host: d.backendHost ?? "0.0.0.0", port: d.backendPort ?? 1, state: .stopped)) }
        }
        for (name, why) in report.unhealthy {
            guard let d = try? await update(name, { if settled($0) { $0.state = .unavailable; $0.reason = why } }),
                  d.state == .unavailable, let host = d.backendHost, let port = d.backendPort else { continue }
            try? await catalog.run { try $0.setRoute(name, RouteRecord(host: host, port: port, state: .starting)) }
        }
        for name in report.healthy {
            guard let before = try? await catalog.run({ try $0.database(name) }), before.state == .unavailable,
                  let d = try? await update(name, { if $0.state == .unavailable { $0.state = .ready; $0.reason = nil } }),
                  d.state == .ready, let host = d.backendHost, let port = d.backendPort else { continue }
            try? await catalog.run { try $0.setRoute(name, RouteRecord(host: host, port: port, state: .ready)) }
        }
        for var g in report.missingGenerations {
            g.state = .failed
            g.reason = "its snapshot is gone; the next database restores a new generation"
            try? await catalog.run { [g] in try $0.updateGeneration(g) }
        }
        return (databases, report)
    }

    /// After a restart: reconciles, and resumes interrupted work.
    func recover() async throws {
        let (databases, _) = try await reconcile()
        for d in databases {
            switch d.state {
            case .provisioning, .restoring, .cloning, .starting:
                if let port = d.backendPort { _ = try? await catalog.run { try $0.releasePort(port) } }
                submit(.createDatabase(d.name))
            case .deleting: submit(.deleteDatabase(d.name))
            default: break
            }
        }
        for p in try await catalog.run({ try $0.projects() }) {
            for g in try await catalog.run({ try $0.generations(p.name) }) where g.state == .fetching || g.state == .restoring {
                submit(.seed(project: p.name, generation: g.number))
            }
        }
    }

    func reapExpired() async {
        guard let databases = try? await catalog.run({ try $0.databases() }) else { return }
        let now = Date()
        for d in databases where (d.expiresAt.map { $0 < now } ?? false) && d.state != .deleting {
            logger.info("reaping expired database", metadata: ["devdb.database": "\(d.name)"])
            _ = try? await update(d.name) { $0.state = .deleting }
            submit(.deleteDatabase(d.name))
            count("reaped")
        }
    }
}

struct ProvisioningFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Runs jobs as they come, several at once.
struct ProvisioningWorker: Service {
    let plane: ControlPlane

    func run() async throws {
        do { try await plane.recover() } catch {
            // Keep serving: what could not be recovered shows up as failed databases.
            plane.logger.error("recovery after start failed", metadata: ["devdb.error": "\(error)"])
        }
        await withDiscardingTaskGroup { group in
            for await job in plane.jobs.cancelOnGracefulShutdown() {
                group.addTask {
                    guard plane.running.withLock({ $0.insert(job.key).inserted }) else { return }
                    defer { _ = plane.running.withLock { $0.remove(job.key) } }
                    switch job {
                    case .seed(let p, let g): await plane.seed(project: p, generation: g)
                    case .createDatabase(let n): await plane.createInstance(n)
                    case .resetDatabase(let n, let latest): await plane.resetInstance(n, latest: latest)
                    case .deleteDatabase(let n): await plane.deleteInstance(n)
                    }
                }
            }
        }
    }
}

/// Deletes databases past their TTL and reconciles the catalog with what runs.
struct Reaper: Service {
    let plane: ControlPlane

    func run() async throws {
        var lastReconcile = Date()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await plane.reapExpired()
            if Date().timeIntervalSince(lastReconcile) >= plane.config.reconcileIntervalSeconds {
                lastReconcile = Date()
                do { try await plane.reconcile() } catch {
                    plane.logger.warning("reconcile failed", metadata: ["devdb.error": "\(error)"])
                }
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(plane.config.reapIntervalSeconds)) }
            } catch { return }
        }
    }
}
