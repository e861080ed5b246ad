import DevDBCatalog
import DevDBCore
import Foundation
import Logging
import ServiceLifecycle

/// Refreshes projects that refresh on change or on a schedule: checks them every
/// --refresh-check-interval and starts a new generation for those due.
struct Refresher: Service, ControlPlanePart {
    let context: ControlPlaneContext

    func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(config.refreshCheckIntervalSeconds)) }
            } catch { return }
            await refreshDue()
        }
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
}
