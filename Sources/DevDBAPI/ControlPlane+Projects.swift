import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import DevDBRedis
import Logging
import ServiceLifecycle

/// Projects: creating, refreshing and deleting them, and reading their dumps.
extension ControlPlane {

    var fetcher: DumpFetcher { DumpFetcher(s3: config.s3, allowPrivateHosts: config.allowPrivateDumpHosts) }

    /// The dump's fingerprint now, or nil when it cannot be had (logged; the fetch says why later).
    func fingerprint(_ project: Project) async -> String? {
        let fetcher = self.fetcher
        let url = project.dumpUrl
        let result = await BlockingExecutor.io.run { Result { () throws(DumpError) -> String in try fetcher.fingerprint(url) } }
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
            await BlockingExecutor.io.run { Result { () throws(DumpError) -> DumpInfo in try fetcher.inspect(url, cancelled: { cancelled.isSet }) } }
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
        let g = try await catalog.createProject(project)
        if let g { submit(.seed(project: project.name, generation: g.number)) }
        return project
    }

    func refreshProject(_ name: String) async throws -> Generation {
        guard let p = try await catalog.project(name) else { throw APIError.notFound("project \"\(name)\"") }
        let seen = await fingerprint(p)
        guard let g = try await catalog.newGeneration(project: name, fingerprint: seen) else {
            throw APIError.conflict("project \"\(p.name)\" is being deleted", hint: "create it again once it is gone")
        }
        submit(.seed(project: name, generation: g.number))
        return g
    }

    /// One pass of the refresher: a new generation for every project whose dump changed (when it
    /// refreshes on change) or whose schedule is due. `now` is injectable for tests.
    func refreshDue(now: Date = Date()) async {
        guard let projects = try? await catalog.projects() else { return }
        for p in projects where p.refreshOnChange == true || p.refreshSchedule != nil {
            guard let generations = try? await catalog.generations(p.name),
                  !generations.contains(where: GenerationLifecycle.isSeeding) else { continue }
            let seen = p.refreshOnChange == true ? await fingerprint(p) : nil
            guard let reason = RefreshPolicy.decide(p, generations: generations, now: now, fingerprint: seen) else { continue }
            let g: Generation?
            switch reason {
            case .changed(let f): g = try? await catalog.newGeneration(project: p.name, fingerprint: f)
            case .scheduled(let at): g = try? await catalog.newGeneration(project: p.name, fingerprint: seen, scheduledAt: at)
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
        switch try await catalog.requestProjectDelete(name) {
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
            for g in try await self.catalog.generations(name) { try await self.provisioner.deleteGeneration(g) }
            try await self.catalog.removeProject(name)
        }
        guard done != nil else { return }
        logger.info("project deleted", metadata: ["devdb.project": "\(name)", "devdb.seeds_cancelled": "\(handles.count)"])
        count("project_delete_ok")
    }
}
