import DevDBCatalog
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Schema-only databases (`--schema-only`): a generation's data directory without rows, made
/// the first time one is asked for and kept next to the generation
/// (`generations/<project>/<n>/schema-only/pgdata`, removed with it); databases are cloned from
/// it like from the generation itself. It is made on a temporary instance under `scratch/`
/// (LocalQuery.swift): every table of the database (not those of extensions, whose rows are
/// part of the extension) is truncated with its sequences restarted, other sequences are
/// restarted, materialized views are emptied (`WITH NO DATA`), large objects removed; then it
/// is stopped cleanly and moved into place in one rename. Two creates that race both make one;
/// the first rename wins and the other is thrown away.
extension LocalProvisioner {
    static let emptyingSQL = #"""
        DO $devdb$
        DECLARE
          tables text;
          r record;
        BEGIN
          SELECT string_agg(c.oid::regclass::text, ', ') INTO tables
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'
            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e');
          IF tables IS NOT NULL THEN
            EXECUTE 'TRUNCATE ' || tables || ' RESTART IDENTITY CASCADE';
          END IF;
          FOR r IN SELECT c.oid::regclass::text AS name, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE c.relkind IN ('S', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
          LOOP
            IF r.relkind = 'S' THEN
              EXECUTE 'ALTER SEQUENCE ' || r.name || ' RESTART';
            ELSE
              EXECUTE 'REFRESH MATERIALIZED VIEW ' || r.name || ' WITH NO DATA';
            END IF;
          END LOOP;
          PERFORM lo_unlink(oid) FROM pg_largeobject_metadata;
        END
        $devdb$;
        """#

    func schemaOnlyDataDirectory(_ g: Generation, phase: @escaping @Sendable (String) -> Void) async throws -> String {
        let home = "\(layout.generationDir(g))/schema-only"
        if FileManager.default.fileExists(atPath: "\(home)/pgdata/PG_VERSION") { return "\(home)/pgdata" }
        let source = "\(layout.generationDir(g))/pgdata"
        guard FileManager.default.fileExists(atPath: "\(source)/PG_VERSION") else {
            throw ProvisioningError(.sourceUnavailable, "generation \(g.number) of \(g.project) has no data on this machine")
        }
        phase("making the schema-only copy of generation \(g.number)")
        let id = UUID().uuidString.lowercased().prefix(12)
        let dir = "\(layout.path("scratch"))/\(id)"
        let sockets = layout.socketDir("x:\(id)")
        activeScratch.withLock { _ = $0.insert(dir) }
        defer { activeScratch.withLock { _ = $0.remove(dir) } }
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try LocalDataLayout.giveToPostgres(layout.path("scratch"), recursive: false)
            try LocalDataLayout.giveToPostgres(dir, recursive: false)
            _ = try await LocalDataLayout.cloneDirectory(from: source, to: "\(dir)/pgdata")
            try PostgresTools.writeAuthentication(pgdata: "\(dir)/pgdata")
            try layout.makeSocketDir(sockets)
            let pgCtl = tools.tool("pg_ctl", pgdata: "\(dir)/pgdata")
            try await Subprocess.check([pgCtl, "-D", "\(dir)/pgdata", "-w", "-t", "60", "-l", "\(dir)/postgres.log", "-o",
                                        "-p 5432 -c listen_addresses= -k \(sockets)", "start"], asPostgres: true, what: "starting a temporary instance of generation \(g.number)")
            try await Subprocess.check([tools.restoreTool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", sockets, "-p", "5432", "-U", "postgres",
                                        "-d", Self.appDatabase, "-c", Self.emptyingSQL, "-c", "CHECKPOINT"], asPostgres: true, what: "emptying the tables")
            try await Subprocess.check([pgCtl, "-D", "\(dir)/pgdata", "-m", "fast", "-w", "-t", "60", "stop"], asPostgres: true, what: "stopping the temporary instance")
            try FileManager.default.createDirectory(atPath: home, withIntermediateDirectories: true)
            try LocalDataLayout.giveToPostgres(home, recursive: false)
            // One rename: a clone never sees a half-made directory. Another create may have won.
            if rename("\(dir)/pgdata", "\(home)/pgdata") != 0 && !FileManager.default.fileExists(atPath: "\(home)/pgdata/PG_VERSION") {
                throw ProvisioningError.internal("making the schema-only copy", detail: "cannot move the schema-only copy into \(home): \(String(cString: strerror(errno)))")
            }
            await removeScratch(dir, sockets)
            return "\(home)/pgdata"
        } catch {
            await removeScratch(dir, sockets)
            throw error
        }
    }
}
