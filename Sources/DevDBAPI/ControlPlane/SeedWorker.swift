import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import DevDBRedis
import Logging
import ServiceLifecycle

/// Restores projects' generations (seeds) and finishes project deletes: the jobs of
/// `ControlPlaneContext.seedJobs`. Also collects old generations and waits for a ready one for
/// the `DatabaseWorker`.
struct SeedWorker: Service, ControlPlanePart {
    let context: ControlPlaneContext

    func run() async throws {
        await context.runJobs(context.seedJobs) { job in
            switch job {
            case .seed(let p, let g): await runSeed(project: p, generation: g)
            case .deleteProject(let p): await finishProjectDelete(p)
            case .database: break
            }
        }
    }

    func runSeed(project name: String, generation number: Int) async {
        let handle = SeedHandle(project: name)
        context.seeds.withLock { $0["\(name)/\(number)"] = handle }
        defer {
            context.seeds.withLock { $0["\(name)/\(number)"] = nil }
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
        guard let project = try? await catalog.project(name), project.state != .deleting,
              var g = try? await catalog.generation(name, number), GenerationLifecycle.isSeeding(g) else { return }
        let started = Date()
        let catalog = self.catalog
        let event: GenerationLifecycle.Event
        var failure: ProvisioningError?
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
                    try await self.catalog.apply(.inspected(major: major, format: info?.format.rawValue), project: name, generation: number)
                }
                g.postgresMajor = major
                if major != project.postgresMajor {
                    logger.info("the new dump is from a newer PostgreSQL major", metadata: ["devdb.project": "\(name)", "devdb.major": "\(major)"])
                    _ = try? await catalog.updateProject(name) { $0.postgresMajor = max($0.postgresMajor, major) }
                }
            }
            let seeding = g
            try await withProgress({ (report: SeedProgress) in
                _ = try? await catalog.apply(.progress(phase: report.phase, bytes: report.bytes), project: name, generation: number)
            }) { report in
                try await self.provisioner.seed(project: project, generation: seeding) { phase, bytes in report(SeedProgress(phase: phase, bytes: bytes)) }
            }
            try Task.checkCancellation()
            event = .succeeded(seconds: Date().timeIntervalSince(started), bytes: nil)
        } catch {
            if Task.isCancelled {
                logger.info("seed cancelled", metadata: ["devdb.project": "\(name)", "devdb.generation": "\(number)"])
                return
            }
            let classified = ProvisioningError(error)
            failure = classified
            event = .failed(reason: classified.userMessage)
        }
        let recorded = await persistently("recording a seed outcome", ["devdb.project": "\(name)"]) {
            try await self.catalog.apply(event, project: name, generation: number)
        }
        guard recorded != nil else { return }
        if let failure {
            logger.warning("restore failed", metadata: ["devdb.project": "\(name)", "devdb.error_kind": "\(failure.kind.rawValue)", "devdb.error": "\(failure.detail)"])
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
        guard let p = try? await catalog.project(project), let generations = try? await catalog.generations(project) else { return }
        let kept = Set(generations.filter { $0.state == .ready }.map(\.number).sorted().suffix(p.keepGenerations ?? Project.defaultKeepGenerations))
        let candidates = generations.filter { !kept.contains($0.number) && ($0.state == .ready || $0.state == .failed) }
        // Usually nothing is old enough to go (this runs after every create): then the project's
        // databases and snapshots are not read at all, so a create costs the same in an
        // installation of ten databases or ten thousand.
        guard !candidates.isEmpty,
              let databases = try? await catalog.databasePage(owner: nil, project: project, after: nil, limit: nil, where: { _ in true }).records,
              let snapshots = try? await catalog.allSnapshots().map(\.0).filter({ $0.project == project }),
              !databases.contains(where: { $0.state.isTransitional && $0.state != .deleting }) else { return }
        let used = Set(databases.compactMap(\.generation) + snapshots.compactMap(\.generation))
        for g in candidates where !used.contains(g.number) {
            try? await provisioner.deleteGeneration(g)
            try? await catalog.removeGeneration(g)
        }
    }

    /// Waits for the project's newest ready generation (restoring first if there is none).
    /// `stop` is asked while waiting (a delete queued behind a create need not wait for a restore).
    func readyGeneration(for project: String, stop: () async -> String? = { nil }, onWait: () async -> Void) async throws -> Generation {
        var waited = false
        while true {
            if let why = await stop() { throw ProvisioningFailure(why) }
            guard let p = try await catalog.project(project), p.state != .deleting else {
                throw ProvisioningFailure("project \"\(project)\" was deleted")
            }
            let generations = try await catalog.generations(project)
            if let g = generations.filter({ $0.state == .ready }).max(by: { $0.number < $1.number }) { return g }
            if p.state == .failed { throw ProvisioningFailure("project \"\(project)\" has no data: \(p.reason ?? "its restore failed")") }
            if !generations.contains(where: GenerationLifecycle.isSeeding) {
                if let g = try await catalog.newGeneration(project: project) {
                    submit(.seed(project: project, generation: g.number))
                }
            }
            if !waited { await onWait(); waited = true }
            try await Task.sleep(for: .milliseconds(300))
        }
    }

    /// Finishes deleting a project marked `deleting`: cancels its seeds, removes its generations and then it.
    func finishProjectDelete(_ name: String) async {
        let handles = context.seeds.withLock { $0.values.filter { $0.project == name } }
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
