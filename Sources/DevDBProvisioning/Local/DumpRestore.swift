import DevDBCatalog
import DevDBCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Makes a generation on this machine: fetches the project's dump, restores it by its format into
/// a fresh data directory (pg_restore for archives, psql for plain SQL, with progress), runs the
/// project's after-restore SQL and leaves the directory stopped and synced.
struct DumpRestore: Sendable {
    let layout: LocalDataLayout
    let tools: PostgresTools
    let fetcher: DumpFetcher
    /// pg_restore's -j for the formats that allow it.
    let restoreJobs: Int

    static let appUser = LocalProvisioner.appUser
    static let appDatabase = LocalProvisioner.appDatabase

    /// Fetches the project's dump and restores it into the generation's data directory, which it
    /// leaves stopped and synced; `progress` hears each step and the bytes fetched.
    func seed(project: Project, generation g: Generation, progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        let dump = layout.dumpPath(g)
        defer { unlink(dump) }  // the generation is the restored copy; a failed or cancelled one keeps nothing
        progress("fetching", 0)
        let fetcher = self.fetcher
        let cancelled = CancelFlag()
        try await withTaskCancellationHandler {
            try await BlockingExecutor.processes.run { () throws(DumpError) in
                try fetcher.fetch(project.dumpUrl, to: dump, progress: { bytes in progress("fetching", bytes) }, cancelled: { cancelled.isSet })
            }
        } onCancel: { cancelled.set() }
        try Task.checkCancellation()
        let size = (try? FileManager.default.attributesOfItem(atPath: dump)[.size] as? Int64) ?? 0
        // The format from the bytes, not the name; a file that is no dump fails here, saying what it is.
        let info: DumpInfo
        do { info = try DumpInspector.inspect(file: dump) } catch { throw ProvisioningError(.dumpUnreadable, "\(project.dumpUrl): \(error.description)") }
        if let source = info.sourceMajor, source > g.major {
            throw ProvisioningError(.dumpUnreadable, "the dump was made from PostgreSQL \(source), newer than this generation's \(g.major): it cannot be restored into it")
        }
        let initdb = try tools.tool("initdb", major: g.major)
        let dir = layout.generationDir(g)
        try? await LocalDataLayout.removeTree(dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try LocalDataLayout.giveToPostgres(layout.generationsDir(g.project), recursive: false)
        try LocalDataLayout.giveToPostgres(dir, recursive: false)
        try LocalDataLayout.giveToPostgres(dump, recursive: false)
        progress("initdb", size)
        try await Subprocess.check([initdb, "-D", "\(dir)/pgdata", "-U", "postgres", "--auth-local=peer",
                                    "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"], asPostgres: true, what: "initdb", kind: .postgresStartFailed)
        try PostgresTools.writeAuthentication(pgdata: "\(dir)/pgdata")
        let run = layout.socketDir("g:\(g.project)/\(g.number)")
        try layout.makeSocketDir(run)
        defer { try? FileManager.default.removeItem(atPath: run) }
        // Restore with durability off (the clean shutdown and a sync make the result durable),
        // listening on a socket only.
        try await Subprocess.check([tools.tool("pg_ctl", pgdata: "\(dir)/pgdata"), "-D", "\(dir)/pgdata", "-w", "-t", "120", "-l", "\(dir)/restore.log", "-o",
                                    "-p 5432 -c listen_addresses='' -k \(run) -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c maintenance_work_mem=256MB -c max_wal_size=4GB",
                                    "start"], asPostgres: true, what: "starting Postgres for the restore", kind: .postgresStartFailed)
        do {
            progress("restoring", size)
            try await tools.psql(socket: run, database: "postgres", sql: "CREATE ROLE \(Self.appUser) LOGIN")
            try await tools.psql(socket: run, database: "postgres", sql: "CREATE DATABASE \(Self.appDatabase) OWNER \(Self.appUser)")
            try await restore(dump, info, major: g.major, socket: run, size: size, generationDir: dir, progress: progress)
            progress("analyzing", size)
            try await tools.psql(socket: run, database: Self.appDatabase, sql: "ANALYZE")
            if let sql = project.afterRestoreSql, !sql.isEmpty {
                progress("running the after-restore SQL", size)
                try await runAfterRestore(sql, socket: run)
            }
            progress("stopping", size)
        } catch {
            await Postmasters.stop(pgdata: "\(dir)/pgdata", tools: tools)
            throw error
        }
        try await Subprocess.check([tools.tool("pg_ctl", pgdata: "\(dir)/pgdata"), "-D", "\(dir)/pgdata", "-m", "fast", "-w", "stop"], asPostgres: true, what: "stopping Postgres after the restore", kind: .postgresStartFailed)
        _ = try? await Subprocess.run(["sync", "-f", dir])
    }

    /// Restores `dump` into the app database, by format: archives with pg_restore (see restoreTool)
    /// (parallel where the format allows), plain SQL with psql stopping at the first error.
    func restore(_ dump: String, _ info: DumpInfo, major: Int, socket run: String, size: Int64, generationDir dir: String,
                 progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        let format = info.format
        let pgRestore = [tools.restoreTool("pg_restore", target: major, dumpedBy: info.dumpedBy), "-h", run, "-p", "5432", "-U", "postgres", "-d", Self.appDatabase,
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
            try await Subprocess.check(["tar", "-xf", dump, "-C", unpacked, "--no-same-owner"], what: "unpacking the directory archive", kind: .dumpUnreadable)
            try LocalDataLayout.giveToPostgres(unpacked, recursive: true)
            guard let toc = FileManager.default.enumerator(atPath: unpacked)?.compactMap({ $0 as? String }).first(where: { $0 == "toc.dat" || $0.hasSuffix("/toc.dat") }) else {
                throw ProvisioningError(.dumpUnreadable, "the directory archive has no toc.dat")
            }
            let archive = "\(unpacked)/\(toc)".replacingOccurrences(of: "/toc.dat", with: "")
            try await runPgRestore(pgRestore + ["-j", String(restoreJobs)], archive: archive, logDirectory: dir, size: size, progress: progress)
        case .plain, .plainGzip, .plainZstd:
            try await restorePlain(dump, format, psql: tools.restoreTool("psql", target: major), socket: run, size: size, progress: progress)
        }
    }

    /// pg_restore with `-v`, its progress ("restoring: 40 of 90 items", of the entries `pg_restore
    /// -l` lists) reported every second from its output; a failure says pg_restore's errors, not
    /// its verbose lines.
    func runPgRestore(_ command: [String], archive: String, logDirectory dir: String, size: Int64,
                      progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        let list = try await Subprocess.check([command[0], "-l", archive], asPostgres: true, what: "reading the archive's table of contents", kind: .dumpUnreadable)
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
            throw ProvisioningError(.restoreFailed, "pg_restore failed: \(errors.isEmpty ? out.tail : errors.suffix(6).joined(separator: "\n"))")
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
        let decompressor = format == .plain ? nil : cat
        let names = try await BlockingExecutor.processes.run { () throws(ProvisioningError) in try PlainDumpRoles.read(dump, decompressor: decompressor) }
        let roles = PlainDumpRoles.worthMaking(names, appUser: Self.appUser)
        for role in roles {
            try await tools.psql(socket: run, database: "postgres", sql: "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = \(Self.literal(role))) THEN CREATE ROLE \(Self.identifier(role)) NOLOGIN; END IF; END$$")
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
        guard out.status == 0 else { throw ProvisioningError(.restoreFailed, "restoring the plain SQL dump failed: \(out.tail)") }
        ticker.cancel()
        progress("giving the restored objects to \(Self.appUser)", size)
        let owners = (["postgres"] + roles).map(Self.literal).joined(separator: ", ")
        try await tools.psql(socket: run, database: Self.appDatabase, sql: """
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
            try await tools.psql(socket: run, database: Self.appDatabase, sql: "REASSIGN OWNED BY \(Self.identifier(role)) TO \(Self.appUser)")
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
        try LocalDataLayout.giveToPostgres(file, recursive: false)
        let out = try await Subprocess.run([tools.restoreTool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", socket, "-p", "5432", "-U", "postgres",
                                            "-d", Self.appDatabase, "-c", "SET ROLE \(Self.appUser)", "-f", file], asPostgres: true)
        guard out.status == 0 else {
            throw ProvisioningError(.restoreFailed, "the after-restore SQL failed: " + out.tail.replacingOccurrences(of: "psql:\(file):", with: "line "))
        }
    }
}
