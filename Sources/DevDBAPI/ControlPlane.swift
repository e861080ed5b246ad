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
    let catalog: Catalog
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

    init(config: APIConfiguration, catalog: Catalog, provisioner: any Provisioner, logger: Logger) {
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
    func request(_ name: String, _ event: DatabaseLifecycle.Event, guards: [Catalog.Guard] = []) async throws -> DatabaseRecord? {
        guard let t = try await catalog.run({ try $0.transition(name, event, guards: guards) }) else { return nil }
        perform(name, t.actions)
        return t.record
    }

    /// Records a worker's progress or outcome. Outcomes are written even if Redis is away for a
    /// while: retried with backoff until they land or the API shuts down (then the restart resumes).
    @discardableResult
    func record(_ name: String, _ event: DatabaseLifecycle.Event) async -> Catalog.Transition? {
        let t = await persistently("recording a database outcome", ["devdb.database": "\(name)"]) {
            try await self.catalog.run { try $0.transition(name, event) }
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
        var delay = 0.2
        while true {
            do { return try await body() } catch {
                if Task.isCancelled || Task.isShuttingDownGracefully { return nil }
                if !quiet { logger.warning("\(what) failed; retrying", metadata: metadata.merging(["devdb.error": "\(error)"]) { $1 }) }
                try? await Task.sleep(for: .seconds(delay))
                delay = min(delay * 2, 5)
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

    /// Progress from inside a provisioner step: a short blocking write, best effort.
    func progressNow(_ name: String, _ op: String, state: DatabaseRecord.State? = nil, phase: String?) {
        _ = try? catalog.transition(name, .progress(operation: op, state: state, phase: phase, generation: nil))
    }

    // MARK: projects

    var fetcher: DumpFetcher { DumpFetcher(s3: config.s3, allowPrivateHosts: config.allowPrivateDumpHosts) }

    /// The dump's fingerprint now, or nil when it cannot be had (logged; the fetch says why later).
    func fingerprint(_ project: Project) async -> String? {
        let fetcher = self.fetcher
        let result: Result<String, DumpError> = await withCheckedContinuation { cont in
            DispatchQueue.global().async { cont.resume(returning: Result { () throws(DumpError) -> String in try fetcher.fingerprint(project.dumpUrl) }) }
        }
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
            await withCheckedContinuation { cont in
                DispatchQueue.global().async {
                    cont.resume(returning: Result { () throws(DumpError) -> DumpInfo in try fetcher.inspect(url, cancelled: { cancelled.isSet }) })
                }
            }
        } onCancel: { cancelled.set() }
        if case .failure(let e) = result, !(e.isNotADump) {
            logger.info("cannot read the dump's header yet", metadata: ["devdb.url": "\(url)", "devdb.error": "\(e)"])
        }
        return result
    }

    /// Creates a project. Its PostgreSQL major is `explicitMajor` or the dump's own (read from the
    /// dump's header); a major older than the dump's, or one this installation cannot run, is refused.
    func createProject(_ settings: Project, explicitMajor: Int? = nil) async throws -> Project {
        do { try fetcher.check(settings.dumpUrl) } catch {
            throw APIError.badRequest(error.description, hint: error.hint)
        }
        // What the dump says about its major. One that is no dump at all is accepted here and its
        // generation fails, saying what the file is (as a dump that cannot be fetched does).
        let inspected = await inspectDumpExplained(settings.dumpUrl)
        let info = try? inspected.get()
        if case .failure(let why) = inspected, explicitMajor == nil, provisioner.availableMajors == nil {
            // Any major could run (an image per major): nothing may be guessed. The restore pods
            // read the dump with their own rights; the API needs read access too, to choose the
            // image and size the restore volume.
            throw APIError.badRequest(
                "the API cannot read the dump's header (\(why)), so it cannot tell which PostgreSQL major and image restore it",
                hint: settings.dumpUrl.hasPrefix("s3://")
                    ? "give the API's service account read access to the dump (s3:GetObject and s3:ListBucket: an IAM role through serviceAccount.annotations eks.amazonaws.com/role-arn, or databases.s3.secretName, which the chart also mounts into the API), or name the major with --postgres N"
                    : "make the dump readable from the API's pod, or name the major with --postgres N")
        }
        var project = settings
        do { project.postgresMajor = try provisioner.chooseMajor(explicit: explicitMajor, source: info?.sourceMajor) } catch {
            throw APIError.badRequest(error.message, hint: error.hint)
        }
        project.dumpFingerprint = await fingerprint(settings)
        let g = try await catalog.run { [project] in try $0.createProject(project) }
        if let g { submit(.seed(project: project.name, generation: g.number)) }
        return project
    }

    func refreshProject(_ name: String) async throws -> Generation {
        guard let p = try await catalog.run({ try $0.project(name) }) else { throw APIError.notFound("project \"\(name)\"") }
        let seen = await fingerprint(p)
        guard let g = try await catalog.run({ try $0.newGeneration(project: name, fingerprint: seen) }) else {
            throw APIError.conflict("project \"\(p.name)\" is being deleted", hint: "create it again once it is gone")
        }
        submit(.seed(project: name, generation: g.number))
        return g
    }

    /// One pass of the refresher: a new generation for every project whose dump changed (when it
    /// refreshes on change) or whose schedule is due. `now` is injectable for tests.
    func refreshDue(now: Date = Date()) async {
        guard let projects = try? await catalog.run({ try $0.projects() }) else { return }
        for p in projects where p.refreshOnChange == true || p.refreshSchedule != nil {
            guard let generations = try? await catalog.run({ try $0.generations(p.name) }),
                  !generations.contains(where: GenerationLifecycle.isSeeding) else { continue }
            let seen = p.refreshOnChange == true ? await fingerprint(p) : nil
            guard let reason = RefreshPolicy.decide(p, generations: generations, now: now, fingerprint: seen) else { continue }
            let g: Generation?
            switch reason {
            case .changed(let f): g = try? await catalog.run { try $0.newGeneration(project: p.name, fingerprint: f) }
            case .scheduled(let at): g = try? await catalog.run { try $0.newGeneration(project: p.name, fingerprint: seen, scheduledAt: at) }
            }
            guard let g else { continue }
            logger.info("refreshing project", metadata: ["devdb.project": "\(p.name)", "devdb.generation": "\(g.number)", "devdb.reason": "\(reason)"])
            await audit.automatic("project.refresh", p.name, detail: "generation \(g.number): \(reason)")  // #27
            count("refresh_started")
            submit(.seed(project: p.name, generation: g.number))
        }
    }

    /// Marks the project `deleting` (refused while it has databases), cancels its seeds and
    /// removes its generations. An API stopped half-way finishes on restart.
    func deleteProject(_ name: String) async throws {
        switch try await catalog.run({ try $0.requestProjectDelete(name) }) {
        case nil: throw APIError.notFound("project \"\(name)\"")
        case .refuse(let r): throw APIError.conflict(r.message, hint: r.hint)
        case .commit, .alreadyDeleting: await finishProjectDelete(name)
        }
    }

    func finishProjectDelete(_ name: String) async {
        let handles = seeds.withLock { $0.values.filter { $0.project == name } }
        handles.forEach { $0.cancel() }
        for _ in 0..<600 where !handles.allSatisfy(\.isFinished) { try? await Task.sleep(for: .milliseconds(100)) }
        let done: Void? = await persistently("deleting a project", ["devdb.project": "\(name)"]) {
            for g in try await self.catalog.run({ try $0.generations(name) }) { try await self.provisioner.deleteGeneration(g) }
            try await self.catalog.run { try $0.removeProject(name) }
        }
        guard done != nil else { return }
        logger.info("project deleted", metadata: ["devdb.project": "\(name)", "devdb.seeds_cancelled": "\(handles.count)"])
        count("project_delete_ok")
    }

    // MARK: seeding

    func runSeed(project name: String, generation number: Int) async {
        let handle = SeedHandle(project: name)
        seeds.withLock { $0["\(name)/\(number)"] = handle }
        defer {
            seeds.withLock { $0["\(name)/\(number)"] = nil }
            handle.finish()
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.seed(project: name, generation: number) }
            group.addTask {
                while !handle.isCancelled && !Task.isCancelled { try? await Task.sleep(for: .milliseconds(100)) }
            }
            await group.next()
            group.cancelAll()
        }
    }

    func seed(project name: String, generation number: Int) async {
        guard let project = try? await catalog.run({ try $0.project(name) }), project.state != .deleting,
              var g = try? await catalog.run({ try $0.generation(name, number) }), GenerationLifecycle.isSeeding(g) else { return }
        let started = Date()
        let catalog = self.catalog
        let event: GenerationLifecycle.Event
        do {
            if g.postgresMajor == nil {
                // The generation's major: the project's, or the dump's when a refresh brought a
                // dump from a newer major (older generations and their databases keep theirs).
                let info = try await inspectDump(project.dumpUrl)
                try Task.checkCancellation()
                var chosen = project.postgresMajor
                if let source = info?.sourceMajor, source > chosen {
                    do { chosen = try provisioner.chooseMajor(explicit: nil, source: source) } catch {
                        throw ProvisioningFailure("\(error.message): \(error.hint)")
                    }
                }
                let major = chosen
                _ = await persistently("recording the generation's major", ["devdb.project": "\(name)"]) {
                    try await self.catalog.run { try $0.apply(.inspected(major: major, format: info?.format.rawValue), project: name, generation: number) }
                }
                g.postgresMajor = major
                if major != project.postgresMajor {
                    logger.info("the new dump is from a newer PostgreSQL major", metadata: ["devdb.project": "\(name)", "devdb.major": "\(major)"])
                    _ = try? await catalog.run { try $0.updateProject(name) { $0.postgresMajor = max($0.postgresMajor, major) } }
                }
            }
            try await provisioner.seed(project: project, generation: g) { phase, bytes in
                _ = try? catalog.apply(.progress(phase: phase, bytes: bytes), project: name, generation: number)
            }
            try Task.checkCancellation()
            event = .succeeded(seconds: Date().timeIntervalSince(started), bytes: nil)
        } catch {
            if Task.isCancelled {
                logger.info("seed cancelled", metadata: ["devdb.project": "\(name)", "devdb.generation": "\(number)"])
                return
            }
            event = .failed(reason: String(describing: error))
        }
        let recorded = await persistently("recording a seed outcome", ["devdb.project": "\(name)"]) {
            try await self.catalog.run { try $0.apply(event, project: name, generation: number) }
        }
        guard recorded != nil else { return }
        if case .failed(let reason) = event {
            logger.warning("restore failed", metadata: ["devdb.project": "\(name)", "devdb.error": "\(reason)"])
            count("seed_failed")
        } else {
            logger.info("generation ready", metadata: ["devdb.project": "\(name)", "devdb.generation": "\(number)",
                                                      "devdb.seconds": "\(Int(Date().timeIntervalSince(started)))"])
            count("seed_ok")
            await collectGenerations(name)
        }
    }

    /// Removes generations that are neither among the project's newest `keep_generations` ready
    /// ones nor used by a database or snapshot. Waits while any database of the project is being
    /// made (it may be about to take an older one).
    func collectGenerations(_ project: String) async {
        guard let p = try? await catalog.run({ try $0.project(project) }),
              let generations = try? await catalog.run({ try $0.generations(project) }),
              let databases = try? await catalog.run({ try $0.databases() }).filter({ $0.project == project }),
              let snapshots = try? await catalog.run({ try $0.allSnapshots() }).map(\.0).filter({ $0.project == project }),
              !databases.contains(where: { $0.state.isTransitional && $0.state != .deleting }) else { return }
        let used = Set(databases.compactMap(\.generation) + snapshots.compactMap(\.generation))
        let kept = Set(generations.filter { $0.state == .ready }.map(\.number).sorted().suffix(p.keepGenerations ?? Project.defaultKeepGenerations))
        for g in generations where !kept.contains(g.number) && !used.contains(g.number) && (g.state == .ready || g.state == .failed) {
            try? await provisioner.deleteGeneration(g)
            try? await catalog.run { try $0.removeGeneration(g) }
        }
    }

    /// Waits for the project's newest ready generation (restoring first if there is none).
    /// `stop` is asked while waiting (a delete queued behind a create need not wait for a restore).
    func readyGeneration(for project: String, stop: () async -> String? = { nil }, onWait: () async -> Void) async throws -> Generation {
        var waited = false
        while true {
            if let why = await stop() { throw ProvisioningFailure(why) }
            guard let p = try await catalog.run({ try $0.project(project) }), p.state != .deleting else {
                throw ProvisioningFailure("project \"\(project)\" was deleted")
            }
            let generations = try await catalog.run { try $0.generations(project) }
            if let g = generations.filter({ $0.state == .ready }).max(by: { $0.number < $1.number }) { return g }
            if p.state == .failed { throw ProvisioningFailure("project \"\(project)\" has no data: \(p.reason ?? "its restore failed")") }
            if !generations.contains(where: GenerationLifecycle.isSeeding) {
                if let g = try await catalog.run({ try $0.newGeneration(project: project) }) {
                    submit(.seed(project: project, generation: g.number))
                }
            }
            if !waited { await onWait(); waited = true }
            try await Task.sleep(for: .milliseconds(300))
        }
    }

    // MARK: database work

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

    func stopInstance(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation) async {
        if op.idle == true {
            var outcome = await confirmFence(d.name, op)
            // The instance's own word last: a session no router reports (a router whose lease ended
            // while it kept relaying, a client connected to the instance directly) keeps it awake.
            if outcome == .clear, let open = await sessionsOnInstance(d), open > 0 {
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
            guard let report = try? await catalog.run({ try $0.fenceReport(name, token: op.id) }) else {
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
            if let t = try await catalog.run({ try $0.transition(name, .wake) }) {
                perform(name, t.actions)
                if t.applied && t.record?.state != .ready { await audit.automatic("database.wake", name) }  // #27
                // Awake already: say so again, so a router that holds clients for it reads the route.
                if t.record?.state == .ready { try await catalog.run { try $0.announceRoute(name) } }
            }
        } catch let refusal as QuotaRefusal {
            await refuseWake(name, refusal)  // #27: over the awake quota; routers answer their clients
        } catch {
            // The request stays in devdb:wake-requests: the reaper's next pass tries again (a wake
            // storm under load can time a Redis call out; dropping the request would strand a client).
            logger.warning("cannot wake a database yet; trying again on the next pass", metadata: ["devdb.database": "\(name)", "devdb.error": "\(error)"])
            return
        }
        _ = try? await catalog.run { try $0.clearWakeRequest(name) }
    }

    /// Hibernates ready databases no router has had a session on for their hibernate-after
    /// (per database, or --hibernate-after). A database with an open session never sleeps: this
    /// decision comes from the routers' last reports, and the stop it starts waits for the fence
    /// (`confirmFence`) before it stops anything.
    func hibernateIdle(now: Date = Date()) async {
        guard let databases = try? await catalog.run({ try $0.databases() }) else { return }
        // A report counts while three of its router's intervals have not passed (at least a minute).
        let fresh = max(60, 3 * ((try? await catalog.run { try $0.liveRouters() })?.values.max() ?? 0))
        let candidates = databases.filter { $0.state == .ready && ($0.hibernateAfterSeconds ?? config.hibernateAfterSeconds) > 0 }
        // Read in one pipeline per 500; a database whose activity cannot be read now is left awake.
        let activities = (try? await catalog.run({ [candidates] in try $0.activities(candidates.map(\.name), now: now, fresh: fresh) })) ?? [:]
        for d in candidates {
            let after = d.hibernateAfterSeconds ?? config.hibernateAfterSeconds
            guard let activity = activities[d.name], activity.open == 0 else { continue }
            let since = [activity.lastActive, d.readyAt, d.createdAt].compactMap { $0 }.max() ?? d.createdAt
            guard now.timeIntervalSince(since) >= after else { continue }
            logger.info("hibernating an idle database", metadata: ["devdb.database": "\(d.name)", "devdb.idle_seconds": "\(Int(now.timeIntervalSince(since)))"])
            if await apply(d.name, .hibernate(now: now, idle: true)) { await audit.automatic("database.hibernate", d.name) }  // #27
        }
        // Wake requests a missed message left in the set.
        for name in (try? await catalog.run({ try $0.wakeRequests() })) ?? [] { await wake(name) }
    }

    /// Waits for a snapshot to be ready (an implicit snapshot for a branch is taken meanwhile).
    func readySnapshot(_ reference: String, for name: String) async throws -> SnapshotRecord {
        guard let (db, snap) = SnapshotRecord.parse(reference) else { throw ProvisioningFailure("invalid snapshot reference \(reference)") }
        while true {
            guard let s = try await catalog.run({ try $0.snapshot(db, snap) }) else {
                throw ProvisioningFailure("snapshot \(reference) is gone")
            }
            switch s.state {
            case .ready: return s
            case .failed: throw ProvisioningFailure("snapshot \(reference) failed: \(s.reason ?? "see devdb db snapshots \(db)")")
            case .taking:
                if (try? await catalog.run { try $0.database(name) })?.deleteQueued == true { throw ProvisioningFailure("deleted while waiting for snapshot \(reference)") }
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
            await self.record(d.name, .snapshotFailed(operation: op.id, reason: String(describing: error), instanceRunning: running))
            logger.warning("snapshot failed", metadata: ["devdb.snapshot": "\(record.reference)", "devdb.error": "\(error)"])
            count("snapshot_failed")
        }
    }

    /// The record, reading through Redis blips.
    func currentRecord(_ name: String) async -> DatabaseRecord? {
        await persistently("reading a database", quiet: true) { try await self.catalog.run { try $0.database(name) } } ?? nil
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
                let info = try await provisioner.create(database: made, from: .snapshot(s)) { phase in
                    self.progressNow(name, op.id, state: phase == "starting" ? .starting : nil, phase: phase)
                }
                return await finish(d, op, info: info, generation: s.generation, major: made.postgresMajor)
            }
            let g = try await readyGeneration(for: d.project, stop: {
                (try? await self.catalog.run { try $0.database(name) })?.deleteQueued == true ? "deleted while waiting for the project's restore" : nil
            }) {
                await self.record(name, .progress(operation: op.id, state: .restoring, phase: "waiting for the project's restore", generation: nil))
            }
            await record(name, .progress(operation: op.id, state: .cloning, phase: "cloning", generation: g.number))
            var made = d
            made.postgresMajor = g.major
            let info = try await provisioner.create(database: made, from: g) { phase in
                self.progressNow(name, op.id, state: phase == "starting" ? .starting : nil, phase: phase)
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
                let latest = try await readyGeneration(for: d.project) {}
                let mine = d.postgresMajor ?? 15
                guard d.generation == nil || latest.major == mine else {
                    throw ProvisioningFailure(Self.crossMajorReset(d, from: mine, to: latest))
                }
                target = .generation(latest)
            } else if let snapshot = op.target ?? d.base {
                // To one of its snapshots, or a branch back to the snapshot it was made from.
                target = .snapshot(try await readySnapshot(snapshot, for: d.name))
            } else {
                guard let g = try await catalog.run({ try $0.generations(d.project) }).first(where: { $0.number == d.generation && $0.state == .ready }) else {
                    throw ProvisioningFailure("generation \(d.generation ?? 0) of \(d.project) is gone; use reset --latest")
                }
                target = .generation(g)
            }
            var made = d
            made.postgresMajor = await major(of: target)
            let info = try await provisioner.reset(database: made, to: target) { phase in
                self.progressNow(d.name, op.id, state: phase == "starting" ? .starting : nil, phase: phase)
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

    /// The major a clone source runs: a generation's own, or a snapshot's generation's.
    func major(of source: CloneSource) async -> Int {
        switch source {
        case .generation(let g): return g.major
        case .snapshot(let s):
            if let n = s.generation, let g = try? await catalog.run({ try $0.generation(s.project, n) }) { return g.major }
            return (try? await catalog.run({ try $0.database(s.database) }))??.postgresMajor ?? 15
        }
    }

    func finish(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation, info: InstanceInfo, generation: Int?, major: Int? = nil) async {
        let after = await record(d.name, .succeeded(operation: op.id, .init(host: info.host, port: info.port, cloneMethod: info.cloneMethod,
                                                                               note: info.note, generation: generation, postgresMajor: major)))
        if after?.record?.state == .ready {
            logger.info("database ready", metadata: ["devdb.database": "\(d.name)", "devdb.operation": "\(op.kind.rawValue)", "devdb.clone": "\(info.cloneMethod)"])
            count("\(op.kind.rawValue)_ok")
            await collectGenerations(d.project)
        }
    }

    func fail(_ d: DatabaseRecord, _ op: DatabaseRecord.Operation, _ error: any Error) async {
        let reason = String(describing: error)
        // A failed create or reset leaves no instance behind (the port lease stays with the record).
        if op.kind != .delete { try? await provisioner.removeInstance(database: d) }
        await record(d.name, .failed(operation: op.id, reason: reason))
        logger.warning("database operation failed", metadata: ["devdb.database": "\(d.name)", "devdb.operation": "\(op.kind.rawValue)", "devdb.error": "\(reason)"])
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
            await collectGenerations(d.project)
        } catch {
            await fail(d, op, error)
        }
    }

    // MARK: reconcile

    /// Compares the catalog with what runs and repairs what it owns: instances and processes no
    /// record wants are removed; ready databases whose instance is gone fail, unhealthy ones become
    /// unavailable and come back; routes without a ready database and port leases without their
    /// database are removed; generations without a project are removed; work in flight that no
    /// worker runs (a restart, a lost job) is resumed; projects left `deleting` are finished.
    /// Runs at start and then every reconcile interval.
    @discardableResult
    func reconcile() async throws -> RecoveryReport {
        let databases = try await catalog.run { try $0.databases() }
        var generations: [Generation] = []
        let projects = try await catalog.run { try $0.projects() }
        for p in projects { generations += try await catalog.run { try $0.generations(p.name) } }
        let snapshots = try await catalog.run { try $0.allSnapshots() }
        let catalog = self.catalog
        // The provisioner reads the catalog again right before each delete: a create, refresh or
        // snapshot recorded after this first read keeps its objects.
        let report = try await provisioner.recover(CatalogView(databases: databases, generations: generations, snapshots: snapshots.map(\.0))) {
            try await catalog.run { c in
                var generations: [Generation] = []
                for p in try c.projects() { generations += try c.generations(p.name) }
                return CatalogView(databases: try c.databases(), generations: generations, snapshots: try c.allSnapshots().map(\.0))
            }
        }
        if !report.orphansRemoved.isEmpty {
            logger.warning("removed what no catalog entry wants", metadata: ["devdb.removed": "\(report.orphansRemoved.joined(separator: ", "))"])
            for o in report.orphansRemoved { await audit.automatic("reconcile.remove-orphan", o) }  // #27
        }
        if !report.spared.isEmpty {
            logger.info("kept objects the catalog did not know at first (recorded since, or made moments ago)", metadata: ["devdb.kept": "\(report.spared.joined(separator: ", "))"])
        }
        let previouslyForeign = foreignObjects.withLock { f in defer { f = report.foreign }; return f }
        if !report.foreign.isEmpty && report.foreign != previouslyForeign {
            logger.warning("""
                found objects another DevDB installation made (a reinstall over a lost catalog?); they are kept, never deleted. \
                To remove them: kubectl delete deployments,services,secrets,jobs,persistentvolumeclaims,volumesnapshots -l devdb.io/installation=<id>. \
                To keep them, leave them: this installation ignores them (GET /v1/admin/foreign-objects lists them)
                """, metadata: ["devdb.foreign": "\(report.foreign.joined(separator: "; "))"])
        }
        if !report.restarted.isEmpty {
            logger.info("restarted instances", metadata: ["devdb.instances": "\(report.restarted.joined(separator: ","))"])
            for n in report.restarted { await audit.automatic("reconcile.restart", n) }  // #27
        }
        for name in report.missing { if await apply(name, .instanceMissing) { await audit.automatic("reconcile.instance-missing", name) } }  // #27
        for (name, why) in report.unhealthy { await apply(name, .instanceUnhealthy(reason: why)) }
        for name in report.healthy { await apply(name, .instanceHealthy) }
        for s in report.missingSnapshots {
            if let raw = snapshots.first(where: { $0.0.reference == s.reference })?.1 {
                _ = try? await catalog.run { try $0.failSnapshot(s, raw: raw, reason: "its data is gone") }
            }
        }
        await repairSnapshots(snapshots, databases: databases)
        for g in report.missingGenerations {
            try? await catalog.run { try $0.failGeneration(g, reason: "its snapshot is gone; the next database restores a new generation") }
        }

        // Work in flight that nothing runs.
        let busy = running.withLock { $0 }
        for d in databases where d.state.isTransitional {
            if let op = d.operation, busy.contains(Job.database(d.name, op).key) { continue }
            await apply(d.name, .resume)
        }
        for p in projects where p.state == .deleting && !busy.contains(Job.deleteProject(p.name).key) {
            submit(.deleteProject(p.name))
        }
        for g in generations where GenerationLifecycle.isSeeding(g) && !busy.contains(Job.seed(project: g.project, generation: g.number).key) {
            if projects.first(where: { $0.name == g.project })?.state != .deleting { submit(.seed(project: g.project, generation: g.number)) }
        }
        try await repairKeys(projects: Set(projects.map(\.name)))
        return report
    }

    /// Snapshots being taken by work that is gone fail; snapshots whose database was deleted and
    /// that no branch uses any more are removed.
    private func repairSnapshots(_ snapshots: [(SnapshotRecord, String)], databases: [DatabaseRecord]) async {
        for (s, raw) in snapshots {
            let d = databases.first { $0.name == s.database }
            if s.state == .taking, d?.operation?.target != s.name || d?.operation?.kind != .snapshot {
                // Read again: the snapshot may have started after the list was read.
                guard let now = try? await catalog.run({ try $0.database(s.database) }), now.operation?.target == s.name else {
                    _ = try? await catalog.run { try $0.failSnapshot(s, raw: raw, reason: "the work taking it is gone") }
                    continue
                }
            }
            if d == nil, (try? await catalog.run({ try $0.snapshotUsers(s.database, s.name) }))?.isEmpty == true,
               (try? await catalog.run({ try $0.removeSnapshotRecord(s, ifUnchanged: raw) })) == true {
                await removeSnapshotFiles([s])
                logger.warning("removed a snapshot no database or branch uses", metadata: ["devdb.snapshot": "\(s.reference)"])
                await audit.automatic("reconcile.remove-snapshot", s.reference)  // #27
            }
        }
    }

    /// True when the event committed a change (not ignored, refused or unreadable).
    @discardableResult
    private func apply(_ name: String, _ event: DatabaseLifecycle.Event) async -> Bool {
        guard let t = try? await catalog.run({ try $0.transition(name, event) }) else { return false }
        perform(name, t.actions)
        return t.applied
    }

    /// Routes, leases and generation keys that nothing owns. Every removal is guarded by the
    /// owning record as read, so work that changes it at the same time wins.
    private func repairKeys(projects: Set<String>) async throws {
        var removed: [String] = []
        for key in try await catalog.run({ try $0.scan(RouteContract.routeKey("*")) }) {
            let name = String(key.dropFirst(RouteContract.routeKey("").count))
            let (d, raw) = try await catalog.run { try $0.databaseAsRead(name) }
            if let d, DatabaseLifecycle.hasRoute(d.state) {
                let route = try await catalog.run { try $0.route(name) }
                if route?.host != d.backendHost || route?.port != d.backendPort { await apply(name, .routeRepair) }
                continue
            }
            if try await catalog.run({ try $0.removeRoute(name, ifDatabaseIs: raw) }) { removed.append("route \(name)") }
        }
        for d in try await catalog.run({ try $0.databases() }) where DatabaseLifecycle.hasRoute(d.state) {
            // Only a repair that committed counts: the database may have moved on (reset, deleted)
            // between the list and the route's read, and then it has no route to restore.
            if try await catalog.run({ try $0.route(d.name) }) == nil, await apply(d.name, .routeRepair) { removed.append("(restored route \(d.name))") }
        }
        for (port, owner) in try await catalog.run({ try $0.portOwners() }) {
            let (d, raw) = try await catalog.run { try $0.databaseAsRead(owner) }
            if d?.backendPort == port { continue }
            if try await catalog.run({ try $0.releaseLease(port, owner: owner, ifDatabaseIs: raw) }) { removed.append("port lease \(port) of \(owner)") }
        }
        for key in try await catalog.run({ try $0.scan("devdb:generation:*") }) {
            let parts = key.split(separator: ":")
            guard parts.count == 4, !projects.contains(String(parts[2])) else { continue }
            if try await catalog.run({ try $0.removeOrphanKey(key, project: String(parts[2])) }) { removed.append(key) }
        }
        if !removed.isEmpty { logger.warning("reconcile repaired catalog keys", metadata: ["devdb.repaired": "\(removed.joined(separator: ", "))"]) }
        for k in removed { await audit.automatic("reconcile.repair-key", k) }  // #27
    }

    func reapExpired() async {
        await hibernateIdle()
        guard let databases = try? await catalog.run({ try $0.databases() }) else { return }
        let now = Date()
        for d in databases where (d.expiresAt.map { $0 < now } ?? false) && d.state != .deleting && d.deleteQueued != true {
            logger.info("reaping expired database", metadata: ["devdb.database": "\(d.name)"])
            await audit.automatic("database.expire", d.name, outcome: await apply(d.name, .delete) ? "ok" : "failed")  // #27
            count("reaped")
        }
    }
}

struct ProvisioningFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Runs jobs as they come, several at once; reconciles first (which resumes interrupted work).
struct ProvisioningWorker: Service {
    let plane: ControlPlane

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                // Redis may not be up yet: keep trying, the API answers 503 meanwhile.
                var delay = 0.5
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    do { try await plane.reconcile(); return } catch {
                        plane.logger.error("recovery after start failed; retrying", metadata: ["devdb.error": "\(error)"])
                        try? await Task.sleep(for: .seconds(delay))
                        delay = min(delay * 2, 10)
                    }
                }
            }
            for await job in plane.jobs.cancelOnGracefulShutdown() {
                group.addTask {
                    guard plane.running.withLock({ $0.insert(job.key).inserted }) else { return }
                    defer { _ = plane.running.withLock { $0.remove(job.key) } }
                    switch job {
                    case .seed(let p, let g): await plane.runSeed(project: p, generation: g)
                    case .database(let n, let op): await plane.runDatabase(n, op)
                    case .deleteProject(let p): await plane.finishProjectDelete(p)
                    }
                }
            }
        }
    }
}

/// Listens for wake requests from routers (`devdb:wake`); missed ones are in a set the reaper drains.
struct WakeListener: Service {
    let plane: ControlPlane

    func run() async throws {
        let subscriber = RedisSubscriber(url: plane.catalog.redis.url, channel: RouteContract.wakeChannel)
        let (names, continuation) = AsyncStream.makeStream(of: String.self)
        subscriber.start(onConnected: {}, onDisconnected: { _ in }, onMessage: { continuation.yield($0) })
        defer { subscriber.stop() }
        await withDiscardingTaskGroup { group in
            for await name in names.cancelOnGracefulShutdown() {
                group.addTask { await plane.wake(name) }
            }
        }
    }
}

/// Checks projects that refresh on change or on a schedule, every --refresh-check-interval.
struct Refresher: Service {
    let plane: ControlPlane

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(plane.config.refreshCheckIntervalSeconds)) }
            } catch { return }
            await plane.refreshDue()
        }
    }
}

/// Deletes databases past their TTL and reconciles the catalog with what runs.
struct Reaper: Service {
    let plane: ControlPlane

    func run() async throws {
        var lastReconcile = Date()
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            await plane.measurePass("reaper") { await plane.reapExpired() }
            if Date().timeIntervalSince(lastReconcile) >= plane.config.reconcileIntervalSeconds {
                lastReconcile = Date()
                await plane.measurePass("reconcile") {
                    do { try await plane.reconcile() } catch {
                        plane.logger.warning("reconcile failed", metadata: ["devdb.error": "\(error)"])
                    }
                }
            }
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(plane.config.reapIntervalSeconds)) }
            } catch { return }
        }
    }
}
