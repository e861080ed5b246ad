import DevDBCatalog
import DevDBNet
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Databases as local `postgres` processes (PostgreSQL 15 from Debian), run as the `postgres`
/// user. Generations are stopped data directories; instances are clones of them, made with
/// reflinks where the filesystem can (XFS with reflink=1, btrfs) and plain copies elsewhere.
///
///     <data-dir>/dumps/<project>-<generation>.dump
///     <data-dir>/generations/<project>/<generation>/pgdata
///     <data-dir>/instances/<database>/{pgdata,run,postgres.log}
public final class LocalProvisioner: Provisioner {
    public let kind = "local"
    public let dataDirectory: URL
    public let postgresBin: String
    private let catalog: Catalog
    private let fetcher: DumpFetcher
    private let portRange: ClosedRange<Int>
    private let restoreJobs: Int

    /// The role and database every instance has (each instance is its own cluster).
    public static let appUser = "app"
    public static let appDatabase = "app"

    public init(dataDirectory: URL, catalog: Catalog, fetcher: DumpFetcher, portRange: ClosedRange<Int>,
                postgresBin: String = "/usr/lib/postgresql/15/bin", restoreJobs: Int = max(2, ProcessInfo.processInfo.activeProcessorCount)) throws {
        self.dataDirectory = dataDirectory
        self.catalog = catalog
        self.fetcher = fetcher
        self.portRange = portRange
        self.postgresBin = postgresBin
        self.restoreJobs = restoreJobs
        for sub in ["dumps", "generations", "instances"] {
            try FileManager.default.createDirectory(at: dataDirectory.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        try Self.giveToPostgres(dataDirectory.path, recursive: false)
        for sub in ["generations", "instances"] { try Self.giveToPostgres(dataDirectory.appendingPathComponent(sub).path, recursive: false) }
    }

    // MARK: paths

    func dumpPath(_ g: Generation) -> String { dataDirectory.appendingPathComponent("dumps/\(g.project)-\(g.number).dump").path }
    func generationDir(_ g: Generation) -> String { dataDirectory.appendingPathComponent("generations/\(g.project)/\(g.number)").path }
    func instanceDir(_ name: String) -> String { dataDirectory.appendingPathComponent("instances/\(name)").path }

    static func giveToPostgres(_ path: String, recursive: Bool) throws {
        guard getuid() == 0 else { return }
        let out = try Subprocess.runBlocking(["chown"] + (recursive ? ["-R"] : []) + ["postgres:postgres", path])
        guard out.status == 0 else { throw SubprocessError(description: "chown \(path): \(out.tail)") }
    }

    func tool(_ name: String) -> String { "\(postgresBin)/\(name)" }

    // MARK: seeding

    public func seed(project: Project, generation g: Generation, progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        let dump = dumpPath(g)
        progress("fetching", 0)
        let fetcher = self.fetcher
        try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
            DispatchQueue.global().async {
                do {
                    try fetcher.fetch(project.dumpUrl, to: dump) { bytes in progress("fetching", bytes) }
                    cont.resume()
                } catch { cont.resume(throwing: error) }
            }
        }
        let size = (try? FileManager.default.attributesOfItem(atPath: dump)[.size] as? Int64) ?? 0
        let dir = generationDir(g)
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Self.giveToPostgres(dataDirectory.appendingPathComponent("generations/\(g.project)").path, recursive: false)
        try Self.giveToPostgres(dir, recursive: false)
        try Self.giveToPostgres(dump, recursive: false)
        progress("initdb", size)
        try await Subprocess.check([tool("initdb"), "-D", "\(dir)/pgdata", "-U", "postgres", "--auth-local=trust",
                                    "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"], asPostgres: true, what: "initdb")
        let run = "\(dir)/run"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        try Self.giveToPostgres(run, recursive: false)
        // Restore with durability off (the clean shutdown and a sync make the result durable),
        // listening on a socket only.
        try await Subprocess.check([tool("pg_ctl"), "-D", "\(dir)/pgdata", "-w", "-t", "120", "-l", "\(dir)/restore.log", "-o",
                                    "-p 5432 -c listen_addresses='' -k \(run) -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c maintenance_work_mem=256MB -c max_wal_size=4GB",
                                    "start"], asPostgres: true, what: "starting Postgres for the restore")
        do {
            progress("restoring", size)
            try await psql(socket: run, database: "postgres", sql: "CREATE ROLE \(Self.appUser) LOGIN")
            try await psql(socket: run, database: "postgres", sql: "CREATE DATABASE \(Self.appDatabase) OWNER \(Self.appUser)")
            try await Subprocess.check([tool("pg_restore"), "-h", run, "-p", "5432", "-U", "postgres", "-d", Self.appDatabase,
                                        "--no-owner", "--no-privileges", "--role=\(Self.appUser)", "-j", String(restoreJobs), dump],
                                       asPostgres: true, what: "pg_restore")
            progress("analyzing", size)
            try await psql(socket: run, database: Self.appDatabase, sql: "ANALYZE")
            progress("stopping", size)
        } catch {
            _ = try? await Subprocess.run([tool("pg_ctl"), "-D", "\(dir)/pgdata", "-m", "immediate", "stop"], asPostgres: true)
            throw error
        }
        try await Subprocess.check([tool("pg_ctl"), "-D", "\(dir)/pgdata", "-m", "fast", "-w", "stop"], asPostgres: true, what: "stopping Postgres after the restore")
        _ = try? await Subprocess.run(["sync", "-f", dir])
        try? FileManager.default.removeItem(atPath: dump)  // the generation is the restored copy now
    }

    func psql(socket: String, database: String, sql: String) async throws {
        try await Subprocess.check(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", socket, "-p", "5432", "-U", "postgres",
                                    "-d", database, "-c", sql], asPostgres: true, what: "psql")
    }

    // MARK: instances

    public func create(database d: DatabaseRecord, from g: Generation, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        try? await stopAndRemove(d.name)  // what an attempt interrupted by a restart left
        let port = try await leaseFreePort(for: d.name)
        do {
            return try await cloneAndStart(d, from: g, port: port, phase: phase)
        } catch {
            try? await stopAndRemove(d.name)
            _ = try? await catalog.run { try $0.releasePort(port) }
            throw error
        }
    }

    /// Leases a port that nothing else on the machine listens on (a lease in Redis alone does not
    /// know about other programs); busy ports are skipped.
    func leaseFreePort(for name: String) async throws -> Int {
        var busy: [Int] = []
        func releaseBusy() async {
            for p in busy { _ = try? await catalog.run { try $0.releasePort(p) } }
        }
        while true {
            let port: Int
            do { port = try await catalog.run { try $0.allocatePort(in: self.portRange, for: name) } } catch {
                await releaseBusy()
                throw error
            }
            if Self.isFree(port) {
                await releaseBusy()
                return port
            }
            busy.append(port)
        }
    }

    /// True when nothing listens on 127.0.0.1:`port` (we can bind it ourselves).
    static func isFree(_ port: Int) -> Bool {
        guard let fd = try? Sockets.listen(on: SocketAddress(host: .v4([127, 0, 0, 1]), port: UInt16(port)), backlog: 1) else { return false }
        SocketIO.close(fd)
        return true
    }

    public func reset(database d: DatabaseRecord, to g: Generation, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        guard let port = d.backendPort else { throw SubprocessError(description: "database \(d.name) has no port") }
        try await stopAndRemove(d.name)
        return try await cloneAndStart(d, from: g, port: port, phase: phase)
    }

    public func delete(database d: DatabaseRecord) async throws {
        try await stopAndRemove(d.name)
        if let port = d.backendPort { _ = try await catalog.run { try $0.releasePort(port) } }
    }

    public func deleteGeneration(_ g: Generation) async throws {
        try? FileManager.default.removeItem(atPath: generationDir(g))
        try? FileManager.default.removeItem(atPath: dumpPath(g))
    }

    private func cloneAndStart(_ d: DatabaseRecord, from g: Generation, port: Int, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        let dir = instanceDir(d.name)
        try FileManager.default.createDirectory(atPath: "\(dir)/run", withIntermediateDirectories: true)
        try Self.giveToPostgres(dir, recursive: true)
        phase("cloning")
        let method = try await Self.cloneDirectory(from: "\(generationDir(g))/pgdata", to: "\(dir)/pgdata")
        let hba = """
            # DevDB instance: the superuser only over this instance's own socket; the app role over TCP.
            local all postgres trust
            host all all 127.0.0.1/32 scram-sha-256
            host all all ::1/128 scram-sha-256

            """
        try hba.write(toFile: "\(dir)/pgdata/pg_hba.conf", atomically: true, encoding: .utf8)
        try Self.giveToPostgres("\(dir)/pgdata/pg_hba.conf", recursive: false)
        phase("starting")
        try await start(d.name, port: port)
        // The password never appears on a command line: a 0600 file read by psql.
        let sqlFile = "\(dir)/run/set-password.sql"
        FileManager.default.createFile(atPath: sqlFile, contents: Data("ALTER ROLE \(Self.appUser) PASSWORD '\(d.password)';\n".utf8),
                                       attributes: [.posixPermissions: 0o600])
        try Self.giveToPostgres(sqlFile, recursive: false)
        defer { unlink(sqlFile) }
        try await Subprocess.check(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "\(dir)/run", "-p", String(port), "-U", "postgres",
                                    "-d", "postgres", "-f", sqlFile], asPostgres: true, what: "setting the password")
        return InstanceInfo(host: "127.0.0.1", port: port, cloneMethod: method)
    }

    func start(_ name: String, port: Int) async throws {
        let dir = instanceDir(name)
        try await Subprocess.check([tool("pg_ctl"), "-D", "\(dir)/pgdata", "-w", "-t", "60", "-l", "\(dir)/postgres.log", "-o",
                                    "-p \(port) -c listen_addresses=127.0.0.1 -k \(dir)/run -c password_encryption=scram-sha-256",
                                    "start"], asPostgres: true, what: "starting Postgres")
    }

    func isRunning(_ name: String) async -> Bool {
        let out = try? await Subprocess.run([tool("pg_ctl"), "-D", "\(instanceDir(name))/pgdata", "status"], asPostgres: true)
        return out?.status == 0
    }

    private func stopAndRemove(_ name: String) async throws {
        let dir = instanceDir(name)
        if FileManager.default.fileExists(atPath: "\(dir)/pgdata/postmaster.pid") {
            _ = try await Subprocess.run([tool("pg_ctl"), "-D", "\(dir)/pgdata", "-m", "immediate", "-w", "stop"], asPostgres: true)
        }
        if FileManager.default.fileExists(atPath: dir) {
            try FileManager.default.removeItem(atPath: dir)
        }
    }

    /// Copies a stopped data directory, with reflinks when the filesystem supports them.
    /// Returns `reflink` or `copy`.
    public static func cloneDirectory(from source: String, to destination: String) async throws -> String {
        let reflink = await supportsReflink(near: source, destinationDir: (destination as NSString).deletingLastPathComponent)
        try await Subprocess.check(["cp", "-a"] + (reflink ? ["--reflink=always"] : []) + [source, destination], what: "cloning the data directory")
        return reflink ? "reflink" : "copy"
    }

    /// Tries FICLONE (through `cp --reflink=always`) on a small file from `near` into the destination's filesystem.
    static func supportsReflink(near source: String, destinationDir: String) async -> Bool {
        let probe = "\(source)/PG_VERSION"
        let target = "\(destinationDir)/.reflink-probe-\(getpid())"
        defer { unlink(target) }
        let out = try? await Subprocess.run(["cp", "--reflink=always", probe, target])
        return out?.status == 0
    }

    // MARK: recovery

    public func recover(databases: [DatabaseRecord], generations: [Generation]) async throws -> RecoveryReport {
        var report = RecoveryReport()
        let known = Set(databases.map(\.name))
        let present = (try? FileManager.default.contentsOfDirectory(atPath: dataDirectory.appendingPathComponent("instances").path)) ?? []
        for name in present where !known.contains(name) {
            try? await stopAndRemove(name)
            report.orphansRemoved.append(name)
        }
        for d in databases where d.state == .ready || d.state == .unavailable {
            guard let port = d.backendPort, FileManager.default.fileExists(atPath: "\(instanceDir(d.name))/pgdata/PG_VERSION") else {
                report.missing.append(d.name)
                continue
            }
            if await !isRunning(d.name) {
                // A stale postmaster.pid from a crash or reboot would stop pg_ctl start.
                let pidFile = "\(instanceDir(d.name))/pgdata/postmaster.pid"
                if FileManager.default.fileExists(atPath: pidFile) { unlink(pidFile) }
                try await start(d.name, port: port)
                report.restarted.append(d.name)
            }
            report.healthy.append(d.name)
        }
        return report
    }
}
