import DevDBCatalog
import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

extension KubernetesProvisionerTests {
    /// The shell the restore Job and the database pod run, taken from the manifests the
    /// provisioner sends and run here against PostgreSQL 15 (as the postgres user), with temporary
    /// directories standing in for the pod's mounts: restore a real pg_dump, set the Secret's
    /// password from a file, start Postgres as the Deployment does, pass its readiness probe and
    /// log in over TCP with SCRAM.
    @Test func thePodsScriptsRestoreSetThePasswordAndServe() throws {
        let directory = try TestPaths.makeTemporaryDirectory("devdb-pod-scripts")
        try killLeftoversWhenTestsEnd(under: directory)
        // A dump made with pg_dump -Fc from a real PostgreSQL 15.
        let source = try PostgresServer(directory: directory, name: "source")
        try source.psql("CREATE DATABASE shop")
        try source.psql("""
            CREATE TABLE orders (id serial PRIMARY KEY, total_cents int NOT NULL);
            INSERT INTO orders (total_cents) SELECT i FROM generate_series(1, 1234) i;
            """, database: "shop")
        let data = directory.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try run(["pg_dump", "-Fc", "-h", "127.0.0.1", "-p", String(source.port), "-U", "postgres", "-d", "shop",
                 "-f", data.appendingPathComponent("devdb-restore.dump").path], environment: ["PGPASSWORD": source.password])
        source.process.stop(SIGINT)

        let manifests = KubeManifests(settings: KubernetesSettings(), namespace: "devdb")
        let d = DatabaseRecord(name: "kate-pg", project: "shop", owner: "kate", user: "app", password: "s3cret-" + UUID().uuidString.prefix(8).lowercased(), database: "app")
        let job = manifests.restoreJob(name: "j", claim: "c", labels: [:], project: shop, major: 15, owner: nil)
        let deployment = manifests.deployment(d, owner: ["apiVersion": "v1", "kind": "Secret", "metadata": ["name": "x", "uid": "u"]])
        func script(_ container: JSONValue) -> String { container["command"][2].string ?? "" }
        let restore = script(job.at("spec.template.spec.containers")[0])
        let setPassword = script(deployment.at("spec.template.spec.initContainers")[0])
        let serve = script(deployment.at("spec.template.spec.containers")[0])
        #expect(restore.contains("pg_restore") && setPassword.contains("ALTER ROLE") && serve.contains("exec postgres"))

        let port = freePort()
        var env = ["PATH": "\(TestPaths.postgresBin):/usr/bin:/bin", "PGDATA": data.appendingPathComponent("pgdata").path, "PGPORT": String(port),
                   "DEVDB_DATA": data.path]
        for (key, sub) in [("DEVDB_SOCKETS", "sockets"), ("DEVDB_RUN", "run"), ("DEVDB_CREDENTIALS", "credentials")] {
            let dir = directory.appendingPathComponent(sub)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            env[key] = dir.path
        }
        // The Secret's key as the pod mounts it.
        try d.password.write(toFile: "\(env["DEVDB_CREDENTIALS"]!)/password", atomically: true, encoding: .utf8)
        if getuid() == 0 { try run(["chown", "-R", "postgres:postgres", directory.path]) }
        let asPostgres = getuid() == 0 ? ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] : []

        let restored = try run(asPostgres + ["sh", "-ec", restore], environment: env, timeout: 180, check: false)
        #expect(restored.status == 0, "\(restored.stdout)\(restored.stderr)")
        #expect(!FileManager.default.fileExists(atPath: data.appendingPathComponent("devdb-restore.dump").path), "the dump is removed after the restore")
        let control = try run([TestPaths.postgresBin + "/pg_controldata", env["PGDATA"]!])
        #expect(control.stdout.contains("Database cluster state:               shut down"), "a clean shutdown, ready to snapshot")

        let passwordSet = try run(asPostgres + ["sh", "-ec", setPassword], environment: env, timeout: 120, check: false)
        #expect(passwordSet.status == 0, "\(passwordSet.stdout)\(passwordSet.stderr)")
        #expect(!passwordSet.stdout.contains(d.password) && !passwordSet.stderr.contains(d.password))

        env["DEVDB_LISTEN"] = "127.0.0.1"
        let server = try ServerProcess(name: "postgres-pod", argv: ["sh", "-ec", serve], logDirectory: directory, asPostgresUser: true, environment: env)
        defer { server.stop(SIGINT) }
        let probe = deployment.at("spec.template.spec.containers")[0].at("readinessProbe.exec.command").array.compactMap(\.string)
            .map { $0 == "5432" ? String(port) : $0 }
        #expect(probe.first == "pg_isready")
        try waitUntil(timeout: 30, "the readiness probe passes") {
            (try? run([TestPaths.postgresBin + "/" + probe[0]] + probe.dropFirst(), check: false).status) == 0
        }
        let rows = try psql("host=127.0.0.1 port=\(port) user=app dbname=app", "SELECT count(*) FROM orders", password: d.password)
        #expect(rows.stdout.hasPrefix("1234"), "\(rows.stdout)\(rows.stderr)")
        let owner = try psql("host=127.0.0.1 port=\(port) user=app dbname=app", "SELECT tableowner FROM pg_tables WHERE tablename = 'orders'", password: d.password)
        #expect(owner.stdout.hasPrefix("app"), "restored objects belong to the app role")
        let wrong = try psql("host=127.0.0.1 port=\(port) user=app dbname=app", "SELECT 1", password: "wrong")
        #expect(wrong.status != 0 && wrong.stderr.contains("password authentication failed"))
        let superuser = try psql("host=127.0.0.1 port=\(port) user=postgres dbname=app", "SELECT 1", password: "")
        #expect(superuser.status != 0, "the superuser has no password and cannot log in over TCP")
    }
}

extension KubernetesProvisionerTests {
    /// The restore Job's first container: `devdb-fetch-dump` fetches and checks the dump, and
    /// fails with a readable reason (the Job's termination message) and no partial file.
    @Test func theFetchStepFetchesChecksAndExplains() throws {
        let directory = try TestPaths.makeTemporaryDirectory("devdb-fetch-step")
        let dump = directory.appendingPathComponent("shop.dump")
        let body = Data("PGDMP".utf8) + Data((0..<100_000).map { UInt8($0 % 251) })
        try body.write(to: dump)
        let out = directory.appendingPathComponent("devdb-restore.dump")
        let ok = try run([try TestPaths.binary("devdb-fetch-dump"), "--url", dump.absoluteString, "--out", out.path], check: false)
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(try Data(contentsOf: out) == body)
        #expect(ok.stdout.contains("100005 bytes"))

        let notes = directory.appendingPathComponent("notes.txt")
        try "not a dump".write(to: notes, atomically: true, encoding: .utf8)
        try? FileManager.default.removeItem(at: out)
        let bad = try run([try TestPaths.binary("devdb-fetch-dump"), "--url", notes.absoluteString, "--out", out.path], check: false)
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("not a PostgreSQL dump: it looks like a text file that is not SQL"), "\(bad.stderr)")
        #expect(!FileManager.default.fileExists(atPath: out.path), "no partial dump is left")

        let s3 = try run([try TestPaths.binary("devdb-fetch-dump"), "--url", "s3://bucket/shop.dump", "--out", out.path],
                         environment: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""], check: false)
        #expect(s3.status == 1)
        #expect(s3.stderr.contains("no S3 credentials") && s3.stderr.contains("databases.s3.secretName"), "\(s3.stderr)")
        // With the Secret's files in --credentials-dir the credentials are found: the fetch gets
        // as far as the (unreachable) endpoint.
        let credentials = directory.appendingPathComponent("s3")
        try FileManager.default.createDirectory(at: credentials, withIntermediateDirectories: true)
        try "AKIDEXAMPLE\n".write(to: credentials.appendingPathComponent("AWS_ACCESS_KEY_ID"), atomically: true, encoding: .utf8)
        try "secret\n".write(to: credentials.appendingPathComponent("AWS_SECRET_ACCESS_KEY"), atomically: true, encoding: .utf8)
        let withFiles = try run([try TestPaths.binary("devdb-fetch-dump"), "--url", "s3://bucket/shop.dump", "--out", out.path,
                                 "--credentials-dir", credentials.path],
                                environment: ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:\(freePort())"],
                                check: false)
        #expect(withFiles.status == 1)
        #expect(withFiles.stderr.contains("fetching the dump failed"), "\(withFiles.stderr)")
        #expect(!withFiles.stderr.contains("secret"), "the secret is never printed")
    }
}
