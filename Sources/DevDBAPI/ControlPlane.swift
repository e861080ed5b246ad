import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import DevDBRedis
import Logging
import ServiceLifecycle
import Synchronization

/// Work the API hands to the background worker. Requests answer at once; the worker carries
/// out the operation the state machine accepted and records its outcome.
enum Job: Sendable {
    case seed(project: String, generation: Int)
    /// The database operation with this id (stale ids are skipped when the job runs).
    case database(String, DatabaseRecord.Operation)
    /// Finish deleting a project marked `deleting`.
    case deleteProject(String)

    /// The same job twice at once (a reconcile that sees work just submitted) runs once.
    var key: String {
        switch self {
        case .seed(let p, let g): return "seed:\(p)/\(g)"
        case .database(let n, let op): return "db:\(n):\(op.id)"
        case .deleteProject(let p): return "project-delete:\(p)"
        }
    }
}

/// A running seed, so a project delete can cancel it and wait until it has stopped.
final class SeedHandle: Sendable {
    let project: String
    private let state = Mutex<(cancelled: Bool, finished: Bool)>((false, false))
    init(project: String) { self.project = project }
    func cancel() { state.withLock { $0.cancelled = true } }
    var isCancelled: Bool { state.withLock { $0.cancelled } }
    func finish() { state.withLock { $0.finished = true } }
    var isFinished: Bool { state.withLock { $0.finished } }
}

/// The lifecycle logic: what the HTTP handlers call and what the worker does. Decisions are
/// the state machines' (DevDBCatalog's `DatabaseLifecycle`, `GenerationLifecycle`,
/// `ProjectLifecycle`); this type does the I/O they ask for.
final class ControlPlane: Sendable {
    let config: APIConfiguration
    let catalog: any CatalogStore
    let provisioner: any Provisioner
    let logger: Logger
    let jobs: AsyncStream<Job>
    private let enqueue: AsyncStream<Job>.Continuation
    let counters = Mutex<[String: Int]>([:])
    /// Keys of jobs running now (protected by the mutex; read by reconcile to find orphaned work).
    let running = Mutex<Set<String>>([])
    let seeds = Mutex<[String: SeedHandle]>([:])
    /// Objects of another installation the last reconcile found (never deleted): `GET /v1/admin/foreign-objects`.
    let foreignObjects = Mutex<[String]>([])

    init(config: APIConfiguration, catalog: any CatalogStore, provisioner: any Provisioner, logger: Logger) {
        self.config = config
        self.catalog = catalog
        self.provisioner = provisioner
        self.logger = logger
        (jobs, enqueue) = AsyncStream.makeStream(of: Job.self)
    }

    func submit(_ job: Job) { enqueue.yield(job) }

    /// The last reconcile and reaper (hibernator, expiry) passes: seconds and Redis round trips of
    /// the whole process meanwhile (other work adds to them; bench/scale measures a quiet API).
    let passes = Mutex<[String: (seconds: Double, roundTrips: Int)]>([:])

    func measurePass(_ name: String, _ body: () async -> Void) async {
        let trips = RedisClient.roundTrips.load(ordering: .relaxed)
        let started = monotonicNow()
        await body()
        let sample = (monotonicNow() - started, RedisClient.roundTrips.load(ordering: .relaxed) - trips)
        passes.withLock { $0[name] = sample }
    }

    func count(_ key: String) { counters.withLock { $0[key, default: 0] += 1 } }

    func perform(_ name: String, _ actions: [DatabaseLifecycle.Action]) {
        for case .run(let op) in actions { submit(.database(name, op)) }
    }

    // MARK: requests

    /// Applies a request to a database (a refusal reaches the client as 409 through the error
    /// middleware); `guards` must still hold when it commits.
    func request(_ name: String, _ event: DatabaseLifecycle.Event, conditions: [CatalogCondition] = []) async throws -> DatabaseRecord? {
        guard let t = try await catalog.transition(name, event, conditions: conditions) else { return nil }
        perform(name, t.actions)
        return t.record
    }

    /// Records a worker's progress or outcome. Outcomes are written even if Redis is away for a
    /// while: retried with backoff until they land or the API shuts down (then the restart resumes).
    @discardableResult
    func record(_ name: String, _ event: DatabaseLifecycle.Event) async -> Transition? {
        let t = await persistently("recording a database outcome", ["devdb.database": "\(name)"]) {
            try await self.catalog.transition(name, event)
        }
        guard let t = t ?? nil else { return nil }
        perform(name, t.actions)
        await removeSnapshotFiles(t.removedSnapshots)
        return t
    }

    /// Runs `body` until it succeeds, retrying with backoff (0.2 s, doubling to 5 s) while Redis or
    /// the platform is away; nil when the API shuts down first (the restart resumes the work).
    func persistently<T: Sendable>(_ what: String, _ metadata: Logger.Metadata = [:], quiet: Bool = false,
                                   _ body: () async throws -> T) async -> T? {
        var backoff = Backoff(initial: 0.2, cap: 5)
        while true {
            do { return try await body() } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { return nil }
                if !quiet { logger.warning("\(what) failed; retrying", metadata: metadata.merging(["devdb.error": "\(error)"]) { $1 }) }
                try? await Task.sleep(nanoseconds: Backoff.nanoseconds(backoff.next()))
            }
        }
    }

    /// Removes the files or VolumeSnapshots of snapshots whose records are gone (reconcile
    /// removes what a crash leaves between the two).
    func removeSnapshotFiles(_ snapshots: [SnapshotRecord]) async {
        for s in snapshots {
            do { try await provisioner.deleteSnapshot(s) } catch {
                logger.warning("cannot remove a snapshot's data yet; reconcile retries", metadata: ["devdb.snapshot": "\(s.reference)", "devdb.error": "\(error)"])
            }
        }
    }

    /// The record with the port its instance listens on, when the provisioner runs instances on
    /// this machine (leased in the catalog first; provisioners never write it).
    func leasePort(_ d: DatabaseRecord) async throws -> DatabaseRecord {
        guard let ports = provisioner as? any LocalPorts else { return d }
        return try await PortLeasing(store: catalog, ports: ports).lease(for: d)
    }

    /// Progress from inside a provisioner step (best effort).
    func progress(_ name: String, _ op: String, phase: String) async {
        _ = try? await catalog.transition(name, .progress(operation: op, state: phase == "starting" ? .starting : nil, phase: phase, generation: nil))
    }

    /// Runs `body` with the synchronous progress callback provisioners take; each report is
    /// written by `write` in order on a child task, all of them before this returns.
    func withProgress<P: Sendable, R: Sendable>(_ write: @escaping @Sendable (P) async -> Void,
                                                _ body: (@escaping @Sendable (P) -> Void) async throws -> R) async throws -> R {
        let (reports, continuation) = AsyncStream.makeStream(of: P.self)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { for await p in reports { await write(p) } }
            defer { continuation.finish() }
            let result = try await body { continuation.yield($0) }
            continuation.finish()
            try await group.waitForAll()
            return result
        }
    }

}

/// One progress report of a seed.
struct SeedProgress: Sendable {
    var phase: String
    var bytes: Int64
}

struct ProvisioningFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
