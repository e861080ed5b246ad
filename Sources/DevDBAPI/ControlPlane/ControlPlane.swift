import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import DevDBRedis
import Foundation
import Logging
import ServiceLifecycle

/// Assembles the control plane: one shared context, the requests controllers call, and the
/// services that run beside the HTTP server. Decisions are the state machines' (DevDBCatalog's
/// `DatabaseLifecycle`, `GenerationLifecycle`, `ProjectLifecycle`); the parts do the I/O they ask for.
struct ControlPlane {
    let context: ControlPlaneContext
    /// What controllers and the console call.
    let requests: LifecycleRequests
    /// The loops, each a `Service` with one job; the wake listener joins them where there is Redis.
    let services: [any Service]

    init(config: APIConfiguration, catalog: any CatalogStore, provisioner: any Provisioner, logger: Logger, redis: RedisURL?) {
        let context = ControlPlaneContext(config: config, catalog: catalog, provisioner: provisioner, logger: logger)
        self.context = context
        requests = LifecycleRequests(context: context)
        services = [DatabaseWorker(context: context), SeedWorker(context: context), Reconciler(context: context),
                    Hibernator(context: context), Refresher(context: context)]
            + (redis.map { [WakeListener(hibernator: Hibernator(context: context), redis: $0)] } ?? [])
    }
}

/// Listens for wake requests from routers (`devdb:wake`); missed ones are in a set the hibernator drains.
struct WakeListener: Service {
    let hibernator: Hibernator
    let redis: RedisURL

    func run() async throws {
        let subscriber = RedisSubscriber(url: redis, channel: RouteContract.wakeChannel)
        let (names, continuation) = AsyncStream.makeStream(of: String.self)
        subscriber.start(onConnected: {}, onDisconnected: { _ in }, onMessage: { continuation.yield($0) })
        defer { subscriber.stop() }
        await withDiscardingTaskGroup { group in
            for await name in names.cancelOnGracefulShutdown() {
                group.addTask { await hibernator.wake(name) }
            }
        }
    }
}
