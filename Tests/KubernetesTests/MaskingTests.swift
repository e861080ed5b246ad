import DevDBCatalog
import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

extension KubernetesProvisionerTests {
    /// The after-restore SQL reaches the restore Job as a mounted Secret (never env or args), and
    /// the restore script from the manifest runs it as the database owner: run here against
    /// PostgreSQL 15.
    @Test func afterRestoreSQLIsAMountedSecretTheRestoreScriptRuns() async throws {
        var masked = shop
        masked.afterRestoreSql = "UPDATE orders SET total_cents = 0; -- salt: s3cret-salt\n"
        let k = try KubeDouble()
        let p = try k.provisioner(projects: [masked])
        try await p.seed(project: masked, generation: generation()) { _, _ in }
        let secret = try #require(try await k.created("Secret").first { $0.at("metadata.name").string == "devdb-gen-shop-1-restore-sql" })
        #expect(secret.at("stringData.after-restore\\.sql").string ?? secret["stringData"]["after-restore.sql"].string == masked.afterRestoreSql)
        #expect(secret.at("metadata.ownerReferences")[0]["kind"].string == "PersistentVolumeClaim", "it goes with the restore's volume")
        let job = try #require(try await k.created("Job").first)
        let spec = job.at("spec.template.spec")
        #expect(spec["volumes"].array.contains { $0["name"] == "after-restore" && $0.at("secret.secretName").string == "devdb-gen-shop-1-restore-sql" })
        let restore = spec["containers"][0]
        #expect(restore["volumeMounts"].array.contains { $0["name"] == "after-restore" && $0["readOnly"].bool == true })
        let text = "\(job)"
        #expect(!text.contains("s3cret-salt"), "the SQL is in the Secret only")
        // Without SQL there is no Secret and no mount.
        let plain = KubeManifests(settings: KubernetesSettings(), namespace: "devdb").restoreJob(name: "j", claim: "c", labels: [:], project: shop, major: 15, owner: nil)
        #expect(!plain.at("spec.template.spec.volumes").array.contains { $0["name"] == "after-restore" })

        // The script itself, against PostgreSQL 15.
        let directory = try TestPaths.makeTemporaryDirectory("devdb-mask-script")
        try killLeftoversWhenTestsEnd(under: directory)
        let source = try PostgresServer(directory: directory, name: "source")
        try source.psql("CREATE DATABASE shop")
        try source.psql("CREATE TABLE orders (id serial PRIMARY KEY, total_cents int NOT NULL); INSERT INTO orders (total_cents) SELECT i FROM generate_series(1, 100) i;", database: "shop")
        let data = directory.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        let dumpFile = data.appendingPathComponent("source.dump")
        try run(["pg_dump", "-Fc", "-h", "127.0.0.1", "-p", String(source.port), "-U", "postgres", "-d", "shop", "-f", dumpFile.path],
                environment: ["PGPASSWORD": source.password])
        source.process.stop(SIGINT)
        let sockets = directory.appendingPathComponent("sockets")
        try FileManager.default.createDirectory(at: sockets, withIntermediateDirectories: true)
        let good = directory.appendingPathComponent("good.sql"), bad = directory.appendingPathComponent("bad.sql")
        try masked.afterRestoreSql!.write(to: good, atomically: true, encoding: .utf8)
        try "SELECT 1;\nUPDATE missing_table SET x = 1;\n".write(to: bad, atomically: true, encoding: .utf8)
        if getuid() == 0 { try run(["chown", "-R", "postgres:postgres", directory.path]) }
        let asPostgres = getuid() == 0 ? ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] : []
        let script = KubeManifests.restoreScript(jobs: 2)
        // The script's output goes to a file: a failed restore leaves its postmaster running (the
        // pod would just end), and it must not hold the test's pipe open.
        func restoreWith(_ sql: URL) throws -> CommandResult {
            try run(asPostgres + ["cp", dumpFile.path, data.appendingPathComponent("devdb-restore.dump").path])
            let log = directory.appendingPathComponent("restore-\(sql.lastPathComponent).log").path
            var r = try run(asPostgres + ["sh", "-c", "sh -ec \"$1\" > \"$2\" 2>&1", "sh", script, log], environment: [
                "PATH": "\(TestPaths.postgresBin):/usr/bin:/bin", "PGDATA": data.appendingPathComponent("pgdata").path,
                "DEVDB_DATA": data.path, "DEVDB_SOCKETS": sockets.path, "DEVDB_AFTER_RESTORE": sql.path,
            ], timeout: 180, check: false)
            r.stdout = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            return r
        }
        let failed = try restoreWith(bad)
        #expect(failed.status != 0)
        #expect(failed.output.contains("missing_table") && failed.output.contains("after-restore SQL failed"), "\(failed.output)")
        _ = try? run(asPostgres + [TestPaths.postgresBin + "/pg_ctl", "-D", data.appendingPathComponent("pgdata").path, "-m", "immediate", "stop"], check: false)
        let ok = try restoreWith(good)
        #expect(ok.status == 0, "\(ok.output)")
        let pg = try ServerProcess(name: "masked-pg", argv: [TestPaths.postgresBin + "/postgres", "-D", data.appendingPathComponent("pgdata").path,
                                                            "-c", "listen_addresses=", "-k", sockets.path, "-p", "5432"],
                                   logDirectory: directory, asPostgresUser: true)
        defer { pg.stop(SIGINT) }
        try waitUntil(timeout: 30, "restored postgres") { (try? run(asPostgres + ["pg_isready", "-h", sockets.path, "-p", "5432"], check: false).status) == 0 }
        let sum = try run(asPostgres + ["psql", "-X", "-At", "-h", sockets.path, "-p", "5432", "-U", "postgres", "-d", "app", "-c", "SELECT sum(total_cents), count(*) FROM orders"])
        #expect(sum.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0|100", "\(sum.output)")
    }
}
