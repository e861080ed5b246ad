import DevDBCatalog
import Foundation

/// For `bench/scale` only (`devdb-api --provisioner stand-in`): every catalog write, route,
/// lifecycle step and job of a real provisioner, without PostgreSQL, so an installation of ten
/// thousand databases fits on one machine. Every instance is reachable at one stand-in address
/// (`--stand-in-backend HOST:PORT`, an idle server the bench runs that answers a startup packet);
/// seeds restore nothing, snapshots copy nothing, stops and starts are instant. What this leaves
/// out of the costs the bench measures: Postgres itself, data, restores and clones.
public struct StandInProvisioner: Provisioner {
    public let host: String
    public let port: Int
    public init(host: String, port: Int) { self.host = host; self.port = port }

    public var kind: String { "stand-in" }
    public var availableMajors: [Int]? { nil }

    var instance: InstanceInfo { InstanceInfo(host: host, port: port, cloneMethod: "stand-in") }

    public func seed(project: Project, generation: Generation, progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        progress("restoring", 0)
    }
    public func create(database: DatabaseRecord, from source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        instance
    }
    public func reset(database: DatabaseRecord, to source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        instance
    }
    public func snapshot(database: DatabaseRecord, as snapshot: SnapshotRecord) async throws -> SnapshotOutcome {
        SnapshotOutcome(method: "stand-in", sizeBytes: 0, unavailableSeconds: 0)
    }
    public func deleteSnapshot(_ snapshot: SnapshotRecord) async throws {}
    public func stop(database: DatabaseRecord) async throws {}
    public func start(database: DatabaseRecord) async throws -> InstanceInfo { instance }
    public func delete(database: DatabaseRecord) async throws {}
    public func deleteGeneration(_ generation: Generation) async throws {}
    public func recover(databases: [DatabaseRecord], generations: [Generation], snapshots: [SnapshotRecord]) async throws -> RecoveryReport {
        var report = RecoveryReport()
        report.healthy = databases.filter { $0.state == .ready || $0.state == .unavailable }.map(\.name)
        return report
    }
}
