import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import DevDBRedis
import Logging
import ServiceLifecycle

/// Runs jobs as they come, several at once; reconciles first (which resumes interrupted work).
struct ProvisioningWorker: Service {
    let plane: ControlPlane

    func run() async throws {
        await withDiscardingTaskGroup { group in
            group.addTask {
                // Redis may not be up yet: keep trying, the API answers 503 meanwhile.
                var backoff = Backoff(initial: 0.5, cap: 10)
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    do { try await plane.reconcile(); return } catch {
                        plane.logger.error("recovery after start failed; retrying", metadata: ["devdb.error": "\(error)"])
                        try? await Task.sleep(nanoseconds: Backoff.nanoseconds(backoff.next()))
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
    let redis: RedisURL

    func run() async throws {
        let subscriber = RedisSubscriber(url: redis, channel: RouteContract.wakeChannel)
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
