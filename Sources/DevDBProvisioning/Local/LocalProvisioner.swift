import DevDBCatalog
import DevDBCore
import DevDBNet
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Databases as local `postgres` processes (PostgreSQL 15 from Debian), run as the `postgres`
/// user (or the API's own user when it is not root). Generations are stopped data directories;
/// instances are clones of them, made with reflinks where the filesystem can (XFS with
/// reflink=1, btrfs) and plain copies elsewhere.
///
///     <data-dir>/dumps/<project>-<generation>.dump      (0600, removed after the restore)
///     <data-dir>/generations/<project>/<generation>/pgdata
///     <data-dir>/generations/<project>/<generation>/schema-only/pgdata   the same without rows, made when first asked for
///     <data-dir>/instances/<database>/{pgdata,postgres.log}
///     <data-dir>/snapshots/<database>/<snapshot>/pgdata   a stopped copy of an instance
///     <data-dir>/s/<12 hex>/                             unix socket directory, 0700, per instance or seed
///     <data-dir>/scratch/<id>/pgdata                     a temporary instance a schema diff reads (LocalQuery.swift)
///
/// Socket directories are short hashes so every valid database name (up to 63 characters) fits
/// the 107-byte limit of a unix socket path. Local logins: the instance user only, by `peer`
/// (`local all postgres peer map=devdb`); TCP logins by scram-sha-256. No `trust`.
///
/// This type runs instances (clone, start, stop, snapshot, delete). Its helpers each have one
/// job: `LocalDataLayout` (the files above), `PostgresTools` (which binary, psql, pg_hba),
/// `DumpRestore` (making generations), `Postmasters` (finding and stopping postmasters through
/// /proc); recovery after a restart is in LocalRecovery.swift.
public final class LocalProvisioner: Provisioner, PostgresMajors, LocalPorts {
    public var availableMajors: [Int]? { postgres.majors }

    public let dataDirectory: URL
    /// The PostgreSQL majors this machine runs, and their binaries.
    public let postgres: PostgresInstallations
    let catalog: any CatalogStore
    let layout: LocalDataLayout
    let tools: PostgresTools
    private let restorer: DumpRestore
    public let kind = "local"
    public let portRange: ClosedRange<Int>
    /// Scratch directories whose temporary instance a query uses now (reconcile leaves them be).
    let activeScratch = Mutex<Set<String>>([])

    /// The role and database every instance has (each instance is its own cluster).
    public static let appUser = "app"
    public static let appDatabase = "app"
    /// The OS user instances run as: `postgres` when the API is root (Postgres refuses root).
    public static var instanceOSUser: String {
        if getuid() == 0 { return "postgres" }
        guard let pw = getpwuid(getuid()) else { return "postgres" }
        return String(cString: pw.pointee.pw_name)
    }

    public init(dataDirectory: URL, catalog: any CatalogStore, fetcher: DumpFetcher, portRange: ClosedRange<Int>,
                postgres: PostgresInstallations, restoreJobs: Int = max(2, ProcessInfo.processInfo.activeProcessorCount)) throws {
        self.dataDirectory = dataDirectory.standardizedFileURL
        self.catalog = catalog
        self.portRange = portRange
        self.postgres = postgres
        guard postgres.newest != nil else {
            throw ProvisioningError(.misconfigured, "no PostgreSQL installation found: install postgresql-15 (Debian) or pass --postgres-bin-dir MAJOR=DIR")
        }
        layout = try LocalDataLayout(root: dataDirectory)
        tools = PostgresTools(installations: postgres)
        restorer = DumpRestore(layout: layout, tools: tools, fetcher: fetcher, restoreJobs: restoreJobs)
    }

    public func socketDirectory(database name: String) -> String { layout.socketDirectory(database: name) }

    /// Copies a stopped data directory, with reflinks when the filesystem supports them.
    /// Returns `reflink` or `copy`.
    public static func cloneDirectory(from source: String, to destination: String) async throws -> String {
        try await LocalDataLayout.cloneDirectory(from: source, to: destination)
    }

    // MARK: seeding

    public func seed(project: Project, generation g: Generation, progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        try await restorer.seed(project: project, generation: g, progress: progress)
    }

    // MARK: instances

    public func create(database d: DatabaseRecord, from source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        try await stopAndRemove(d.name)  // what an attempt interrupted by a restart left
        // The control plane leased the port in the catalog and handed it over on the record.
        guard let port = d.backendPort else { throw ProvisioningError.internal("creating the instance", detail: "database \(d.name) has no port leased") }
        do {
            return try await cloneAndStart(d, from: source, port: port, phase: phase)
        } catch {
            try? await stopAndRemove(d.name)
            throw error
        }
    }

    /// True when nothing listens on 127.0.0.1:`port` (we can bind it ourselves).
    public func isFree(_ port: Int) -> Bool { Self.isFree(port) }

    static func isFree(_ port: Int) -> Bool {
        guard let fd = try? Sockets.listen(on: SocketAddress(host: .v4([127, 0, 0, 1]), port: UInt16(port)), backlog: 1) else { return false }
        SocketIO.close(fd)
        return true
    }

    /// The instance made again from `source`, on the port it has.
    public func reset(database d: DatabaseRecord, to source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        guard d.backendPort != nil else { throw ProvisioningError(.internal, "database \(d.name) has no port") }
        return try await create(database: d, from: source, phase: phase)
    }

    public func delete(database d: DatabaseRecord) async throws {
        try await stopAndRemove(d.name)
    }

    public func removeInstance(database d: DatabaseRecord) async throws {
        try await stopAndRemove(d.name)
    }

    public func deleteGeneration(_ g: Generation) async throws {
        await Postmasters.stop(pgdata: "\(layout.generationDir(g))/pgdata", tools: tools)
        try await LocalDataLayout.removeTree(layout.generationDir(g))
        try? FileManager.default.removeItem(atPath: layout.socketDir("g:\(g.project)/\(g.number)"))
        unlink(layout.dumpPath(g))
        LocalDataLayout.removeIfEmpty(layout.generationsDir(g.project))
    }

    private func cloneAndStart(_ d: DatabaseRecord, from source: CloneSource, port: Int, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        let dir = layout.instanceDir(d.name)
        var from = layout.sourceDataDirectory(source)
        if d.schemaOnly == true, case .generation(let g) = source { from = try await schemaOnlyDataDirectory(g, phase: phase) }
        guard FileManager.default.fileExists(atPath: "\(from)/PG_VERSION") else {
            throw ProvisioningError(.sourceUnavailable, "\(source.description) has no data on this machine; reset to another one or --latest", detail: "\(source.description) has no data on this machine (\(from))")
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try LocalDataLayout.giveToPostgres(dir, recursive: false)
        phase("cloning")
        let method = try await LocalDataLayout.cloneDirectory(from: from, to: "\(dir)/pgdata")
        try PostgresTools.writeAuthentication(pgdata: "\(dir)/pgdata")
        phase("starting")
        try await start(d.name, port: port)
        // The password never appears on a command line: a 0600 file in the private socket directory, read by psql.
        let sqlFile = "\(layout.socketDirectory(database: d.name))/set-password.sql"
        FileManager.default.createFile(atPath: sqlFile, contents: Data("ALTER ROLE \(Self.appUser) PASSWORD '\(d.password)';\n".utf8),
                                       attributes: [.posixPermissions: 0o600])
        try LocalDataLayout.giveToPostgres(sqlFile, recursive: false)
        defer { unlink(sqlFile) }
        try await Subprocess.check([tools.restoreTool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", layout.socketDirectory(database: d.name), "-p", String(port), "-U", "postgres",
                                    "-d", "postgres", "-f", sqlFile], asPostgres: true, what: "setting the password")
        return InstanceInfo(host: "127.0.0.1", port: port, cloneMethod: method)
    }

    // MARK: snapshots

    /// Stops the instance (fast: sessions are ended, a clean shutdown checkpoint is written),
    /// clones its data directory (reflink where the filesystem can: sub-second; a copy elsewhere),
    /// and starts it again on its port. Taken again from scratch if an earlier try was interrupted.
    public func snapshot(database d: DatabaseRecord, as s: SnapshotRecord) async throws -> SnapshotOutcome {
        guard let port = d.backendPort else { throw SnapshotFailure("database \(d.name) has no instance", instanceRunning: false) }
        let pgdata = "\(layout.instanceDir(d.name))/pgdata"
        let target = layout.snapshotDir(s)
        try? await LocalDataLayout.removeTree(target)  // what an interrupted try left (and its cp, if it still runs)
        do {
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            try LocalDataLayout.giveToPostgres(layout.snapshotsDir(s.database), recursive: false)
            try LocalDataLayout.giveToPostgres(target, recursive: false)
        } catch { throw SnapshotFailure(.internal("making the snapshot's directory", detail: "cannot make \(target): \(error)"), instanceRunning: await isRunning(d.name)) }
        let stopped = monotonicNow()
        if await isRunning(d.name) {
            do {
                try await Subprocess.check([tools.tool("pg_ctl", pgdata: pgdata), "-D", pgdata, "-m", "fast", "-w", "-t", "60", "stop"], asPostgres: true, what: "stopping Postgres for the snapshot")
            } catch {
                try? await LocalDataLayout.removeTree(target)
                throw SnapshotFailure(ProvisioningError(error), instanceRunning: await isRunning(d.name))
            }
        }
        var failure: ProvisioningError?
        var method = "copy"
        do { method = try await LocalDataLayout.cloneDirectory(from: pgdata, to: "\(target)/pgdata") } catch { failure = ProvisioningError(error) }
        if d.operation?.asleep == true {
            // It was asleep (stopped cleanly): it stays so.
            if let failure { try? await LocalDataLayout.removeTree(target); throw SnapshotFailure(failure, instanceRunning: false) }
            return SnapshotOutcome(method: method, sizeBytes: await LocalDataLayout.size(of: target), unavailableSeconds: 0)
        }
        do { try await start(d.name, port: port) } catch {
            try? await LocalDataLayout.removeTree(target)
            let again = ProvisioningError(error)
            throw SnapshotFailure(ProvisioningError(.snapshotFailed, "\(failure.map { $0.userMessage + "; " } ?? "")starting Postgres again failed: \(again.userMessage)",
                                                    detail: "\(failure.map { $0.detail + "; " } ?? "")starting Postgres again failed: \(again.detail)"), instanceRunning: false)
        }
        let unavailable = monotonicNow() - stopped
        if let failure {
            try? await LocalDataLayout.removeTree(target)
            throw SnapshotFailure(failure, instanceRunning: true)
        }
        return SnapshotOutcome(method: method, sizeBytes: await LocalDataLayout.size(of: target), unavailableSeconds: unavailable)
    }

    // MARK: hibernation

    /// `pg_ctl stop -m fast`: sessions end, a shutdown checkpoint is written.
    public func stop(database d: DatabaseRecord) async throws {
        if await isRunning(d.name) {
            try await Subprocess.check([tools.tool("pg_ctl", pgdata: "\(layout.instanceDir(d.name))/pgdata"), "-D", "\(layout.instanceDir(d.name))/pgdata", "-m", "fast", "-w", "-t", "60", "stop"],
                                       asPostgres: true, what: "stopping Postgres to hibernate")
        }
    }

    public func start(database d: DatabaseRecord) async throws -> InstanceInfo {
        guard let port = d.backendPort, FileManager.default.fileExists(atPath: "\(layout.instanceDir(d.name))/pgdata/PG_VERSION") else {
            throw ProvisioningError(.instanceGone, "its data directory is gone; run \"devdb db reset \(d.name)\"")
        }
        if await !isRunning(d.name) {
            let pidFile = "\(layout.instanceDir(d.name))/pgdata/postmaster.pid"
            if FileManager.default.fileExists(atPath: pidFile) { unlink(pidFile) }
            try await start(d.name, port: port)
        }
        return InstanceInfo(host: "127.0.0.1", port: port, cloneMethod: d.cloneMethod ?? "copy", note: d.note)
    }

    public func deleteSnapshot(_ s: SnapshotRecord) async throws {
        try await LocalDataLayout.removeTree(layout.snapshotDir(s))
        LocalDataLayout.removeIfEmpty(layout.snapshotsDir(s.database))
    }

    func start(_ name: String, port: Int) async throws {
        let dir = layout.instanceDir(name)
        let sockets = layout.socketDirectory(database: name)
        try layout.makeSocketDir(sockets)
        try await Subprocess.check([tools.tool("pg_ctl", pgdata: "\(dir)/pgdata"), "-D", "\(dir)/pgdata", "-w", "-t", "60", "-l", "\(dir)/postgres.log", "-o",
                                    "-p \(port) -c listen_addresses=127.0.0.1 -k \(sockets) -c password_encryption=scram-sha-256",
                                    "start"], asPostgres: true, what: "starting Postgres")
    }

    func isRunning(_ name: String) async -> Bool {
        let out = try? await Subprocess.run([tools.tool("pg_ctl", pgdata: "\(layout.instanceDir(name))/pgdata"), "-D", "\(layout.instanceDir(name))/pgdata", "status"], asPostgres: true)
        return out?.status == 0
    }

    func stopAndRemove(_ name: String) async throws {
        let dir = layout.instanceDir(name)
        await Postmasters.stop(pgdata: "\(dir)/pgdata", tools: tools)
        try await LocalDataLayout.removeTree(dir)
        try? FileManager.default.removeItem(atPath: layout.socketDirectory(database: name))
    }
}
