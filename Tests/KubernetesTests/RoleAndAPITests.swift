import DevDBCatalog
import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

extension KubernetesProvisionerTests {
    /// The chart's Role grants exactly the (group, resource, verb) triples the provisioner uses
    /// across its whole life: seeding, databases with and without snapshots, reset, failures,
    /// reconcile and deletion.
    @Test func theChartsRoleCoversExactlyWhatTheProvisionerCalls() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner(projects: [shop])
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        var d = database()
        _ = try await p.create(database: d, from: generation()) { _ in }
        _ = try await p.reset(database: d, to: generation()) { _ in }
        d.state = .ready
        // Leftovers of a database the catalog lost: the reconcile deletes each kind it finds.
        let lost = database("lost")
        let owner = try await k.client().create("/api/v1/namespaces/\(KubeDouble.namespace)/secrets", p.manifests.secret(lost))
        try await k.client().create("/api/v1/namespaces/\(KubeDouble.namespace)/services", p.manifests.service(lost, owner: owner))
        _ = try await p.recover(databases: [d], generations: [generation()], snapshots: [])
        try await p.delete(database: d)
        let fallback = try k.provisioner({ $0.snapshotClass = nil }, projects: [shop])
        let e = database("restored")
        _ = try await fallback.create(database: e, from: generation()) { _ in }
        _ = try await fallback.reset(database: e, to: generation()) { _ in }
        try await fallback.delete(database: e)
        try await k.faults(["image_pull": "postgres"])
        _ = try? await p.create(database: database("broken"), from: generation()) { _ in }
        try await k.faults([:])
        try await p.deleteGeneration(generation())
        #expect(try await k.inventory() == [])

        var used = Set<String>()
        for r in try await k.requests() {
            guard let verb = r["verb"].string, let resource = r["resource"].string, let group = r["group"].string else {
                Issue.record("a request outside the API the double serves: \(r)")
                continue
            }
            used.insert("\(group)/\(resource)/\(verb)")
        }
        var granted = Set<String>()
        for rule in try renderChartObject("Role", "devdb-provisioner")["rules"].array {
            for g in rule["apiGroups"].array { for res in rule["resources"].array { for v in rule["verbs"].array {
                granted.insert("\(g.string!)/\(res.string!)/\(v.string!)")
            } } }
        }
        #expect(used.subtracting(granted).sorted() == [], "called but not granted")
        #expect(granted.subtracting(used).sorted() == [], "granted but never called")
    }

    /// The built devdb-api with --provisioner kubernetes and a kubeconfig, driven by the devdb
    /// CLI: states and reasons come from what the (double) cluster reports.
    @Test func theAPIAndCLIOnKubernetes() async throws {
        let k = try KubeDouble()
        let redis = try RedisServer(directory: k.directory)
        defer { redis.stop() }
        let apiPort = freePort()
        let adminToken = "ddb_admin_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        try adminToken.write(to: k.directory.appendingPathComponent("admin-token"), atomically: true, encoding: .utf8)
        let api = try ServerProcess(name: "api", argv: [
            try TestPaths.binary("devdb-api"), "--listen", "127.0.0.1:\(apiPort)", "--redis", redis.url,
            "--provisioner", "kubernetes", "--kubeconfig", k.kubeconfig.path, "--instance", "devdb",
            "--snapshot-class", "csi-hostpath-snapclass", "--tools-image", "registry.example.com/devdb:1.0",
            "--data-dir", k.directory.appendingPathComponent("data").path, "--db-domain", "db.devdb.test",
            "--router-host", "", "--router-port", "5432", "--admin-token-file", k.directory.appendingPathComponent("admin-token").path,
            "--poll-interval", "0.1", "--ready-timeout", "20", "--reconcile-interval", "1", "--reap-interval", "1",
            "--refresh-check-interval", "1s", "--orphan-grace-period", "0", "--transient-pod-error-timeout", "2",
        ], logDirectory: k.directory)
        defer { api.stop(SIGTERM) }
        try waitUntil(timeout: 30, "API on \(apiPort)") {
            (try? run(["curl", "-sf", "http://127.0.0.1:\(apiPort)/readyz"], check: false).status) == 0
        }
        func devdb(_ args: [String]) throws -> CommandResult {
            try run([try TestPaths.binary("devdb")] + args,
                    environment: ["DEVDB_SERVER": "http://127.0.0.1:\(apiPort)", "DEVDB_TOKEN": adminToken,
                                  "XDG_CONFIG_HOME": k.directory.appendingPathComponent("cli").path], timeout: 120, check: false)
        }
        // The API cannot read this S3 dump (no credentials here): it says so and what to grant,
        // rather than guessing a major and a size; nothing is made.
        let unreadable = try devdb(["project", "create", "guess", "--dump", "s3://dumps/shop.dump"])
        #expect(unreadable.status != 0)
        #expect(unreadable.stderr.contains("cannot read the dump's header") && unreadable.stderr.contains("s3:GetObject")
                && unreadable.stderr.contains("--postgres N"), "\(unreadable.stderr)")
        #expect(try await k.created("PersistentVolumeClaim").isEmpty)
        // With the major given, the restore pods read the dump with their own rights.
        let project = try devdb(["project", "create", "shop", "--dump", "s3://dumps/shop.dump", "--postgres", "15", "--wait"])
        #expect(project.status == 0, "\(project.stdout)\(project.stderr)")
        #expect(try await k.inventory() == ["VolumeSnapshot/devdb-gen-shop-1"])

        let created = try devdb(["db", "create", "kate-pg", "--project", "shop", "--wait"])
        #expect(created.status == 0, "\(created.stdout)\(created.stderr)")
        let show = try devdb(["db", "show", "kate-pg", "--output", "json"])
        let view = try JSONValue.decode(Data(show.stdout.utf8))
        #expect(view["state"] == "ready")
        #expect(view["clone_method"] == "snapshot")
        #expect(view["hostaddr"].isNull, "wildcard DNS: no hostaddr")
        let line = view["psql"].string ?? ""
        #expect(line.hasPrefix("PGPASSWORD='") && line.contains(" psql \"host=kate-pg.db.devdb.test port=5432 user=app dbname=app sslmode=require\""), "\(line)")
        // The route names the Service's cluster DNS name.
        let route = try redis.cli(["HGETALL", "devdb:route:kate-pg"]).stdout
        #expect(route.contains("devdb-db-kate-pg.\(KubeDouble.namespace).svc.cluster.local"), "\(route)")
        // Every object carries the catalog's installation id.
        let installation = try JSONValue.decode(Data(try redis.cli(["GET", "devdb:installation"]).stdout.utf8))
        #expect(installation["id"].string != nil && installation["adopts_unlabelled"] == false, "\(installation)")
        #expect(try await k.object("Secret", "devdb-db-kate-pg")?.at("metadata.labels").object?["devdb.io/installation"] == installation["id"])
        // The password in the Secret is the one the API hands out.
        let secret = try #require(try await k.created("Secret").first { $0.at("metadata.name") == "devdb-db-kate-pg" })
        #expect(secret.at("stringData.password") == view["password"])

        // The pod stops being ready: the reconcile loop reports it, and the route stops routing.
        let pod = try #require(try await k.objects().first { $0["kind"] == "Pod" && $0.at("metadata.labels").object?["devdb.io/database"] == "kate-pg" })
        try await k.setPod(pod.at("metadata.name").string!, ready: false)
        try waitUntil(timeout: 30, "kate-pg unavailable") {
            (try? JSONValue.decode(Data(devdb(["db", "show", "kate-pg", "--output", "json"]).stdout.utf8)))?["state"] == "unavailable"
        }
        let unavailable = try JSONValue.decode(Data(try devdb(["db", "show", "kate-pg", "--output", "json"]).stdout.utf8))
        #expect(unavailable["reason"].string?.contains("not ready") == true, "\(unavailable["reason"])")
        #expect(try redis.cli(["HGET", "devdb:route:kate-pg", "state"]).stdout.contains("starting"))
        try await k.setPod(pod.at("metadata.name").string!, ready: true)
        try waitUntil(timeout: 30, "kate-pg ready again") {
            (try? JSONValue.decode(Data(devdb(["db", "show", "kate-pg", "--output", "json"]).stdout.utf8)))?["state"] == "ready"
        }
        #expect(try redis.cli(["HGET", "devdb:route:kate-pg", "state"]).stdout.contains("ready"))

        // An image that cannot be pulled: the database fails with the cluster's reason.
        try await k.faults(["image_pull": "postgres:15"])
        let broken = try devdb(["db", "create", "broken", "--project", "shop", "--wait"])
        #expect(broken.status != 0)
        #expect(broken.stderr.contains("cannot pull the image"), "\(broken.stderr)")
        try await k.faults([:])
        #expect(try await k.inventory().allSatisfy { !$0.contains("broken") })

        // An object the catalog does not know is removed by the reconcile loop.
        // (Made by this installation: one another installation made would be kept and reported.)
        let stray = KubeManifests(settings: { var s = KubernetesSettings(); s.instance = "devdb"; s.installation = installation["id"].string; return s }(),
                                  namespace: KubeDouble.namespace)
            .secret(DatabaseRecord(name: "stray", project: "shop", owner: "x", user: "app", password: "p", database: "app"))
        _ = try await k.client().create("/api/v1/namespaces/\(KubeDouble.namespace)/secrets", stray)
        try await waitUntilAsync { try await k.object("Secret", "devdb-db-stray") == nil }
        // One an earlier installation made (a reinstall over a lost catalog): kept, and reported to admins.
        let earlier = KubeManifests(settings: { var s = KubernetesSettings(); s.instance = "devdb"; s.installation = "earlier-installation"; return s }(),
                                    namespace: KubeDouble.namespace)
            .secret(DatabaseRecord(name: "theirs", project: "shop", owner: "x", user: "app", password: "p", database: "app"))
        _ = try await k.client().create("/api/v1/namespaces/\(KubeDouble.namespace)/secrets", earlier)
        func foreign() throws -> String {
            try run(["curl", "-sf", "-H", "Authorization: Bearer \(adminToken)", "http://127.0.0.1:\(apiPort)/v1/admin/foreign-objects"], check: false).stdout
        }
        try waitUntil(timeout: 30, "the reconcile reports the earlier installation's Secret") {
            (try? foreign())?.contains("installation earlier-installation: secrets/devdb-db-theirs") == true
        }
        #expect(try await k.object("Secret", "devdb-db-theirs") != nil, "never deleted")
        #expect(try run(["curl", "-sf", "http://127.0.0.1:\(apiPort)/metrics"]).stdout.contains("devdb_api_foreign_installations 1"))
        #expect(try run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(apiPort)/v1/admin/foreign-objects"], check: false).stdout == "401")
        try await k.removeBehindOurBack("secrets", "devdb-db-theirs")

        // Fresh data: a masked project that refreshes when its dump changes. Each restore Job gets
        // the SQL as its own Secret; the refresher starts generation 2 when the file changes.
        let dumpFile = k.directory.appendingPathComponent("fresh.dump")
        // A real archive header (pg_dump 18 of an 18 server); the double's Job does not restore it.
        let header = try Data(contentsOf: try #require(Bundle.module.url(forResource: "Fixtures/dump-pg18-custom.dump", withExtension: nil)))
        try (header + Data("stand-in".utf8)).write(to: dumpFile)
        let mask = k.directory.appendingPathComponent("mask.sql")
        try "UPDATE customers SET email = 'x@example.com';\n".write(to: mask, atomically: true, encoding: .utf8)
        let fresh = try devdb(["project", "create", "fresh", "--dump", "file://\(dumpFile.path)", "--refresh-on-change", "--after-restore", mask.path, "--wait"])
        #expect(fresh.status == 0, "\(fresh.stdout)\(fresh.stderr)")
        #expect(try await k.created("Secret").first { $0.at("metadata.name") == "devdb-gen-fresh-1-restore-sql" }?["stringData"]["after-restore.sql"].string
                == "UPDATE customers SET email = 'x@example.com';\n")
        try (header + Data("stand-in, newer".utf8)).write(to: dumpFile)
        try waitUntil(timeout: 60, "generation 2 of fresh from the changed dump") {
            let p = try? JSONValue.decode(Data(devdb(["project", "show", "fresh", "--output", "json"]).stdout.utf8))
            return p?["generations"].array.contains { $0["number"] == 2 && $0["state"] == "ready" } == true
        }
        #expect(try await k.created("Secret").contains { $0.at("metadata.name") == "devdb-gen-fresh-2-restore-sql" })

        let deleted = try devdb(["db", "delete", "kate-pg", "--wait"])
        #expect(deleted.status == 0, "\(deleted.stdout)\(deleted.stderr)")
        try await waitUntilAsync { try await k.inventory().filter { !$0.contains("fresh") } == ["VolumeSnapshot/devdb-gen-shop-1"] }
        #expect(try redis.cli(["EXISTS", "devdb:route:kate-pg"]).stdout.contains("0"))
    }
}

extension KubernetesProvisionerTests {
    /// A CLI pointed at a server whose certificate does not verify says which name it expected
    /// the certificate to cover (the API server double's certificate is from a CA the CLI does
    /// not trust: the same failure as a certificate for another name).
    @Test func theCLIsTLSErrorNamesTheHostItExpected() throws {
        let k = try KubeDouble()
        let out = try run([try TestPaths.binary("devdb"), "whoami"],
                          environment: ["DEVDB_SERVER": "https://127.0.0.1:\(k.port)", "DEVDB_TOKEN": "x",
                                        "XDG_CONFIG_HOME": k.directory.appendingPathComponent("cli").path], check: false)
        #expect(out.status != 0)
        #expect(out.stderr.contains("TLS to the DevDB API at https://127.0.0.1:\(k.port) failed") && out.stderr.contains("valid for 127.0.0.1")
                && out.stderr.contains("set-server https://<apiHost>"), "\(out.stderr)")
    }

    /// --s3-credentials-dir without the key files is refused at start, saying what to mount.
    @Test func theAPIsS3CredentialsDirectoryMustHoldTheKeys() throws {
        let dir = try TestPaths.makeTemporaryDirectory("devdb-s3-dir")
        let out = try run([try TestPaths.binary("devdb-api"), "--s3-credentials-dir", dir.path, "--data-dir", dir.path], check: false)
        #expect(out.status != 0 && out.stderr.contains("has no file AWS_ACCESS_KEY_ID"), "\(out.stderr)")
    }
}

/// One object of the chart as Helm renders it with the default values (Tests/ChartTests/render.py).
func renderChartObject(_ kind: String, _ name: String) throws -> JSONValue {
    let out = try run([KubeDouble.python, TestPaths.repositoryRoot.appendingPathComponent("Tests/ChartTests/render.py").path, kind, name])
    return try JSONValue.decode(Data(out.stdout.utf8))
}
