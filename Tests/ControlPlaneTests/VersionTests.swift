import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    /// Projects take their PostgreSQL major from the dump, every common dump format restores, and
    /// the router speaks protocol 3.2 to an 18 backend. Real binaries: Debian's 15 and the 17 and
    /// 18 that scripts/install-deps unpacks from PyPI.
    @Suite struct Versions {
        /// A server of `major` holding a small `items` table (owned by a role of its own), for dumps.
        static func source(_ f: ControlPlaneFixture, major: Int) throws -> PostgresServer {
            let bin = major == 15 ? TestPaths.postgresBin : try #require(TestPaths.extraPostgresMajors[major], "PostgreSQL \(major) is not installed: run scripts/install-deps")
            let pg = try PostgresServer(directory: f.directory, name: "source-\(major)-\(UUID().uuidString.prefix(6))", bin: bin)
            try pg.psql("""
                CREATE ROLE shop_owner NOLOGIN;
                CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL);
                ALTER TABLE items OWNER TO shop_owner;
                INSERT INTO items (label) SELECT 'item ' || i FROM generate_series(1, 42) i;
                """)
            return pg
        }

        /// Runs the source's own pg_dump (an older one refuses a newer server).
        static func pgDump(_ pg: PostgresServer, major: Int, _ args: [String]) throws {
            let bin = major == 15 ? TestPaths.postgresBin : TestPaths.extraPostgresMajors[major]!
            try run(["\(bin)/pg_dump", "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "postgres"] + args,
                    environment: ["PGPASSWORD": pg.password], timeout: 120)
        }

        /// A custom-format dump made by `major`'s pg_dump from a fresh server of that major.
        static func customDump(_ f: ControlPlaneFixture, major: Int, named name: String, before: (PostgresServer) throws -> Void = { _ in }) throws -> URL {
            let pg = try source(f, major: major)
            try before(pg)
            let file = f.dumps.appendingPathComponent(name)
            try pgDump(pg, major: major, ["-Fc", "-f", file.path])
            pg.process.stop(SIGINT)
            return file
        }

        func sql(_ f: ControlPlaneFixture, _ db: [String: Any], _ query: String) throws -> String {
            try f.runPsqlLine(try #require(db["psql"] as? String), query).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        @Test func eachDumpRunsTheMajorItWasMadeFrom() throws {
            let f = try ControlPlaneFixture.get()
            for major in [15, 17, 18] {
                let file = try Self.customDump(f, major: major, named: "v\(major).dump")
                let created = try f.devdb(["project", "create", "v\(major)", "--dump", "file://\(file.path)", "--wait"])
                #expect(created.status == 0, "\(created.output)")
                let p = try f.json(["project", "show", "v\(major)"])
                #expect(p["postgres"] as? Int == major, "\(p)")
                #expect(((p["generations"] as? [[String: Any]])?.first?["postgres"] as? Int) == major)
                #expect(((p["generations"] as? [[String: Any]])?.first?["dump_format"] as? String) == "custom")
                let db = try f.json(["db", "create", "v\(major)-db", "--project", "v\(major)", "--wait"])
                #expect(db["postgres"] as? Int == major)
                #expect(try sql(f, db, "SHOW server_version").hasPrefix("\(major)."), "major \(major)")
                #expect(try sql(f, db, "SELECT count(*) FROM items") == "42")
            }
        }

        @Test func anExplicitMajorOlderThanTheDumpIsRefusedNamingBoth() throws {
            let f = try ControlPlaneFixture.get()
            let file = try Self.customDump(f, major: 17, named: "older.dump")
            let refused = try f.devdb(["project", "create", "older", "--dump", "file://\(file.path)", "--postgres", "15"])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("PostgreSQL 17") && refused.stderr.contains("--postgres 15"), "\(refused.stderr)")
            #expect(try f.devdb(["project", "show", "older"]).status != 0, "nothing was created")
            // A newer explicit major is fine: 17's dump into 18.
            let newer = try f.devdb(["project", "create", "newer", "--dump", "file://\(file.path)", "--postgres", "18", "--wait"])
            #expect(newer.status == 0, "\(newer.output)")
            #expect(try f.json(["project", "show", "newer"])["postgres"] as? Int == 18)
            // A major nobody installed is refused with the list and how to add one.
            let missing = try f.devdb(["project", "create", "missing", "--dump", "file://\(file.path)", "--postgres", "19"])
            #expect(missing.status != 0 && missing.stderr.contains("not installed") && missing.stderr.contains("--postgres-bin-dir"), "\(missing.stderr)")
        }

        @Test func plainGzippedTarAndDirectoryDumpsRestoreWhateverTheirNames() throws {
            let f = try ControlPlaneFixture.get()
            let pg = try Self.source(f, major: 15)
            let plain = f.dumps.appendingPathComponent("plain.sql")
            try Self.pgDump(pg, major: 15, ["-Fp", "-f", plain.path])
            // Names that say nothing: the format comes from the bytes.
            let gz = f.dumps.appendingPathComponent("plain-gz.bin")
            try run(["sh", "-c", "gzip -c < \"$1\" > \"$2\"", "sh", plain.path, gz.path])
            let zst = f.dumps.appendingPathComponent("plain-zst.bin")
            try run(["sh", "-c", "zstd -q -c < \"$1\" > \"$2\"", "sh", plain.path, zst.path])
            let tar = f.dumps.appendingPathComponent("archive.bin")
            try Self.pgDump(pg, major: 15, ["-Ft", "-f", tar.path])
            let dir = f.directory.appendingPathComponent("dirdump-\(UUID().uuidString.prefix(6))")
            try Self.pgDump(pg, major: 15, ["-Fd", "-f", dir.path])
            let dirTar = f.dumps.appendingPathComponent("directory.tar")
            try run(["tar", "-cf", dirTar.path, "-C", dir.path, "."])
            pg.process.stop(SIGINT)
            for (name, file, format) in [("fmt-gz", gz, "plain-gzip"), ("fmt-zst", zst, "plain-zstd"), ("fmt-tar", tar, "tar"), ("fmt-dir", dirTar, "directory-tar")] {
                let created = try f.devdb(["project", "create", name, "--dump", "file://\(file.path)", "--wait"])
                #expect(created.status == 0, "\(name): \(created.output)")
                let g = (try f.json(["project", "show", name])["generations"] as? [[String: Any]])?.first
                #expect(g?["dump_format"] as? String == format, "\(name): \(String(describing: g))")
                let db = try f.json(["db", "create", "\(name)-db", "--project", name, "--wait"])
                #expect(try sql(f, db, "SELECT count(*) FROM items") == "42", "\(name)")
                // The app user owns what was restored (the dump's owner role does not matter).
                let insert = try f.runPsqlLine(try #require(db["psql"] as? String), "INSERT INTO items (label) VALUES ('mine') RETURNING label")
                #expect(insert.status == 0 && insert.stdout.hasPrefix("mine"), "\(name): \(insert.output)")
                #expect(try f.devdb(["db", "delete", "\(name)-db", "--wait"]).status == 0)
            }
        }

        @Test func somethingThatIsNoDumpFailsItsGenerationSayingWhatItIs() throws {
            let f = try ControlPlaneFixture.get()
            let page = f.dumps.appendingPathComponent("page.dump")
            try "<!DOCTYPE html><html><body>Sign in to continue</body></html>\n".write(to: page, atomically: true, encoding: .utf8)
            let r = try f.devdb(["project", "create", "html-page", "--dump", "file://\(page.path)", "--wait"])
            #expect(r.status == 7, "\(r.output)")
            let reason = try f.json(["project", "show", "html-page"])["reason"] as? String ?? ""
            #expect(reason.contains("not a PostgreSQL dump") && reason.contains("HTML page"), "\(reason)")
        }

        @Test func aRefreshToANewerMajorLeavesOlderDatabasesOnTheirs() throws {
            let f = try ControlPlaneFixture.get()
            let file = try Self.customDump(f, major: 15, named: "moving.dump")
            #expect(try f.devdb(["project", "create", "moving", "--dump", "file://\(file.path)", "--wait"]).status == 0)
            let first = try f.json(["db", "create", "moving-old", "--project", "moving", "--wait"])
            #expect(first["postgres"] as? Int == 15)

            _ = try Self.customDump(f, major: 17, named: "moving.dump") { try $0.psql("INSERT INTO items (label) VALUES ('from 17')") }
            let refreshed = try f.devdb(["project", "refresh", "moving", "--wait"])
            #expect(refreshed.status == 0, "\(refreshed.output)")
            let p = try f.json(["project", "show", "moving"])
            #expect(p["postgres"] as? Int == 17)
            #expect((p["generations"] as? [[String: Any]])?.compactMap { $0["postgres"] as? Int }.sorted() == [15, 17])
            // The old database stays on 15 and keeps its data; reset --latest would change its major.
            #expect(try sql(f, first, "SHOW server_version").hasPrefix("15."))
            let reset = try f.devdb(["db", "reset", "moving-old", "--latest", "--wait"])
            #expect(reset.status != 0)
            #expect(reset.stderr.contains("from PostgreSQL 15 to 17"), "\(reset.stderr)")
            #expect(try f.devdb(["db", "reset", "moving-old", "--wait"]).status == 0, "a reset to its own generation still works")
            // A new database gets the newest.
            let second = try f.json(["db", "create", "moving-new", "--project", "moving", "--wait"])
            #expect(second["postgres"] as? Int == 17)
            #expect(try sql(f, second, "SELECT count(*) FROM items") == "43")
        }

        @Test func protocol32AndItsLongCancelKeysWorkThroughTheRouterTo18() throws {
            let f = try ControlPlaneFixture.get()
            let file = try Self.customDump(f, major: 18, named: "v18-router.dump")
            #expect(try f.devdb(["project", "create", "proto", "--dump", "file://\(file.path)", "--wait"]).status == 0)
            let db = try f.json(["db", "create", "proto-db", "--project", "proto", "--wait"])
            let conninfo = "host=\(db["host"]!) hostaddr=\(db["hostaddr"]!) port=\(db["port"]!) user=\(db["user"]!) dbname=\(db["database"]!) sslmode=require max_protocol_version=latest"
            let script = """
            import sys, threading, time, psycopg
            def session(cancel):
                conn = psycopg.connect(sys.argv[1], password=sys.argv[2])
                assert conn.pgconn.full_protocol_version == 30002, conn.pgconn.full_protocol_version
                errors = []
                def later():
                    time.sleep(1)
                    try:
                        cancel(conn)
                    except Exception as e:
                        errors.append(repr(e))
                t = threading.Thread(target=later)
                t.start()
                try:
                    conn.execute("SELECT pg_sleep(30)")
                    return "not cancelled"
                except psycopg.errors.QueryCanceled:
                    pass
                t.join()
                return errors[0] if errors else "ok"
            # Plaintext CancelRequest (PQcancel) and encrypted cancel (PQcancelCreate), both with 3.2's long keys.
            print("plain", session(lambda c: c.cancel()))
            print("encrypted", session(lambda c: c.cancel_safe(timeout=10)))
            """
            let r = try run([TestPaths.venvPython, "-c", script, conninfo, try #require(db["password"] as? String)], timeout: 120, check: false)
            #expect(r.status == 0, "\(r.output)")
            #expect(r.stdout.contains("plain ok") && r.stdout.contains("encrypted ok"), "\(r.output)")
        }
    }
}
