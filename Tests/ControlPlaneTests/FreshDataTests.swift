import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    /// Masking before the snapshot, and fresh data: refresh on change, keep-generations, and the
    /// change detection of file, HTTP and S3 dumps.
    @Suite struct FreshData {
        func count(_ f: ControlPlaneFixture, _ line: String, _ sql: String) throws -> String {
            try f.runPsqlLine(line, sql).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func generations(_ f: ControlPlaneFixture, _ project: String) throws -> [[String: Any]] {
            try f.json(["project", "show", project])["generations"] as? [[String: Any]] ?? []
        }

        @Test func afterRestoreSQLMasksEveryDatabaseAndAFailingScriptKeepsTheOldGeneration() throws {
            let f = try ControlPlaneFixture.get()
            let mask = f.directory.appendingPathComponent("mask.sql")
            try "-- replace names with a stable, salted pseudonym\nUPDATE customers SET name = 'masked-' || md5('salt' || id::text);\n"
                .write(to: mask, atomically: true, encoding: .utf8)
            let created = try f.devdb(["project", "create", "masked", "--dump", "file://\(f.dumps.path)/shop.dump", "--after-restore", mask.path, "--wait"])
            #expect(created.status == 0, "\(created.output)")
            let d = try f.json(["db", "create", "masked-db", "--project", "masked", "--wait"])
            let line = try #require(d["psql"] as? String)
            #expect(try count(f, line, "SELECT count(*) FROM customers WHERE name NOT LIKE 'masked-%'") == "0")
            #expect(try count(f, line, "SELECT count(*) FROM customers") == "500")
            // Users see that it masks, not the SQL (it may hold salts); admins see the SQL.
            let user = try f.token(for: "masked-viewer")
            let seen = try f.json(["project", "show", "masked"], token: user)
            #expect(seen["masks"] as? Bool == true && seen["after_restore_sql"] == nil)
            #expect((try f.json(["project", "show", "masked"])["after_restore_sql"] as? String ?? "").contains("md5('salt'"))

            // A script that fails fails its generation with the error and line; the database stays.
            let bad = f.directory.appendingPathComponent("bad.sql")
            try "UPDATE customers SET name = 'x';\nUPDATE no_such_table SET a = 1;\n".write(to: bad, atomically: true, encoding: .utf8)
            #expect(try f.devdb(["project", "update", "masked", "--after-restore", bad.path]).status == 0)
            let refresh = try f.devdb(["project", "refresh", "masked", "--wait"])
            #expect(refresh.status == 7, "\(refresh.output)")
            #expect(refresh.stderr.contains("after-restore SQL failed") && refresh.stderr.contains("line 2") && refresh.stderr.contains("no_such_table"),
                    "\(refresh.stderr)")
            #expect(try f.json(["project", "show", "masked"])["state"] as? String == "ready")
            #expect(try count(f, line, "SELECT count(*) FROM customers WHERE name NOT LIKE 'masked-%'") == "0")
            // A new database still comes from the last good (masked) generation.
            let later = try f.json(["db", "create", "masked-db2", "--project", "masked", "--wait"])
            #expect(try count(f, try #require(later["psql"] as? String), "SELECT count(*) FROM customers WHERE name NOT LIKE 'masked-%'") == "0")
            #expect(try f.devdb(["project", "update", "masked", "--after-restore", "none"]).status == 0)
            #expect(try f.json(["project", "show", "masked"])["masks"] as? Bool == false)
            for n in ["masked-db", "masked-db2"] { #expect(try f.devdb(["db", "delete", n, "--wait"]).status == 0) }
        }

        @Test func aChangedDumpMakesANewGenerationAndDatabasesMoveOnlyWhenReset() throws {
            let f = try ControlPlaneFixture.get()
            let dump = f.dumps.appendingPathComponent("fresh.dump")
            try? FileManager.default.removeItem(at: dump)
            try FileManager.default.copyItem(at: f.dumps.appendingPathComponent("shop.dump"), to: dump)
            #expect(try f.devdb(["project", "create", "fresh", "--dump", "file://\(dump.path)", "--refresh-on-change", "--keep-generations", "1", "--wait"]).status == 0)
            let d = try f.json(["db", "create", "fresh-db", "--project", "fresh", "--wait"])
            let line = try #require(d["psql"] as? String)
            // Unchanged: no new generation (the API checks every second here).
            usleep(3_000_000)
            #expect(try generations(f, "fresh").count == 1)

            // Rewritten with newer data: a new ready generation within seconds.
            try FileManager.default.removeItem(at: dump)
            try FileManager.default.copyItem(at: f.dumps.appendingPathComponent("shop-more.dump"), to: dump)
            try waitUntil(timeout: 60, interval: 0.5, "a new generation from the changed dump") {
                ((try? generations(f, "fresh")) ?? []).contains { $0["number"] as? Int == 2 && $0["state"] as? String == "ready" }
            }
            // The database keeps its data, and is told newer data exists.
            #expect(try count(f, line, "SELECT count(*) FROM orders") == "2000")
            let shown = try f.json(["db", "show", "fresh-db"])
            #expect(shown["newer_generation"] as? Int == 2)
            #expect((shown["hint"] as? String ?? "").contains("devdb db reset fresh-db --latest"))
            #expect(try f.devdb(["db", "reset", "fresh-db", "--latest", "--wait"]).status == 0)
            #expect(try count(f, line, "SELECT count(*) FROM orders") == "2500")
            #expect(try f.json(["db", "show", "fresh-db"])["newer_generation"] == nil)

            // keep-generations 1: once generation 3 is ready, generation 2 (in use) stays and 1 is gone.
            try FileManager.default.removeItem(at: dump)
            try FileManager.default.copyItem(at: f.dumps.appendingPathComponent("shop.dump"), to: dump)
            try waitUntil(timeout: 60, interval: 0.5, "generation 3") {
                ((try? generations(f, "fresh")) ?? []).contains { $0["number"] as? Int == 3 && $0["state"] as? String == "ready" }
            }
            try waitUntil(timeout: 20, "unused generations collected") { ((try? generations(f, "fresh")) ?? []).compactMap { $0["number"] as? Int } == [2, 3] }
            #expect(!FileManager.default.fileExists(atPath: f.dataDirectory.appendingPathComponent("generations/fresh/1").path))
            #expect(try f.devdb(["db", "delete", "fresh-db", "--wait"]).status == 0)
        }

        @Test func fileHTTPAndS3DumpsAreCheckedCheaplyForChanges() throws {
            let f = try ControlPlaneFixture.get()
            let name = "watched-\(UUID().uuidString.prefix(6)).dump"
            let bucketFile = f.dumps.appendingPathComponent("bucket/\(name)")
            let plainFile = f.dumps.appendingPathComponent(name)
            for file in [bucketFile, plainFile] { try FileManager.default.copyItem(at: f.dumps.appendingPathComponent("shop.dump"), to: file) }
            let fetcher = DumpFetcher(s3: S3Settings(endpoint: "http://127.0.0.1:\(f.s3Port)", region: "eu-west-1",
                                                     accessKeyID: ControlPlaneFixture.s3Access, secretAccessKey: ControlPlaneFixture.s3Secret),
                                      allowPrivateHosts: true)
            let urls = ["file://\(plainFile.path)", "http://127.0.0.1:\(f.httpPort)/\(name)", "s3://bucket/\(name)"]
            let before = try urls.map { try fetcher.fingerprint($0) }
            #expect(try urls.map { try fetcher.fingerprint($0) } == before, "unchanged dumps look the same")
            #expect(before[2].contains("etag="), "\(before[2])")
            usleep(1_100_000)  // Last-Modified has one-second resolution
            for file in [bucketFile, plainFile] {
                try FileManager.default.removeItem(at: file)
                try FileManager.default.copyItem(at: f.dumps.appendingPathComponent("shop-more.dump"), to: file)
            }
            let after = try urls.map { try fetcher.fingerprint($0) }
            for (i, url) in urls.enumerated() { #expect(after[i] != before[i], "\(url): \(before[i]) -> \(after[i])") }
            #expect(throws: DumpError.notFound("s3://bucket/gone.dump")) { try fetcher.fingerprint("s3://bucket/gone.dump") }
        }
    }
}
