import DevDBCatalog

/// Where an instance can be reached, as the route will name it.
public struct InstanceInfo: Sendable, Equatable {
    public var host: String
    public var port: Int
    /// `reflink`, `copy` or (Kubernetes) `snapshot` / `restore`.
    public var cloneMethod: String
    /// Something the user should know about how the instance was made (shown by `devdb db show`).
    public var note: String?
    public init(host: String, port: Int, cloneMethod: String, note: String? = nil) {
        self.host = host; self.port = port; self.cloneMethod = cloneMethod; self.note = note
    }
}

public struct RecoveryReport: Sendable {
    /// Instances started again after a restart or reboot.
    public var restarted: [String] = []
    /// Instances, generation directories and Postgres processes found with no catalog entry; removed.
    public var orphansRemoved: [String] = []
    /// Catalog entries whose instance is gone.
    public var missing: [String] = []
    /// Ready databases whose instance runs and answers.
    public var healthy: [String] = []
    /// Databases whose instance exists but is not ready, with the reason the platform gives.
    public var unhealthy: [String: String] = [:]
    /// Ready generations whose snapshot is gone.
    public var missingGenerations: [Generation] = []
    public init() {}
}

/// Makes generations and database instances. The local provisioner runs Postgres processes;
/// the Kubernetes provisioner makes pods, volumes and CSI snapshots behind the same calls.
public protocol Provisioner: Sendable {
    var kind: String { get }
    /// Fetches the project's dump and restores it into `generation`, reporting phases and bytes.
    func seed(project: Project, generation: Generation, progress: @escaping @Sendable (_ phase: String, _ bytes: Int64) -> Void) async throws
    /// Makes the instance for `database` from a ready generation and starts it.
    func create(database: DatabaseRecord, from generation: Generation, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo
    /// Puts the instance back to `generation`, keeping its name, port and credentials.
    func reset(database: DatabaseRecord, to generation: Generation, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo
    /// Removes everything the instance had (process, files; the catalog frees its port lease).
    func delete(database: DatabaseRecord) async throws
    /// Removes what a failed create or reset left (process, files), keeping what the record
    /// still names (its port lease; on Kubernetes its Secret and Service).
    func removeInstance(database: DatabaseRecord) async throws
    func deleteGeneration(_ generation: Generation) async throws
    /// After a restart and then periodically (reconcile): starts or checks catalogued instances
    /// and removes instances and generations the catalog does not know.
    func recover(databases: [DatabaseRecord], generations: [Generation]) async throws -> RecoveryReport
}

extension Provisioner {
    public func removeInstance(database: DatabaseRecord) async throws {}
}
