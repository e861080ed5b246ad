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
    /// Ready database snapshots whose files or VolumeSnapshot are gone.
    public var missingSnapshots: [SnapshotRecord] = []
    /// Objects another installation made (a reinstall over a lost catalog finds the old one's
    /// databases): never deleted, reported with how to remove or keep them.
    public var foreign: [String] = []
    /// What the catalog did not know when the reconcile read it but did when it was about to
    /// delete (work recorded in between), or that was younger than the grace period: kept.
    public var spared: [String] = []
    public init() {}
}

/// What the catalog holds, as one reconcile reads it.
public struct CatalogView: Sendable {
    public var databases: [DatabaseRecord]
    public var generations: [Generation]
    public var snapshots: [SnapshotRecord]
    public init(databases: [DatabaseRecord], generations: [Generation], snapshots: [SnapshotRecord]) {
        self.databases = databases; self.generations = generations; self.snapshots = snapshots
    }
}

/// What a database is made from, or reset to.
public enum CloneSource: Sendable, Equatable {
    case generation(Generation)
    case snapshot(SnapshotRecord)

    public var description: String {
        switch self {
        case .generation(let g): return "generation \(g.number) of \(g.project)"
        case .snapshot(let s): return "snapshot \(s.reference)"
        }
    }
}

/// What a schema diff reads: a database's running instance, or a stopped generation or snapshot
/// (started as a temporary instance that is removed afterwards).
public enum QueryTarget: Sendable {
    case database(DatabaseRecord)
    case source(CloneSource)
}

/// A provisioner whose instances listen on ports of this machine. The control plane chooses a
/// free port, leases it in the catalog and hands it over on the record (`backendPort`) to
/// `create` and `reset`: provisioners never write the catalog.
public protocol LocalPorts: Sendable {
    var portRange: ClosedRange<Int> { get }
    /// True when nothing on the machine listens on `port` (a lease in the catalog alone does
    /// not know about other programs).
    func isFree(_ port: Int) -> Bool
}

/// Makes generations and database instances. The local provisioner runs Postgres processes;
/// the Kubernetes provisioner makes pods, volumes and CSI snapshots behind the same calls.
public protocol Provisioner: PostgresMajors {
    /// `local`, `kubernetes` or `stand-in`: named in refusals of what one of them cannot do yet.
    var kind: String { get }
    /// Fetches the project's dump and restores it into `generation`, reporting phases and bytes.
    func seed(project: Project, generation: Generation, progress: @escaping @Sendable (_ phase: String, _ bytes: Int64) -> Void) async throws
    /// Makes the instance for `database` from a ready generation or snapshot and starts it.
    func create(database: DatabaseRecord, from source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo
    /// Puts the instance back to a generation or snapshot, keeping its name, port and credentials.
    func reset(database: DatabaseRecord, to source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo
    /// Saves the database's state as `snapshot`: a consistent copy (stopped, or checkpointed and
    /// crash-consistent), after which the database serves again. Throws `SnapshotFailure`.
    func snapshot(database: DatabaseRecord, as snapshot: SnapshotRecord) async throws -> SnapshotOutcome
    /// Removes a snapshot's files or VolumeSnapshot.
    func deleteSnapshot(_ snapshot: SnapshotRecord) async throws
    /// Stops the instance cleanly to hibernate it, keeping everything it needs to start again.
    func stop(database: DatabaseRecord) async throws
    /// Starts a hibernated instance again and waits until it serves.
    func start(database: DatabaseRecord) async throws -> InstanceInfo
    /// Removes everything the instance had (process, files; the catalog frees its port lease).
    func delete(database: DatabaseRecord) async throws
    /// Removes what a failed create or reset left (process, files), keeping what the record
    /// still names (its port lease; on Kubernetes its Secret and Service).
    func removeInstance(database: DatabaseRecord) async throws
    func deleteGeneration(_ generation: Generation) async throws
    /// Runs one read-only query as the superuser in the target's application database and
    /// returns what it prints (psql -At). A generation or snapshot is cloned and started as a
    /// temporary instance, only on a private socket, and removed afterwards.
    func query(_ sql: String, on target: QueryTarget) async throws -> String
    /// After a restart and then periodically (reconcile): starts or checks catalogued instances
    /// and removes instances and generations the catalog does not know.
    func recover(databases: [DatabaseRecord], generations: [Generation], snapshots: [SnapshotRecord]) async throws -> RecoveryReport
    /// The same, reading the catalog again (`current`) right before removing anything it did not
    /// know: a create, refresh or snapshot recorded after the first read keeps its objects.
    func recover(_ view: CatalogView, current: @escaping @Sendable () async throws -> CatalogView) async throws -> RecoveryReport
}

extension Provisioner {
    public func recover(_ view: CatalogView, current: @escaping @Sendable () async throws -> CatalogView) async throws -> RecoveryReport {
        try await recover(databases: view.databases, generations: view.generations, snapshots: view.snapshots)
    }
}

/// Which PostgreSQL majors a provisioner can run.
public protocol PostgresMajors: Sendable {
    /// The majors it runs, ascending; nil when any major can run (Kubernetes: an image per major).
    var availableMajors: [Int]? { get }
}

extension PostgresMajors {
    /// The major a project gets: `explicit` when given, else the dump's own (or, when that one is
    /// not installed, the oldest installed above it; when the dump does not tell, the newest).
    /// Throws a refusal naming both when `explicit` is older than the dump, or what is installed.
    public func chooseMajor(explicit: Int?, source: Int?) throws(MajorRefusal) -> Int {
        if let explicit, let source, explicit < source {
            throw MajorRefusal(message: "the dump was made from PostgreSQL \(source), and --postgres \(explicit) is older: a dump restores only into its own major or a newer one",
                               hint: "use --postgres \(source) or newer, or leave --postgres out to use the dump's")
        }
        guard let available = availableMajors else { return explicit ?? source ?? Self.newestKnownMajor }
        let wanted = explicit ?? source
        if let explicit, !available.contains(explicit) { throw MajorRefusal.notInstalled(explicit, available) }
        if let wanted, let major = available.first(where: { $0 >= wanted }) { return major }
        if let wanted { throw MajorRefusal.notInstalled(wanted, available) }
        guard let newest = available.last else { throw MajorRefusal.notInstalled(15, available) }
        return newest
    }

    public static var newestKnownMajor: Int { 18 }
}

public struct MajorRefusal: Error, Equatable, CustomStringConvertible {
    public var message: String
    public var hint: String
    public var description: String { message }

    static func notInstalled(_ major: Int, _ available: [Int]) -> MajorRefusal {
        let p = PostgresInstallations(binDirectories: Dictionary(uniqueKeysWithValues: available.map { ($0, "") })).problem(with: major)!
        return MajorRefusal(message: p.message, hint: p.hint)
    }
}

extension Provisioner {
    public func removeInstance(database: DatabaseRecord) async throws {}

    public func query(_ sql: String, on target: QueryTarget) async throws -> String {
        throw ProvisioningError(.notSupported, "reading schemas is not available with the \(kind) provisioner yet")
    }

    public func create(database: DatabaseRecord, from generation: Generation, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        try await create(database: database, from: .generation(generation), phase: phase)
    }

    public func reset(database: DatabaseRecord, to generation: Generation, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        try await reset(database: database, to: .generation(generation), phase: phase)
    }
}

/// A snapshot that could not be taken; `instanceRunning` says whether the database serves again.
public struct SnapshotFailure: Error, CustomStringConvertible {
    public let error: ProvisioningError
    public let instanceRunning: Bool
    public init(_ error: ProvisioningError, instanceRunning: Bool) { self.error = error; self.instanceRunning = instanceRunning }
    /// A failure whose words are all for the user.
    public init(_ userMessage: String, instanceRunning: Bool) { self.init(ProvisioningError(.snapshotFailed, userMessage), instanceRunning: instanceRunning) }
    public var description: String { error.userMessage }
}
