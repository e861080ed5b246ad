/// The catalog in memory, for in-process tests: the same engine, guards and transactions as
/// `RedisCatalogStore` over a `MemoryBackend` (`memory` lets a test write what routers write,
/// such as activity and leases, and look at the keys).
public final class MemoryCatalogStore: CatalogEngineStore {
    public let memory: MemoryBackend
    let engine: CatalogEngine

    public init(maxSnapshotsPerDatabase: Int = 10) {
        memory = MemoryBackend()
        engine = CatalogEngine(backend: memory, maxSnapshotsPerDatabase: maxSnapshotsPerDatabase)
    }

    public func perform<T: Sendable>(_ body: @escaping @Sendable (CatalogEngine) throws -> T) async throws -> T {
        try body(engine)
    }
}
