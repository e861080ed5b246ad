import DevDBCatalog
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
///     <data-dir>/instances/<database>/{pgdata,postgres.log}
///     <data-dir>/snapshots/<database>/<snapshot>/pgdata   a stopped copy of an instance
///     <data-dir>/s/<12 hex>/                             unix socket directory, 0700, per instance or seed
///
/// Socket directories are short hashes so every valid database name (up to 63 characters) fits
/// the 107-byte limit of a unix socket path. Local logins: the instance user only, by `peer`
/// (`local all postgres peer map=devdb`); TCP logins by scram-sha-256. No `trust`.
public final class LocalProvisioner: Provisioner, PostgresMajors {
    public var availableMajors: [Int]? { postgres.majors }

    public let kind = "local"
    public let dataDirectory: URL
    /// The PostgreSQL majors this machine runs, and their binaries.
    public let postgres: PostgresInstallations
    private let catalog: Catalog
    private let fetcher: DumpFetcher
    private let portRange: ClosedRange<Int>
    private let restoreJobs: Int

    /// The role and database every instance has (each instance is its own cluster).
    public static let appUser = "app"
    public static let appDatabase = "app"
    /// The OS user instances run as: `postgres` when the API is root (Postgres refuses root).
    public static var instanceOSUser: String {
        if getuid() == 0 { return "postgres" }
        guard let pw = getpwuid(getuid()) else { return "postgres" }
        return String(cString: pw.pointee.pw_name)
    }

    public init(dataDirectory: URL, catalog: Catalog, fetcher: DumpFetcher, portRange: ClosedRange<Int>,
                postgres: PostgresInstallations, restoreJobs: Int = max(2, ProcessInfo.processInfo.activeProcessorCount)) throws {
        self.dataDirectory = dataDirectory.standardizedFileURL
        self.catalog = catalog
        self.fetcher = fetcher
        self.portRange = portRange
        self.postgres = postgres
        guard postgres.newest != nil else {
            throw SubprocessError(description: "no PostgreSQL installation found: install postgresql-15 (Debian) or pass --postgres-bin-dir MAJOR=DIR")
        }
        self.restoreJobs = restoreJobs
        // The longest socket path is <data-dir>/s/<12 hex>/.s.PGSQL.<5 digits>.lock.
        let longest = self.dataDirectory.path.utf8.count + "/s/".count + 12 + "/.s.PGSQL.65535.lock".count
        guard longest <= 107 else {
            throw SubprocessError(description: "--data-dir \(self.dataDirectory.path) is too long for unix socket paths (at most \(107 - longest + self.dataDirectory.path.utf8.count) characters): choose a shorter directory")
        }
        for sub in ["dumps", "generations", "instances", "snapshots", "s"] {
            try FileManager.default.createDirectory(at: dataDirectory.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        // Dumps hold whole databases: only the API's user (and root) may read them.
        chmod(dataDirectory.appendingPathComponent("dumps").path, 0o700)
        try Self.giveToPostgres(dataDirectory.path, recursive: false)
        if getuid() == 0, let check = try? Subprocess.runBlocking(Subprocess.asPostgres(["test", "-w", self.dataDirectory.path])), check.status != 0 {
            throw SubprocessError(description: "the postgres user cannot reach \(self.dataDirectory.path): let it pass through the parent directories (chmod o+x on each) or choose another --data-dir")
        }
        for sub in ["generations", "instances", "snapshots", "s", "dumps"] { try Self.giveToPostgres(dataDirectory.appendingPathComponent(sub).path, recursive: false) }
    }

    // MARK: paths

    func dumpPath(_ g: Generation) -> String { dataDirectory.appendingPathComponent("dumps/\(g.project)-\(g.number).dump").path }
    func generationDir(_ g: Generation) -> String { generationDir(g.project, g.number) }
    func generationDir(_ project: String, _ number: Int) -> String { dataDirectory.appendingPathComponent("generations/\(project)/\(number)").path }
    func instanceDir(_ name: String) -> String { dataDirectory.appendingPathComponent("instances/\(name)").path }
    func snapshotDir(_ s: SnapshotRecord) -> String { dataDirectory.appendingPathComponent("snapshots/\(s.database)/\(s.name)").path }

    /// The stopped data directory a clone source names.
    func sourceDataDirectory(_ source: CloneSource) -> String {
        switch source {
        case .generation(let g): return "\(generationDir(g))/pgdata"
        case .snapshot(let s): return "\(snapshotDir(s))/pgdata"
        }
    }
    /// A short, private socket directory for an instance (`i:<name>`) or a seed (`g:<project>/<n>`).
    func socketDir(_ key: String) -> String { dataDirectory.appendingPathComponent("s/\(Catalog.sha256Hex(key).prefix(12))").path }
    public func socketDirectory(database name: String) -> String { socketDir("i:\(name)") }

    static func giveToPostgres(_ path: String, recursive: Bool) throws {
        guard getuid() == 0 else { return }
        let out = try Subprocess.runBlocking(["chown"] + (recursive ? ["-R"] : []) + ["postgres:postgres", path])
        guard out.status == 0 else { throw SubprocessError(description: "chown \(path): \(out.tail)") }
    }

    /// Makes a 0700 socket directory owned by the instance user.
    func makeSocketDir(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        chmod(path, 0o700)
        try Self.giveToPostgres(path, recursive: false)
    }

    /// A server tool of the data directory's own major (its PG_VERSION), else of the newest.
    func tool(_ name: String, pgdata: String) -> String {
        let major = PostgresInstallations.major(ofDataDirectory: pgdata)
        return "\(major.flatMap(postgres.bin) ?? postgres.bin(postgres.newest!)!)/\(name)"
    }

    /// A tool of one major (initdb of a new generation).
    func tool(_ name: String, major: Int) throws -> String {
        if let problem = postgres.problem(with: major) { throw SubprocessError(description: "\(problem.message): \(problem.hint)") }
        return "\(postgres.bin(major)!)/\(name)"
    }

    /// Client tools for restores: the target major's own when it can read the archive (one made
    /// by a pg_dump no newer than it), else the oldest installed one that can. (A newer pg_restore
    /// sends settings an older server does not know, such as 17's transaction_timeout.)
    func restoreTool(_ name: String, target: Int? = nil, dumpedBy: String? = nil) -> String {
        let needed = dumpedBy.flatMap(DumpInspector.major(of:)) ?? 0
        let major = target.flatMap { t in t >= needed ? postgres.bin(t).map { _ in t } : nil }
            ?? postgres.majors.first(where: { $0 >= max(needed, target ?? 0) }) ?? postgres.newest!
        return "\(postgres.bin(major)!)/\(name)"
    }

    /// Local logins by peer for the instance user only, TCP by password. Written into every data
    /// directory this provisioner starts.
    func writeAuthentication(pgdata: String) throws {
        let hba = """
            # DevDB: the superuser only over this instance's own 0700 socket, as the OS user \(Self.instanceOSUser) (peer);
            # everyone else over TCP with a password. No trust.
            local all postgres peer map=devdb
            host all all 127.0.0.1/32 scram-sha-256
            host all all ::1/128 scram-sha-256

            """
        try hba.write(toFile: "\(pgdata)/pg_hba.conf", atomically: true, encoding: .utf8)
        try "devdb \(Self.instanceOSUser) postgres\n".write(toFile: "\(pgdata)/pg_ident.conf", atomically: true, encoding: .utf8)
        for f in ["pg_hba.conf", "pg_ident.conf"] {
            chmod("\(pgdata)/\(f)", 0o600)
            try Self.giveToPostgres("\(pgdata)/\(f)", recursive: false)
        }
    }

    // MARK: seeding

    public func seed(project: Project, generation g: Generation, progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        let dump = dumpPath(g)
        defer { unlink(dump) }  // the generation is the restored copy; a failed or cancelled one keeps nothing
        progress("fetching", 0)
        let fetcher = self.fetcher
        let cancelled = CancelFlag()
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (cont: CheckedContinuation<Void, any Error>) in
                DispatchQueue.global().async {
                    do {
                        try fetcher.fetch(project.dumpUrl, to: dump, progress: { bytes in progress("fetching", bytes) },
                                          cancelled: { cancelled.isSet })
                        cont.resume()
                    } catch { cont.resume(throwing: error) }
                }
            }
        } onCancel: { cancelled.set() }
        try Task.checkCancellation()
        let size = (try? FileManager.default.attributesOfItem(atPath: dump)[.size] as? Int64) ?? 0
        // The format from the bytes, not the name; a file that is no dump fails here, saying what it is.
        let info: DumpInfo
        do { info = try DumpInspector.inspect(file: dump) } catch { throw SubprocessError(description: "\(project.dumpUrl): \(error.description)") }
        if let source = info.sourceMajor, source > g.major {
            throw SubprocessError(description: "the dump was made from PostgreSQL \(source), newer than this generation's \(g.major): it cannot be restored into it")
        }
        let initdb = try tool("initdb", major: g.major)
        let dir = generationDir(g)
        try? await Self.removeTree(dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Self.giveToPostgres(dataDirectory.appendingPathComponent("generations/\(g.project)").path, recursive: false)
        try Self.giveToPostgres(dir, recursive: false)
        try Self.giveToPostgres(dump, recursive: false)
        progress("initdb", size)
        try await Subprocess.check([initdb, "-D", "\(dir)/pgdata", "-U", "postgres", "--auth-local=peer",
                                    "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"], asPostgres: true, what: "initdb")
        try writeAuthentication(pgdata: "\(dir)/pgdata")
        let run = socketDir("g:\(g.project)/\(g.number)")
        try makeSocketDir(run)
        defer { try? FileManager.default.removeItem(atPath: run) }
        // Restore with durability off (the clean shutdown and a sync make the result durable),
        // listening on a socket only.
        try await Subprocess.check([tool("pg_ctl", pgdata: "\(dir)/pgdata"), "-D", "\(dir)/pgdata", "-w", "-t", "120", "-l", "\(dir)/restore.log", "-o",
                                    "-p 5432 -c listen_addresses='' -k \(run) -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c maintenance_work_mem=256MB -c max_wal_size=4GB",
                                    "start"], asPostgres: true, what: "starting Postgres for the restore")
        do {
            progress("restoring", size)
            try await psql(socket: run, database: "postgres", sql: "CREATE ROLE \(Self.appUser) LOGIN")
            try await psql(socket: run, database: "postgres", sql: "CREATE DATABASE \(Self.appDatabase) OWNER \(Self.appUser)")
            try await restore(dump, info, major: g.major, socket: run, size: size, generationDir: dir, progress: progress)
            progress("analyzing", size)
            try await psql(socket: run, database: Self.appDatabase, sql: "ANALYZE")
            if let sql = project.afterRestoreSql, !sql.isEmpty {
                progress("running the after-restore SQL", size)
                try await runAfterRestore(sql, socket: run)
            }
            progress("stopping", size)
        } catch {
            await stopPostmaster(pgdata: "\(dir)/pgdata")
            throw error
        }
        try await Subprocess.check([tool("pg_ctl", pgdata: "\(dir)/pgdata"), "-D", "\(dir)/pgdata", "-m", "fast", "-w", "stop"], asPostgres: true, what: "stopping Postgres after the restore")
        _ = try? await Subprocess.run(["sync", "-f", dir])
    }

    /// Restores `dump` into the app database, by format: archives with pg_restore (see restoreTool)
    /// (parallel where the format allows), plain SQL with psql stopping at the first error.
    func restore(_ dump: String, _ info: DumpInfo, major: Int, socket run: String, size: Int64, generationDir dir: String,
                 progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        let format = info.format
        let pgRestore = [restoreTool("pg_restore", target: major, dumpedBy: info.dumpedBy), "-h", run, "-p", "5432", "-U", "postgres", "-d", Self.appDatabase,
                         "--no-owner", "--no-privileges", "--role=\(Self.appUser)"]
        switch format {
        case .custom:
            try await runPgRestore(pgRestore + ["-j", String(restoreJobs)], archive: dump, logDirectory: dir, size: size, progress: progress)
        case .tar:
            try await runPgRestore(pgRestore, archive: dump, logDirectory: dir, size: size, progress: progress)
        case .directoryTar:
            progress("unpacking the directory archive", size)
            let unpacked = "\(dir)/dump"
            try FileManager.default.createDirectory(atPath: unpacked, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            defer { try? FileManager.default.removeItem(atPath: unpacked) }
            try await Subprocess.check(["tar", "-xf", dump, "-C", unpacked, "--no-same-owner"], what: "unpacking the directory archive")
            try Self.giveToPostgres(unpacked, recursive: true)
            guard let toc = FileManager.default.enumerator(atPath: unpacked)?.compactMap({ $0 as? String }).first(where: { $0 == "toc.dat" || $0.hasSuffix("/toc.dat") }) else {
                throw SubprocessError(description: "the directory archive has no toc.dat")
            }
            let archive = "\(unpacked)/\(toc)".replacingOccurrences(of: "/toc.dat", with: "")
            try await runPgRestore(pgRestore + ["-j", String(restoreJobs)], archive: archive, logDirectory: dir, size: size, progress: progress)
        case .plain, .plainGzip, .plainZstd:
            try await restorePlain(dump, format, psql: restoreTool("psql", target: major), socket: run, size: size, progress: progress)
        }
    }

    /// pg_restore with `-v`, its progress ("restoring: 40 of 90 items", of the entries `pg_restore
    /// -l` lists) reported every second from its output; a failure says pg_restore's errors, not
    /// its verbose lines.
    func runPgRestore(_ command: [String], archive: String, logDirectory dir: String, size: Int64,
                      progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        let list = try await Subprocess.check([command[0], "-l", archive], asPostgres: true, what: "reading the archive's table of contents")
        let toc = RestoreProgress.tocEntries(list.output)
        progress(RestoreProgress(done: 0, total: toc.count).phase, size)
        let log = "\(dir)/pg_restore.log"
        defer { unlink(log) }
        let ticker = Task {
            var last = 0
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                guard let text = try? String(contentsOfFile: log, encoding: .utf8) else { continue }
                let p = RestoreProgress.read(verbose: text, toc: toc)
                if p.done != last { last = p.done; progress(p.phase, size) }
            }
        }
        defer { ticker.cancel() }
        let out = try await Subprocess.run(command + ["-v", archive], asPostgres: true, outputPath: log)
        ticker.cancel()
        guard out.status == 0 else {
            let errors = out.output.split(separator: "\n").filter { !$0.hasPrefix("pg_restore: ") || $0.contains("error") || $0.contains("warning") }
            throw SubprocessError(description: "pg_restore failed: \(errors.isEmpty ? out.tail : errors.suffix(6).joined(separator: "\n"))")
        }
        progress(RestoreProgress(done: toc.count, total: toc.count).phase, size)
    }

    /// Plain SQL: the roles it names (owners, grantees) are made first, as roles without login,
    /// so its ALTER ... OWNER and GRANT statements succeed; it runs as the superuser with
    /// ON_ERROR_STOP; then everything those roles or the superuser own in the app database is
    /// given to the app user, as pg_restore --no-owner would have. Progress is how far the
    /// reader (psql, gzip or zstd) is in the dump file.
    func restorePlain(_ dump: String, _ format: DumpFormat, psql psqlTool: String, socket run: String, size: Int64,
                      progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        let cat: String
        switch format {
        case .plainGzip: cat = "gzip -dc"
        case .plainZstd: cat = "zstd -dcq"
        default: cat = "cat"
        }
        progress("reading the roles the SQL names", size)
        let names = try await Subprocess.run(["sh", "-c", "\(cat) < \"$1\" | grep -oE '(OWNER TO|GRANT [A-Za-z, ]+ ON [^;]+ TO) [^;]+;' | grep -oE 'TO [^;]+;' | sed -E 's/^TO //; s/;$//' | tr ',' '\\n' | sed -E 's/^ +//; s/ +$//' | sort -u", "sh", dump])
        let reserved: Set<String> = ["postgres", "public", "CURRENT_USER", "SESSION_USER", "CURRENT_ROLE", Self.appUser]
        let roles = names.output.split(separator: "\n").map { $0.replacingOccurrences(of: "\"", with: "") }
            .filter { !$0.isEmpty && !reserved.contains($0) && $0.count <= 63 && !$0.contains(" ") && !$0.hasPrefix("pg_") }
        for role in roles {
            try await psql(socket: run, database: "postgres", sql: "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = \(Self.literal(role))) THEN CREATE ROLE \(Self.identifier(role)) NOLOGIN; END IF; END$$")
        }
        progress("restoring plain SQL", size)
        let psqlCommand = "\(psqlTool) -X -q -v ON_ERROR_STOP=1 -h \(run) -p 5432 -U postgres -d \(Self.appDatabase)"
        let script = format == .plain ? "\(psqlCommand) -f \"$1\"" : "set -o pipefail; \(cat) < \"$1\" | \(psqlCommand)"
        let ticker = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                if let read = Self.readPosition(of: dump), size > 0 {
                    let percent = Int(Double(read) * 100 / Double(size))
                    progress("restoring plain SQL: \(percent)% (\(read / 1_048_576) of \(size / 1_048_576) MiB read)", size)
                }
            }
        }
        defer { ticker.cancel() }
        let out = try await Subprocess.run(["bash", "-c", script, "bash", dump], asPostgres: true)
        guard out.status == 0 else { throw SubprocessError(description: "restoring the plain SQL dump failed: \(out.tail)") }
        ticker.cancel()
        progress("giving the restored objects to \(Self.appUser)", size)
        let owners = (["postgres"] + roles).map(Self.literal).joined(separator: ", ")
        try await psql(socket: run, database: Self.appDatabase, sql: """
            DO $$DECLARE r record; BEGIN
              FOR r IN SELECT n.nspname FROM pg_namespace n WHERE pg_get_userbyid(n.nspowner) IN (\(owners))
                        AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' LOOP
                EXECUTE format('ALTER SCHEMA %I OWNER TO \(Self.appUser)', r.nspname);
              END LOOP;
              FOR r IN SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE pg_get_userbyid(c.relowner) IN (\(owners)) AND c.relkind IN ('r','p','v','m','S','f')
                          AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
                          AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a','i'))) LOOP
                EXECUTE format('ALTER %s %I.%I OWNER TO \(Self.appUser)',
                  CASE r.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                  r.nspname, r.relname);
              END LOOP;
            END$$
            """)
        for role in roles {
            try await psql(socket: run, database: Self.appDatabase, sql: "REASSIGN OWNED BY \(Self.identifier(role)) TO \(Self.appUser)")
        }
    }

    /// How far some process reading `path` is in it (from /proc/<pid>/fdinfo), or nil.
    static func readPosition(of path: String) -> Int64? {
        guard let pids = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for pid in pids where pid.allSatisfy(\.isNumber) {
            guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { continue }
            for fd in fds {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"), target == path,
                      let info = try? String(contentsOfFile: "/proc/\(pid)/fdinfo/\(fd)", encoding: .utf8),
                      let line = info.split(separator: "\n").first(where: { $0.hasPrefix("pos:") }) else { continue }
                return Int64(line.dropFirst(4).trimmingCharacters(in: .whitespaces))
            }
        }
        return nil
    }

    static func literal(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "''") + "'" }
    static func identifier(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    /// Runs the project's after-restore SQL as the database owner, stopping at the first error,
    /// from a 0600 file in the private socket directory (it may hold salts). Errors name the line.
    func runAfterRestore(_ sql: String, socket: String) async throws {
        let file = "\(socket)/after-restore.sql"
        FileManager.default.createFile(atPath: file, contents: Data(sql.utf8), attributes: [.posixPermissions: 0o600])
        defer { unlink(file) }
        try Self.giveToPostgres(file, recursive: false)
        let out = try await Subprocess.run([restoreTool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", socket, "-p", "5432", "-U", "postgres",
                                            "-d", Self.appDatabase, "-c", "SET ROLE \(Self.appUser)", "-f", file], asPostgres: true)
        guard out.status == 0 else {
            throw SubprocessError(description: "the after-restore SQL failed: " + out.tail.replacingOccurrences(of: "psql:\(file):", with: "line "))
        }
    }

    func psql(socket: String, database: String, sql: String) async throws {
        try await Subprocess.check([restoreTool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", socket, "-p", "5432", "-U", "postgres",
                                    "-d", database, "-c", sql], asPostgres: true, what: "psql")
    }

    // MARK: instances

    public func create(database d: DatabaseRecord, from source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        try await stopAndRemove(d.name)  // what an attempt interrupted by a restart left
        let port = try await leaseFreePort(for: d)
        do {
            return try await cloneAndStart(d, from: source, port: port, phase: phase)
        } catch {
            try? await stopAndRemove(d.name)
            throw error
        }
    }

    /// Leases a port that nothing else on the machine listens on (a lease in Redis alone does not
    /// know about other programs), recorded on the database in the same transaction. A database
    /// that has a port (a resumed create) keeps it while it is free.
    func leaseFreePort(for d: DatabaseRecord) async throws -> Int {
        let name = d.name
        if let mine = d.backendPort, Self.isFree(mine), try await catalog.run({ try $0.claimPort(mine, for: name) }) { return mine }
        let leased = try await catalog.run { try $0.portOwners() }
        for port in portRange where leased[port] == nil && Self.isFree(port) {
            if try await catalog.run({ try $0.claimPort(port, for: name) }) { return port }
        }
        throw SubprocessError(description: "no free port left in \(portRange.lowerBound)-\(portRange.upperBound); delete databases or widen --port-range")
    }

    /// True when nothing listens on 127.0.0.1:`port` (we can bind it ourselves).
    static func isFree(_ port: Int) -> Bool {
        guard let fd = try? Sockets.listen(on: SocketAddress(host: .v4([127, 0, 0, 1]), port: UInt16(port)), backlog: 1) else { return false }
        SocketIO.close(fd)
        return true
    }

    /// The instance made again from `source`, on the port it has.
    public func reset(database d: DatabaseRecord, to source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        guard d.backendPort != nil else { throw SubprocessError(description: "database \(d.name) has no port") }
        return try await create(database: d, from: source, phase: phase)
    }

    public func delete(database d: DatabaseRecord) async throws {
        try await stopAndRemove(d.name)
    }

    public func removeInstance(database d: DatabaseRecord) async throws {
        try await stopAndRemove(d.name)
    }

    public func deleteGeneration(_ g: Generation) async throws {
        await stopPostmaster(pgdata: "\(generationDir(g))/pgdata")
        try await Self.removeTree(generationDir(g))
        try? FileManager.default.removeItem(atPath: socketDir("g:\(g.project)/\(g.number)"))
        unlink(dumpPath(g))
        let projectDir = dataDirectory.appendingPathComponent("generations/\(g.project)").path
        if (try? FileManager.default.contentsOfDirectory(atPath: projectDir))?.isEmpty == true { try? FileManager.default.removeItem(atPath: projectDir) }
    }

    private func cloneAndStart(_ d: DatabaseRecord, from source: CloneSource, port: Int, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        let dir = instanceDir(d.name)
        let from = sourceDataDirectory(source)
        guard FileManager.default.fileExists(atPath: "\(from)/PG_VERSION") else {
            throw SubprocessError(description: "\(source.description) has no data on this machine (\(from)); reset to another one or --latest")
        }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try Self.giveToPostgres(dir, recursive: false)
        phase("cloning")
        let method = try await Self.cloneDirectory(from: from, to: "\(dir)/pgdata")
        try writeAuthentication(pgdata: "\(dir)/pgdata")
        phase("starting")
        try await start(d.name, port: port)
        // The password never appears on a command line: a 0600 file in the private socket directory, read by psql.
        let sqlFile = "\(socketDirectory(database: d.name))/set-password.sql"
        FileManager.default.createFile(atPath: sqlFile, contents: Data("ALTER ROLE \(Self.appUser) PASSWORD '\(d.password)';\n".utf8),
                                       attributes: [.posixPermissions: 0o600])
        try Self.giveToPostgres(sqlFile, recursive: false)
        defer { unlink(sqlFile) }
        try await Subprocess.check([restoreTool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", socketDirectory(database: d.name), "-p", String(port), "-U", "postgres",
                                    "-d", "postgres", "-f", sqlFile], asPostgres: true, what: "setting the password")
        return InstanceInfo(host: "127.0.0.1", port: port, cloneMethod: method)
    }

    // MARK: snapshots

    /// Stops the instance (fast: sessions are ended, a clean shutdown checkpoint is written),
    /// clones its data directory (reflink where the filesystem can: sub-second; a copy elsewhere),
    /// and starts it again on its port. Taken again from scratch if an earlier try was interrupted.
    public func snapshot(database d: DatabaseRecord, as s: SnapshotRecord) async throws -> SnapshotOutcome {
        guard let port = d.backendPort else { throw SnapshotFailure("database \(d.name) has no instance", instanceRunning: false) }
        let pgdata = "\(instanceDir(d.name))/pgdata"
        let target = snapshotDir(s)
        try? await Self.removeTree(target)  // what an interrupted try left (and its cp, if it still runs)
        do {
            try FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            try Self.giveToPostgres(dataDirectory.appendingPathComponent("snapshots/\(s.database)").path, recursive: false)
            try Self.giveToPostgres(target, recursive: false)
        } catch { throw SnapshotFailure("cannot make \(target): \(error)", instanceRunning: await isRunning(d.name)) }
        let stopped = monotonicNow()
        if await isRunning(d.name) {
            do {
                try await Subprocess.check([tool("pg_ctl", pgdata: pgdata), "-D", pgdata, "-m", "fast", "-w", "-t", "60", "stop"], asPostgres: true, what: "stopping Postgres for the snapshot")
            } catch {
                try? await Self.removeTree(target)
                throw SnapshotFailure("\(error)", instanceRunning: await isRunning(d.name))
            }
        }
        var failure: String?
        var method = "copy"
        do { method = try await Self.cloneDirectory(from: pgdata, to: "\(target)/pgdata") } catch { failure = "\(error)" }
        if d.operation?.asleep == true {
            // It was asleep (stopped cleanly): it stays so.
            if let failure { try? await Self.removeTree(target); throw SnapshotFailure(failure, instanceRunning: false) }
            let size = try? await Subprocess.run(["du", "-sb", target])
            return SnapshotOutcome(method: method, sizeBytes: size.flatMap { Int64($0.output.split(separator: "\t").first ?? "") }, unavailableSeconds: 0)
        }
        do { try await start(d.name, port: port) } catch {
            try? await Self.removeTree(target)
            throw SnapshotFailure("\(failure.map { $0 + "; " } ?? "")starting Postgres again failed: \(error)", instanceRunning: false)
        }
        let unavailable = monotonicNow() - stopped
        if let failure {
            try? await Self.removeTree(target)
            throw SnapshotFailure(failure, instanceRunning: true)
        }
        let size = try? await Subprocess.run(["du", "-sb", target])
        return SnapshotOutcome(method: method, sizeBytes: size.flatMap { Int64($0.output.split(separator: "\t").first ?? "") },
                               unavailableSeconds: unavailable)
    }

    // MARK: hibernation

    /// `pg_ctl stop -m fast`: sessions end, a shutdown checkpoint is written.
    public func stop(database d: DatabaseRecord) async throws {
        if await isRunning(d.name) {
            try await Subprocess.check([tool("pg_ctl", pgdata: "\(instanceDir(d.name))/pgdata"), "-D", "\(instanceDir(d.name))/pgdata", "-m", "fast", "-w", "-t", "60", "stop"],
                                       asPostgres: true, what: "stopping Postgres to hibernate")
        }
    }

    public func start(database d: DatabaseRecord) async throws -> InstanceInfo {
        guard let port = d.backendPort, FileManager.default.fileExists(atPath: "\(instanceDir(d.name))/pgdata/PG_VERSION") else {
            throw SubprocessError(description: "its data directory is gone; run \"devdb db reset \(d.name)\"")
        }
        if await !isRunning(d.name) {
            let pidFile = "\(instanceDir(d.name))/pgdata/postmaster.pid"
            if FileManager.default.fileExists(atPath: pidFile) { unlink(pidFile) }
            try await start(d.name, port: port)
        }
        return InstanceInfo(host: "127.0.0.1", port: port, cloneMethod: d.cloneMethod ?? "copy", note: d.note)
    }

    public func deleteSnapshot(_ s: SnapshotRecord) async throws {
        try await Self.removeTree(snapshotDir(s))
        let parent = dataDirectory.appendingPathComponent("snapshots/\(s.database)").path
        if (try? FileManager.default.contentsOfDirectory(atPath: parent))?.isEmpty == true { try? FileManager.default.removeItem(atPath: parent) }
    }

    func start(_ name: String, port: Int) async throws {
        let dir = instanceDir(name)
        let sockets = socketDirectory(database: name)
        try makeSocketDir(sockets)
        try await Subprocess.check([tool("pg_ctl", pgdata: "\(dir)/pgdata"), "-D", "\(dir)/pgdata", "-w", "-t", "60", "-l", "\(dir)/postgres.log", "-o",
                                    "-p \(port) -c listen_addresses=127.0.0.1 -k \(sockets) -c password_encryption=scram-sha-256",
                                    "start"], asPostgres: true, what: "starting Postgres")
    }

    func isRunning(_ name: String) async -> Bool {
        let out = try? await Subprocess.run([tool("pg_ctl", pgdata: "\(instanceDir(name))/pgdata"), "-D", "\(instanceDir(name))/pgdata", "status"], asPostgres: true)
        return out?.status == 0
    }

    private func stopAndRemove(_ name: String) async throws {
        let dir = instanceDir(name)
        await stopPostmaster(pgdata: "\(dir)/pgdata")
        try await Self.removeTree(dir)
        try? FileManager.default.removeItem(atPath: socketDirectory(database: name))
    }

    /// Removes a directory tree for good. Helpers an API killed mid-work left running (a `cp -a`
    /// still filling it) are stopped first, and `rm -rf` tolerates entries that vanish underneath
    /// it (a reconcile removing the same orphan); tried a few times.
    static func removeTree(_ dir: String) async throws {
        for attempt in 0..<5 {
            Postmasters.killHelpers(mentioning: dir + "/")
            guard FileManager.default.fileExists(atPath: dir) else { return }
            let out = try await Subprocess.run(["rm", "-rf", dir])
            if out.status == 0 && !FileManager.default.fileExists(atPath: dir) { return }
            if attempt == 4 { throw SubprocessError(description: "cannot remove \(dir): \(out.tail)") }
            try? await Task.sleep(for: .milliseconds(200 * (attempt + 1)))
        }
    }

    /// Stops the postmaster of `pgdata` however it can: `pg_ctl stop -m immediate`, then the pid
    /// in `postmaster.pid` (checked to be that postmaster), then any postmaster whose command
    /// line names this data directory (its directory may be gone already).
    func stopPostmaster(pgdata: String) async {
        if FileManager.default.fileExists(atPath: "\(pgdata)/postmaster.pid") {
            _ = try? await Subprocess.run([tool("pg_ctl", pgdata: pgdata), "-D", pgdata, "-m", "immediate", "-w", "-t", "10", "stop"], asPostgres: true)
        }
        for p in Postmasters.list() where p.dataDirectory == pgdata { await Postmasters.stop(p.pid) }
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

    /// Whether a catalog entry still wants the instance `name` (read again now: the snapshot
    /// the reconcile started from may predate a database created since).
    private func instanceWanted(_ name: String) async -> Bool {
        do {
            guard let d = try await catalog.run({ try $0.database(name) }) else { return false }
            return d.state != .failed
        } catch { return true }  // Redis away: remove nothing
    }

    /// Whether the generation exists (`seeding`: and is being restored now).
    private func generationWanted(_ project: String, _ number: Int, seeding: Bool = false) async -> Bool {
        do {
            guard let g = try await catalog.run({ try $0.generation(project, number) }) else { return false }
            return !seeding || GenerationLifecycle.isSeeding(g)
        } catch { return true }
    }

    public func recover(databases: [DatabaseRecord], generations: [Generation], snapshots: [SnapshotRecord]) async throws -> RecoveryReport {
        var report = RecoveryReport()
        let fm = FileManager.default
        // Snapshot directories without a record (a delete interrupted after its commit), and
        // ready records whose directory is gone.
        let knownSnapshots = Set(snapshots.map(\.reference))
        let snapshotsRoot = dataDirectory.appendingPathComponent("snapshots").path
        for db in (try? fm.contentsOfDirectory(atPath: snapshotsRoot)) ?? [] {
            for snap in (try? fm.contentsOfDirectory(atPath: "\(snapshotsRoot)/\(db)")) ?? [] where !knownSnapshots.contains("\(db)@\(snap)") {
                let wanted: Bool
                do { wanted = try await catalog.run({ try $0.snapshot(db, snap) }) != nil } catch { continue }
                guard !wanted else { continue }
                try? await deleteSnapshot(SnapshotRecord(database: db, name: snap, owner: "", project: "", generation: nil))
                report.orphansRemoved.append("snapshot \(db)@\(snap)")
            }
        }
        for s in snapshots where s.state == .ready && !fm.fileExists(atPath: "\(snapshotDir(s))/pgdata/PG_VERSION") {
            report.missingSnapshots.append(s)
        }
        let wantedNow = Set(databases.filter { $0.state != .failed }.map(\.name))
        // Instance directories and processes no record wants (failed databases keep none).
        for name in (try? fm.contentsOfDirectory(atPath: dataDirectory.appendingPathComponent("instances").path)) ?? []
        where !wantedNow.contains(name) {
            guard await !instanceWanted(name) else { continue }
            try? await stopAndRemove(name)
            report.orphansRemoved.append("instance \(name)")
        }
        // Generation directories without a generation record.
        let known = Set(generations.map { "\($0.project)/\($0.number)" })
        let generationsRoot = dataDirectory.appendingPathComponent("generations").path
        for project in (try? fm.contentsOfDirectory(atPath: generationsRoot)) ?? [] {
            for entry in (try? fm.contentsOfDirectory(atPath: "\(generationsRoot)/\(project)")) ?? [] where !known.contains("\(project)/\(entry)") {
                guard let n = Int(entry), await !generationWanted(project, n) else { continue }
                try? await deleteGeneration(Generation(project: project, number: n))
                report.orphansRemoved.append("generation \(project)/\(n)")
            }
        }
        // Postmasters under the data directory that nothing wants: their directory is gone, or
        // no record or seeding generation names it.
        let instancesRoot = dataDirectory.appendingPathComponent("instances").path + "/"
        for p in Postmasters.list() where p.dataDirectory.hasPrefix(dataDirectory.path + "/") {
            let rest = p.dataDirectory
            var wanted = false
            if rest.hasPrefix(instancesRoot), rest.hasSuffix("/pgdata") {
                let name = String(rest.dropFirst(instancesRoot.count).dropLast("/pgdata".count))
                if fm.fileExists(atPath: rest) { wanted = wantedNow.contains(name) ? true : await instanceWanted(name) }
            } else if rest.hasPrefix(generationsRoot + "/"), rest.hasSuffix("/pgdata") {
                let parts = rest.dropFirst(generationsRoot.count + 1).dropLast("/pgdata".count).split(separator: "/")
                if parts.count == 2, let n = Int(parts[1]), fm.fileExists(atPath: rest) {
                    wanted = await generationWanted(String(parts[0]), n, seeding: true)
                }
            }
            guard !wanted else { continue }
            await Postmasters.stop(p.pid)
            report.orphansRemoved.append("postgres process \(p.pid) (\(p.dataDirectory))")
        }
        for d in databases where d.state == .ready || d.state == .unavailable {
            guard let port = d.backendPort, fm.fileExists(atPath: "\(instanceDir(d.name))/pgdata/PG_VERSION") else {
                report.missing.append(d.name)
                continue
            }
            if await !isRunning(d.name) {
                // A stale postmaster.pid from a crash or reboot would stop pg_ctl start.
                let pidFile = "\(instanceDir(d.name))/pgdata/postmaster.pid"
                if fm.fileExists(atPath: pidFile) { unlink(pidFile) }
                try? writeAuthentication(pgdata: "\(instanceDir(d.name))/pgdata")
                do { try await start(d.name, port: port) } catch {
                    report.unhealthy[d.name] = "its Postgres does not start: \(error)"
                    continue
                }
                report.restarted.append(d.name)
            }
            report.healthy.append(d.name)
        }
        return report
    }
}

/// A flag set from a cancellation handler and read by a libcurl callback.
public final class CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func set() { flag.store(true, ordering: .relaxed) }
    public var isSet: Bool { flag.load(ordering: .relaxed) }
}

/// Postmasters on this machine, found through /proc: a postmaster's command line keeps the
/// `-D <data directory>` pg_ctl started it with (its children rename themselves).
enum Postmasters {
    struct Entry { let pid: pid_t; let dataDirectory: String }

    static func list() -> [Entry] {
        var out: [Entry] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), let argv = commandLine(pid), let first = argv.first,
                  (first as NSString).lastPathComponent == "postgres", let i = argv.firstIndex(of: "-D"), i + 1 < argv.count else { continue }
            out.append(Entry(pid: pid, dataDirectory: URL(fileURLWithPath: argv[i + 1]).standardizedFileURL.path))
        }
        return out
    }

    static func commandLine(_ pid: pid_t) -> [String]? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return nil }
        return data.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }.filter { !$0.isEmpty }
    }

    /// Kills processes other than postmasters whose command line names `path` (a `cp -a` into an
    /// instance directory started by an API that was killed).
    static func killHelpers(mentioning path: String) {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), pid != getpid(), let argv = commandLine(pid), let first = argv.first,
                  (first as NSString).lastPathComponent != "postgres", !argv.contains("-D"),
                  argv.contains(where: { $0.hasPrefix(path) || $0 + "/" == path }) else { continue }
            kill(pid, SIGKILL)
        }
    }

    /// SIGQUIT (immediate shutdown: the postmaster stops its children), then SIGKILL if it stays.
    static func stop(_ pid: pid_t) async {
        guard commandLine(pid) != nil else { return }
        kill(pid, SIGQUIT)
        for _ in 0..<50 {
            if commandLine(pid) == nil { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
        kill(pid, SIGKILL)
    }
}
