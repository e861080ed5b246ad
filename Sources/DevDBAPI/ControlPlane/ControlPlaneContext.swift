import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import DevDBRedis
import Logging
import ServiceLifecycle
import Synchronization

/// Work the API hands to its workers (`DatabaseWorker`, `SeedWorker`). Requests answer at once;
/// a worker carries out the operation the state machine accepted and records its outcome.
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

/// The control plane's shared state: its configuration, the catalog, the provisioner, the log,
/// the job queues and what the passes measure. Every service of the control plane works over
/// one context (`ControlPlanePart`); none keeps state of its own. Immutable but for the
/// mutexes (each guards its own value) and the job queues (yielded to from any task).
final class ControlPlaneContext: ControlPlanePart {
    let config: APIConfiguration
    let catalog: any CatalogStore
    let provisioner: any Provisioner
    let logger: Logger
    /// Database operations, for the `DatabaseWorker`.
    let databaseJobs: AsyncStream<Job>
    /// Seeds and project deletes, for the `SeedWorker`.
    let seedJobs: AsyncStream<Job>
    private let enqueueDatabase: AsyncStream<Job>.Continuation
    private let enqueueSeed: AsyncStream<Job>.Continuation
    /// Outcomes by kind (`devdb_api_jobs_total` in `GET /metrics`).
    let counters = Mutex<[String: Int]>([:])
    /// Keys of jobs running now (protected by the mutex; read by reconcile to find orphaned work).
    let running = Mutex<Set<String>>([])
    /// Seeds running now by `project/generation`, so a project delete can cancel them.
    let seeds = Mutex<[String: SeedHandle]>([:])
    /// Objects of another installation the last reconcile found (never deleted): `GET /v1/admin/foreign-objects`.
    let foreignObjects = Mutex<[String]>([])
    /// The last reconcile and reaper (hibernator, expiry) passes: seconds and Redis round trips of
    /// the whole process meanwhile (other work adds to them; bench/scale measures a quiet API).
    let passes = Mutex<[String: (seconds: Double, roundTrips: Int)]>([:])

    var context: ControlPlaneContext { self }

    init(config: APIConfiguration, catalog: any CatalogStore, provisioner: any Provisioner, logger: Logger) {
        self.config = config
        self.catalog = catalog
        self.provisioner = provisioner
        self.logger = logger
        (databaseJobs, enqueueDatabase) = AsyncStream.makeStream(of: Job.self)
        (seedJobs, enqueueSeed) = AsyncStream.makeStream(of: Job.self)
    }

    func submit(_ job: Job) {
        switch job {
        case .database: enqueueDatabase.yield(job)
        case .seed, .deleteProject: enqueueSeed.yield(job)
        }
    }

    /// Runs the jobs of `queue` as they come, several at once; the same job twice at once
    /// (`Job.key`) runs once. Returns on graceful shutdown, once the running jobs have returned.
    func runJobs(_ queue: AsyncStream<Job>, _ run: @escaping @Sendable (Job) async -> Void) async {
        await withDiscardingTaskGroup { group in
            for await job in queue.cancelOnGracefulShutdown() {
                group.addTask {
                    guard self.running.withLock({ $0.insert(job.key).inserted }) else { return }
                    defer { _ = self.running.withLock { $0.remove(job.key) } }
                    await run(job)
                }
            }
        }
    }
}

/// One progress report of a seed.
struct SeedProgress: Sendable {
    var phase: String
    var bytes: Int64
}

/// The control plane's own refusal of a step, in words for users (ProvisioningBoundary.swift).
struct ProvisioningFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
