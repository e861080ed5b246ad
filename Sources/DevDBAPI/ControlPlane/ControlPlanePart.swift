import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import DevDBRedis
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// A part of the control plane over the shared `ControlPlaneContext`. The context's members read
/// as the part's own (forwarded below), and this extension holds the I/O every part shares: the
/// two ways into a database's lifecycle (`request`, `record`), retries, progress, port leases.
protocol ControlPlanePart: Sendable {
    var context: ControlPlaneContext { get }
}

extension ControlPlanePart {
    var config: APIConfiguration { context.config }
    var catalog: any CatalogStore { context.catalog }
    var provisioner: any Provisioner { context.provisioner }
    var logger: Logger { context.logger }

    func submit(_ job: Job) { context.submit(job) }

    /// Runs one pass, keeping its time and Redis round trips in `passes` (`GET /metrics`).
    func measurePass(_ name: String, _ body: () async -> Void) async {
        let trips = RedisClient.roundTrips.load(ordering: .relaxed)
        let started = monotonicNow()
        await body()
        let sample = (monotonicNow() - started, RedisClient.roundTrips.load(ordering: .relaxed) - trips)
        context.passes.withLock { $0[name] = sample }
    }

    func count(_ key: String) { context.counters.withLock { $0[key, default: 0] += 1 } }

    func perform(_ name: String, _ actions: [DatabaseLifecycle.Action]) {
        for case .run(let op) in actions { submit(.database(name, op)) }
    }

    // MARK: the two ways into a database's lifecycle

    /// A user's request, through a controller, the console or a router's wake: applied to the
    /// database's lifecycle and the work it accepts submitted. A refusal is thrown and reaches the
    /// client (409 through the error middleware; a quota's 403); `conditions` must still hold when
    /// it commits. Nil when there is no such database.
    @discardableResult
    func request(_ name: String, _ event: DatabaseLifecycle.Event, conditions: [CatalogCondition] = []) async throws -> Transition? {
        guard let t = try await catalog.transition(name, event, conditions: conditions) else { return nil }
        perform(name, t.actions)
        return t
    }

    /// What the control plane's own work reports: a worker's outcome or progress, or what a pass
    /// (reconcile, hibernation, expiry) found; `persistence` says how hard it is written. Never
    /// throws: an event the lifecycle ignores comes back with `applied` false; a best-effort one
    /// that failed or was refused, as nil. The work it accepts is submitted and the data of the
    /// snapshots it removed is removed.
    @discardableResult
    func record(_ name: String, _ event: DatabaseLifecycle.Event, _ persistence: RecordPersistence = .untilWritten) async -> Transition? {
        let t: Transition??
        switch persistence {
        case .untilWritten:
            t = await persistently("recording a database outcome", ["devdb.database": "\(name)"]) {
                try await self.catalog.transition(name, event)
            }
        case .bestEffort:
            t = try? await catalog.transition(name, event)
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

    /// The record, reading through Redis blips.
    func currentRecord(_ name: String) async -> DatabaseRecord? {
        await persistently("reading a database", quiet: true) { try await self.catalog.database(name) } ?? nil
    }

    // MARK: dumps

    var fetcher: DumpFetcher { DumpFetcher(s3: config.s3, allowPrivateHosts: config.allowPrivateDumpHosts) }

    /// The dump's fingerprint now, or nil when it cannot be had (logged; the fetch says why later).
    func fingerprint(_ project: Project) async -> String? {
        let fetcher = self.fetcher
        let url = project.dumpUrl
        let result = await BlockingExecutor.processes.run { Result { () throws(DumpError) -> String in try fetcher.fingerprint(url) } }
        switch result {
        case .success(let f): return f
        case .failure(let e):
            logger.warning("cannot check the dump for changes", metadata: ["devdb.project": "\(project.name)", "devdb.error": "\(e)"])
            return nil
        }
    }

    /// The dump's format and source major from its first MiB, or nil when it cannot be read now
    /// (the seed's fetch reports why). A file that is not a dump is a `DumpError.notADump`.
    /// Cancelling the task aborts the fetch.
    func inspectDump(_ url: String) async throws(DumpError) -> DumpInfo? {
        switch await inspectDumpExplained(url) {
        case .success(let info): return info
        case .failure(let e):
            if case .notADump = e { throw e }
            return nil
        }
    }

    /// The dump's header, or why it cannot be read now.
    func inspectDumpExplained(_ url: String) async -> Result<DumpInfo, DumpError> {
        let fetcher = self.fetcher
        let cancelled = CancelFlag()
        let result: Result<DumpInfo, DumpError> = await withTaskCancellationHandler {
            await BlockingExecutor.processes.run { Result { () throws(DumpError) -> DumpInfo in try fetcher.inspect(url, cancelled: { cancelled.isSet }) } }
        } onCancel: { cancelled.set() }
        if case .failure(let e) = result, !(e.isNotADump) {
            logger.info("cannot read the dump's header yet", metadata: ["devdb.url": "\(url)", "devdb.error": "\(e)"])
        }
        return result
    }

}

/// How a `record` is written.
enum RecordPersistence: Sendable {
    /// An outcome: written even if Redis is away for a while, retried with backoff until it
    /// lands or the API shuts down (then the restart resumes the work).
    case untilWritten
    /// Progress, or what a pass observed and its next pass observes again (reconcile,
    /// hibernation, expiry): tried once; a failure or refusal is dropped.
    case bestEffort
}
