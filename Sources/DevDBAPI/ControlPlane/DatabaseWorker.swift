import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import DevDBRedis
import Logging
import ServiceLifecycle

/// Carries out the database operations the lifecycle accepted (create, reset, delete, snapshot,
/// stop, start: the jobs of `ControlPlaneContext.databaseJobs`) and records their outcomes.
struct DatabaseWorker: Service, ControlPlanePart {
    let context: ControlPlaneContext

    var seedWorker: SeedWorker { SeedWorker(context: context) }
    var hibernator: Hibernator { Hibernator(context: context) }

    func run() async throws {
        await context.runJobs(context.databaseJobs) { job in
            if case .database(let n, let op) = job { await runDatabase(n, op) }
        }
    }

    /// Runs one accepted operation, unless the record has moved on (a stale or repeated job).
    func runDatabase(_ name: String, _ op: DatabaseRecord.Operation) async {
        guard let d = await currentRecord(name), d.operation?.id == op.id else { return }
        switch op.kind {
        case .create: await createInstance(d, op)
        case .reset: await resetInstance(d, op)
        case .delete: await deleteInstance(d, op)
        case .snapshot: await snapshotInstance(d, op)
        case .stop: await stopInstance(d, op)
        case .start: await startInstance(d, op)
        }
    }

    /// Waits for a snapshot to be ready (an implicit snapshot for a branch is taken meanwhile).
    func readySnapshot(_ reference: String, for name: String) async throws -> SnapshotRecord {
        guard let (db, snap) = SnapshotRecord.parse(reference) else { throw ProvisioningFailure("invalid snapshot reference \(reference)") }
        while true {
            guard let s = try await catalog.snapshot(db, snap) else {
                throw ProvisioningFailure("snapshot \(reference) is gone")
            }
            switch s.state {
            case .ready: return s
            case .failed: throw ProvisioningFailure("snapshot \(reference) failed: \(s.reason ?? "see devdb db snapshots \(db)")")
            case .taking:
                if (try? await catalog.database(name))?.deleteQueued == true { throw ProvisioningFailure("deleted while waiting for snapshot \(reference)") }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    func snapshotInstance(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation) async {
        guard let snap = op.target else { return }
        let record = SnapshotRecord(database: d.name, name: snap, owner: d.owner, project: d.project, generation: d.generation)
        let started = Date()
        do {
            let outcome = try await provisioner.snapshot(database: d, as: record)
            await self.record(d.name, .snapshotTaken(operation: op.id, outcome))
            logger.info("snapshot taken", metadata: ["devdb.snapshot": "\(record.reference)", "devdb.method": "\(outcome.method)",
                                                    "devdb.unavailable_seconds": "\(String(format: "%.2f", outcome.unavailableSeconds))",
                                                    "devdb.seconds": "\(String(format: "%.2f", Date().timeIntervalSince(started)))"])
            count("snapshot_ok")
        } catch {
            let running = (error as? SnapshotFailure)?.instanceRunning ?? false
            let failure = ProvisioningError(error)
            await self.record(d.name, .snapshotFailed(operation: op.id, reason: failure.userMessage, instanceRunning: running))
            logger.warning("snapshot failed", metadata: ["devdb.snapshot": "\(record.reference)", "devdb.error_kind": "\(failure.kind.rawValue)", "devdb.error": "\(failure.detail)"])
            count("snapshot_failed")
        }
    }

    func createInstance(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation) async {
        let name = d.name
        do {
            if let base = d.base {
                // A branch: from its snapshot.
                await record(name, .progress(operation: op.id, state: .cloning, phase: "waiting for snapshot \(base)", generation: nil))
                let s = try await readySnapshot(base, for: name)
                await record(name, .progress(operation: op.id, state: .cloning, phase: "cloning \(base)", generation: s.generation))
                var made = d
                made.postgresMajor = await major(of: .snapshot(s))
                made = try await leasePort(made)
                let info = try await withProgress({ await self.record(name, Self.progress(op.id, phase: $0), .bestEffort) }) { [made] report in
                    try await self.provisioner.create(database: made, from: .snapshot(s), phase: report)
                }
                return await finish(d, op, info: info, generation: s.generation, major: made.postgresMajor)
            }
            let g = try await seedWorker.readyGeneration(for: d.project, stop: {
                (try? await self.catalog.database(name))?.deleteQueued == true ? "deleted while waiting for the project's restore" : nil
            }) {
                await self.record(name, .progress(operation: op.id, state: .restoring, phase: "waiting for the project's restore", generation: nil))
            }
            await record(name, .progress(operation: op.id, state: .cloning, phase: "cloning", generation: g.number))
            var made = d
            made.postgresMajor = g.major
            made = try await leasePort(made)
            let info = try await withProgress({ await self.record(name, Self.progress(op.id, phase: $0), .bestEffort) }) { [made] report in
                try await self.provisioner.create(database: made, from: g, phase: report)
            }
            await finish(d, op, info: info, generation: g.number, major: g.major)
        } catch {
            await fail(d, op, error)
        }
    }

    func resetInstance(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation) async {
        do {
            let target: CloneSource
            if op.latest == true {
                let latest = try await seedWorker.readyGeneration(for: d.project) {}
                let mine = d.postgresMajor ?? 15
                guard d.generation == nil || latest.major == mine else {
                    throw ProvisioningFailure(Self.crossMajorReset(d, from: mine, to: latest))
                }
                target = .generation(latest)
            } else if let snapshot = op.target ?? d.base {
                // To one of its snapshots, or a branch back to the snapshot it was made from.
                target = .snapshot(try await readySnapshot(snapshot, for: d.name))
            } else {
                guard let g = try await catalog.generations(d.project).first(where: { $0.number == d.generation && $0.state == .ready }) else {
                    throw ProvisioningFailure("generation \(d.generation ?? 0) of \(d.project) is gone; use reset --latest")
                }
                target = .generation(g)
            }
            var made = d
            made.postgresMajor = await major(of: target)
            made = try await leasePort(made)
            let info = try await withProgress({ await self.record(d.name, Self.progress(op.id, phase: $0), .bestEffort) }) { [made] report in
                try await self.provisioner.reset(database: made, to: target, phase: report)
            }
            let generation: Int?
            switch target {
            case .generation(let g): generation = g.number
            case .snapshot(let s): generation = s.generation
            }
            await finish(d, op, info: info, generation: generation, major: made.postgresMajor)
        } catch {
            await fail(d, op, error)
        }
    }

    /// Why a reset to the latest generation is refused when that one runs another major.
    static func crossMajorReset(_ d: DatabaseRecord, from: Int, to latest: Generation) -> String {
        "reset --latest would move \(d.name) from PostgreSQL \(from) to \(latest.major) (generation \(latest.number) of \(d.project) was restored into \(latest.major)); a database keeps its major: create a new database for the new data (devdb db create NAME --project \(d.project)), or reset without --latest to its own generation"
    }

    /// A provisioner's phase report as a progress event (its `starting` phase is the state `starting`).
    static func progress(_ op: String, phase: String) -> DatabaseLifecycle.Event {
        .progress(operation: op, state: phase == "starting" ? .starting : nil, phase: phase, generation: nil)
    }

    /// The major a clone source runs: a generation's own, or a snapshot's generation's.
    func major(of source: CloneSource) async -> Int {
        switch source {
        case .generation(let g): return g.major
        case .snapshot(let s):
            if let n = s.generation, let g = try? await catalog.generation(s.project, n) { return g.major }
            return (try? await catalog.database(s.database))??.postgresMajor ?? 15
        }
    }

    func finish(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation, info: InstanceInfo, generation: Int?, major: Int? = nil) async {
        let after = await record(d.name, .succeeded(operation: op.id, .init(host: info.host, port: info.port, cloneMethod: info.cloneMethod,
                                                                               note: info.note, generation: generation, postgresMajor: major)))
        if after?.record?.state == .ready {
            logger.info("database ready", metadata: ["devdb.database": "\(d.name)", "devdb.operation": "\(op.kind.rawValue)", "devdb.clone": "\(info.cloneMethod)"])
            count("\(op.kind.rawValue)_ok")
            await seedWorker.collectGenerations(d.project)
        }
    }

    func fail(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation, _ error: any Error) async {
        let failure = ProvisioningError(error)
        // A failed create or reset leaves no instance behind (the port lease stays with the record).
        if op.kind != .delete { try? await provisioner.removeInstance(database: d) }
        await record(d.name, .failed(operation: op.id, reason: failure.userMessage))
        logger.warning("database operation failed", metadata: ["devdb.database": "\(d.name)", "devdb.operation": "\(op.kind.rawValue)",
                                                              "devdb.error_kind": "\(failure.kind.rawValue)", "devdb.error": "\(failure.detail)"])
        count("\(op.kind.rawValue)_failed")
    }

    func deleteInstance(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation) async {
        do {
            // An accepted delete is carried out: a failure (a file busy, the cluster briefly away)
            // is tried again a few times before the database is marked failed.
            var attempt = 0
            while true {
                do { try await provisioner.delete(database: d); break } catch {
                    attempt += 1
                    if attempt >= 5 || Task.isCancelled { throw error }
                    logger.warning("delete failed; trying again", metadata: ["devdb.database": "\(d.name)", "devdb.error": "\(error)"])
                    try await Task.sleep(for: .seconds(Double(attempt)))
                }
            }
            await record(d.name, .deleted(operation: op.id))
            count("delete_ok")
            await seedWorker.collectGenerations(d.project)
        } catch {
            await fail(d, op, error)
        }
    }

    func stopInstance(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation) async {
        if op.idle == true {
            var outcome = await hibernator.confirmFence(d.name, op)
            // The instance's own word last: a session no router reports (a router whose lease ended
            // while it kept relaying, a client connected to the instance directly) keeps it awake.
            if outcome == .clear, let open = await hibernator.sessionsOnInstance(d), open > 0 {
                outcome = .inUse("\(open) session(s) open on the instance itself")
            }
            switch outcome {
            case .clear: break
            case .superseded: return
            case .inUse(let why):
                await record(d.name, .keptAwake(operation: op.id))
                logger.info("kept awake: \(why)", metadata: ["devdb.database": "\(d.name)"])
                count("hibernate_kept_awake")
                return
            }
        }
        do {
            try await provisioner.stop(database: d)
            await record(d.name, .stopped(operation: op.id, at: Date()))
            logger.info("database hibernated", metadata: ["devdb.database": "\(d.name)"])
            count("hibernate_ok")
        } catch {
            await fail(d, op, error)
        }
    }

    func startInstance(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation) async {
        let started = Date()
        do {
            let info = try await provisioner.start(database: d)
            await record(d.name, .succeeded(operation: op.id, .init(host: info.host, port: info.port, cloneMethod: info.cloneMethod,
                                                                   note: info.note, generation: d.generation)))
            logger.info("database woken", metadata: ["devdb.database": "\(d.name)", "devdb.seconds": "\(String(format: "%.2f", Date().timeIntervalSince(started)))"])
            count("wake_ok")
        } catch {
            await fail(d, op, error)
        }
    }
}
