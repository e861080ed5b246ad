import DevDBCatalog
import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

extension KubernetesProvisionerTests {
    @Test func kubeconfigAndInClusterCredentialsWithVerifiedTLS() async throws {
        let k = try KubeDouble()
        // kubeconfig as kind writes it: CA data, token, context namespace.
        let c = try KubeConnection.fromKubeconfig(path: k.kubeconfig.path, context: nil, namespace: nil)
        #expect(c.namespace == KubeDouble.namespace)
        #expect(c.credential == .token(k.token))
        let items = try await KubeClient(connection: c).list("/api/v1/namespaces/\(KubeDouble.namespace)/secrets", labelSelector: "a=b")
        #expect(items.isEmpty)

        // In a pod: the service-account directory and KUBERNETES_SERVICE_HOST/PORT.
        let sa = k.directory.appendingPathComponent("serviceaccount")
        try FileManager.default.createDirectory(at: sa, withIntermediateDirectories: true)
        try k.token.write(to: sa.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: k.certs.caCertificate, toPath: sa.appendingPathComponent("ca.crt").path)
        try "\(KubeDouble.namespace)\n".write(to: sa.appendingPathComponent("namespace"), atomically: true, encoding: .utf8)
        let inCluster = try KubeConnection.resolve(kubeconfig: nil, context: nil, namespace: nil,
                                                   environment: ["KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": String(k.port)],
                                                   serviceAccountDirectory: sa.path)
        #expect(inCluster.namespace == KubeDouble.namespace)
        #expect(inCluster.credential == .tokenFile(sa.appendingPathComponent("token").path))
        _ = try await KubeClient(connection: inCluster).list("/api/v1/namespaces/\(KubeDouble.namespace)/pods", labelSelector: "")
        // A rotated token is read again on the next request.
        try "rotated-and-wrong".write(to: sa.appendingPathComponent("token"), atomically: true, encoding: .utf8)
        await #expect(throws: KubeError.self) { _ = try await KubeClient(connection: inCluster).get("/api/v1/namespaces/\(KubeDouble.namespace)/pods") }

        // TLS is verified: a certificate from another CA is refused.
        let other = try TestCertificates(directory: k.directory, domain: "other.test", name: "other")
        let wrongCA = k.directory.appendingPathComponent("kubeconfig-wrong-ca")
        try KubeDouble.kubeconfigText(server: "https://127.0.0.1:\(k.port)", caFile: other.caCertificate, token: k.token)
            .write(to: wrongCA, atomically: true, encoding: .utf8)
        let bad = KubeClient(connection: try KubeConnection.fromKubeconfig(path: wrongCA.path, context: nil, namespace: nil))
        do {
            _ = try await bad.get("/api/v1/namespaces/\(KubeDouble.namespace)/pods")
            Issue.record("a server certificate from another CA was accepted")
        } catch let e as KubeError {
            #expect(e.description.contains("TLS to the Kubernetes API"), "\(e)")
        }
        // Polls reuse connections instead of a TLS handshake each.
        let client = try k.client()
        let before = try await client.request("GET", "/_double/connections")["connections"].int ?? 0
        for _ in 0..<20 { _ = try await client.list("/api/v1/namespaces/\(KubeDouble.namespace)/pods", labelSelector: "") }
        let after = try await client.request("GET", "/_double/connections")["connections"].int ?? 0
        #expect(after - before <= 2, "\(after - before) connections for 21 requests")
        // Skipping verification is refused outright.
        let insecure = k.directory.appendingPathComponent("kubeconfig-insecure")
        try KubeDouble.kubeconfigText(server: "https://127.0.0.1:\(k.port)", caFile: k.certs.caCertificate, token: k.token,
                                      extraCluster: "\n    insecure-skip-tls-verify: true").write(to: insecure, atomically: true, encoding: .utf8)
        #expect(throws: KubeConnection.ConfigError.self) { _ = try KubeConnection.fromKubeconfig(path: insecure.path, context: nil, namespace: nil) }
        // A wrong token gets a 401 that says what to check.
        var wrongToken = c
        wrongToken.credential = .token("nope")
        do {
            _ = try await KubeClient(connection: wrongToken).get("/api/v1/namespaces/\(KubeDouble.namespace)/pods")
            Issue.record("a wrong token was accepted")
        } catch let e as KubeError {
            #expect(e.code == 401)
            #expect(e.description.contains("credentials"))
        }
    }

    @Test func seedMakesASnapshotGeneration() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        let phases = Phases()
        try await p.seed(project: shop, generation: generation()) { phase, _ in phases.add(phase) }
        #expect(phases.all.first == "fetching")
        #expect(phases.all.contains("restoring"))
        #expect(phases.all.contains("snapshotting"))

        let name = "devdb-gen-shop-1"
        let pvc = try #require(try await k.created("PersistentVolumeClaim").first)
        #expect(pvc.at("metadata.name").string == name)
        #expect(pvc.at("spec.dataSource").isNull)
        #expect(pvc.at("spec.storageClassName").string == "csi-hostpath-sc")
        #expect(pvc.at("spec.resources.requests.storage").string == "10Gi")
        let job = try #require(try await k.created("Job").first)
        #expect(job.at("metadata.name").string == "\(name)-restore")
        // The Job is owned by the volume it fills.
        let owner = job.at("metadata.ownerReferences")[0]
        #expect(owner["kind"].string == "PersistentVolumeClaim" && owner["name"].string == name)
        #expect(owner["uid"].string?.isEmpty == false)
        let spec = job.at("spec.template.spec")
        #expect(job.at("spec.backoffLimit").int == 0)
        #expect(spec["restartPolicy"].string == "Never")
        #expect(spec.at("securityContext.runAsNonRoot").bool == true)
        #expect(spec["automountServiceAccountToken"].bool == false)
        let fetch = spec["initContainers"][0]
        #expect(fetch["image"].string == "registry.example.com/devdb:1.0")
        #expect(fetch["command"].array.compactMap(\.string) == ["devdb-fetch-dump", "--url", "s3://dumps/shop.dump", "--out",
                                                              "/var/lib/postgresql/data/devdb-restore.dump", "--credentials-dir", "/etc/devdb/s3"])
        // S3 credentials are the mounted Secret's files, never environment variables.
        #expect(fetch["env"].array.allSatisfy { !($0["name"].string ?? "").contains("KEY") && $0["valueFrom"].isNull })
        #expect(fetch["volumeMounts"].array.contains { $0["name"] == "s3-credentials" && $0["mountPath"] == "/etc/devdb/s3" })
        #expect(spec["volumes"].array.contains { $0["name"] == "s3-credentials" && $0.at("secret.secretName") == "devdb-s3" })
        #expect(!spec["containers"][0]["volumeMounts"].array.contains { $0["name"] == "s3-credentials" }, "only the fetch step sees them")
        let restore = spec["containers"][0]
        #expect(restore["image"].string == "postgres:15-bookworm")
        let script = restore["command"][2].string ?? ""
        #expect(script.contains("pg_restore") && script.contains("-j 2") && script.contains("ANALYZE") && script.contains("-m fast -w stop"))

        let snap = try #require(try await k.created("VolumeSnapshot").first)
        #expect(snap.at("metadata.name").string == name)
        #expect(snap.at("spec.volumeSnapshotClassName").string == "csi-hostpath-snapclass")
        #expect(snap.at("spec.source.persistentVolumeClaimName").string == name)
        #expect(snap.at("metadata.labels").object?["devdb.io/project"] == "shop")
        #expect(snap.at("metadata.labels").object?["devdb.io/generation"] == "1")
        // The restored volume and its Job are gone; the ready snapshot stays.
        #expect(try await k.inventory() == ["VolumeSnapshot/\(name)"])
        #expect(try await k.object("VolumeSnapshot", name)?.at("status.readyToUse").bool == true)
        // The snapshot was taken only after the Job succeeded.
        let reqs = try await k.requests()
        let snapAt = try #require(reqs.firstIndex { $0["verb"].string == "create" && $0["resource"].string == "volumesnapshots" })
        #expect(reqs[..<snapAt].contains { $0["verb"].string == "get" && $0["resource"].string == "jobs" })
    }

    @Test func databaseFromTheSnapshotThenResetAndDelete() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        let d = database()
        let phases = Phases()
        let info = try await p.create(database: d, from: generation()) { phases.add($0) }
        let name = "devdb-db-kate-pg"
        #expect(info.host == "\(name).\(KubeDouble.namespace).svc.cluster.local")
        #expect(info.port == 5432)
        #expect(info.cloneMethod == "snapshot")
        #expect(info.note == nil)
        #expect(phases.all.contains("starting"))
        #expect(try await k.inventory() == ["Deployment/\(name)", "PersistentVolumeClaim/\(name)", "Pod/\(name)-5d8f7c9b6-" + ((try await k.objects().first { $0["kind"].string == "Pod" }?.at("metadata.name").string ?? "").suffix(5)),
                                            "Secret/\(name)", "Service/\(name)", "VolumeSnapshot/devdb-gen-shop-1"])

        let secret = try #require(try await k.created("Secret").first)
        #expect(secret.at("stringData.password").string == d.password)
        let labels = try #require(secret.at("metadata.labels").object)
        for key in ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component", "app.kubernetes.io/managed-by",
                    "devdb.io/project", "devdb.io/database", "devdb.io/owner"] {
            #expect(labels[key] != nil, "label \(key)")
        }
        #expect(labels["devdb.io/owner"] == "kate_example.com")
        let secretUID = try #require(try await k.object("Secret", name)?.at("metadata.uid").string)

        // The Secret owns the rest, so deleting it cascades.
        let pvc = try #require(try await k.created("PersistentVolumeClaim").last)
        let deployment = try #require(try await k.created("Deployment").first)
        let service = try #require(try await k.created("Service").first)
        for o in [pvc, deployment, service] {
            #expect(o.at("metadata.ownerReferences")[0]["uid"].string == secretUID, "\(o["kind"]) is owned by the Secret")
            #expect(o.at("metadata.labels") == secret.at("metadata.labels"))
        }
        #expect(pvc.at("spec.dataSource") == ["apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "devdb-gen-shop-1"])

        #expect(deployment.at("spec.replicas").int == 1)
        #expect(deployment.at("spec.strategy.type").string == "Recreate")
        let selector = try #require(deployment.at("spec.selector.matchLabels").object)
        let podLabels = try #require(deployment.at("spec.template.metadata.labels").object)
        #expect(selector.allSatisfy { podLabels[$0.key] == $0.value })
        #expect(service.at("spec.selector").object == selector)
        #expect(service.at("spec.type").string == "ClusterIP")
        let pod = deployment.at("spec.template.spec")
        let postgres = pod["containers"][0]
        #expect(service.at("spec.ports")[0]["targetPort"].string == postgres["ports"][0]["name"].string)
        #expect(service.at("spec.ports")[0]["port"].int == 5432 && postgres["ports"][0]["containerPort"].int == 5432)
        #expect(!postgres["readinessProbe"].isNull)
        #expect(postgres.at("resources.requests.memory").string == "256Mi" && postgres.at("resources.limits.memory").string == "1Gi")
        #expect(pod.at("securityContext.runAsNonRoot").bool == true && pod.at("securityContext.runAsUser").int == 999)
        #expect(postgres.at("securityContext.allowPrivilegeEscalation").bool == false)
        // The password is only in the Secret: not in the Deployment, not in any env.
        #expect(!String(decoding: deployment.encoded(), as: UTF8.self).contains(d.password))
        #expect(pod["volumes"].array.contains { $0.at("secret.secretName").string == name })

        // Reset: a new volume from the snapshot and a new Deployment; same Secret, Service and host.
        let serviceUID = try await k.object("Service", name)?.at("metadata.uid").string
        let oldPVC = try await k.object("PersistentVolumeClaim", name)?.at("metadata.uid").string
        let again = try await p.reset(database: d, to: generation()) { _ in }
        #expect(again == info)
        #expect(try await k.object("Secret", name)?.at("metadata.uid").string == secretUID)
        #expect(try await k.object("Service", name)?.at("metadata.uid").string == serviceUID)
        #expect(try await k.object("PersistentVolumeClaim", name)?.at("metadata.uid").string != oldPVC)
        #expect(try await k.object("Deployment", name) != nil)

        // The generation is in use: its snapshot stays.
        await #expect(throws: (any Error).self) { try await p.deleteGeneration(generation()) }
        #expect(try await k.object("VolumeSnapshot", "devdb-gen-shop-1") != nil)

        try await p.delete(database: d)
        #expect(try await k.inventory() == ["VolumeSnapshot/devdb-gen-shop-1"])
        try await p.deleteGeneration(generation())
        #expect(try await k.inventory() == [])
    }

    @Test func withoutASnapshotClassEachDatabaseRestores() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner({ $0.snapshotClass = nil }, projects: [shop])
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        #expect(try await k.requests().isEmpty, "no objects for a generation without snapshots")
        let d = database("dev-1")
        let phases = Phases()
        let info = try await p.create(database: d, from: generation()) { phases.add($0) }
        #expect(info.cloneMethod == "restore")
        #expect(info.note?.contains("no VolumeSnapshot class") == true)
        #expect(phases.all.contains { $0.contains("(no VolumeSnapshot class)") })
        let pvc = try #require(try await k.created("PersistentVolumeClaim").first)
        #expect(pvc.at("spec.dataSource").isNull)
        let job = try #require(try await k.created("Job").first)
        #expect(job.at("spec.template.spec.volumes")[0].at("persistentVolumeClaim.claimName").string == "devdb-db-dev-1")
        #expect(job.at("metadata.ownerReferences")[0]["kind"].string == "Secret")
        // Its pods must not match the database Service's selector.
        #expect(job.at("spec.template.metadata.labels.app\\.kubernetes\\.io/component").isNull)
        #expect(job.at("spec.template.metadata.labels").object?["app.kubernetes.io/component"] == "restore")
        #expect(try await k.object("Job", "devdb-db-dev-1-restore") == nil, "the finished restore Job is removed")
        try await p.delete(database: d)
        #expect(try await k.inventory() == [])
    }

    @Test func imagePullFailureFailsTheDatabaseAndLeavesNothing() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        try await k.faults(["image_pull": "postgres:15"])
        do {
            _ = try await p.create(database: database(), from: generation()) { _ in }
            Issue.record("create succeeded although the image cannot be pulled")
        } catch {
            #expect("\(error)".contains("cannot pull the image"), "\(error)")
            #expect("\(error)".contains("ErrImagePull") || "\(error)".contains("ImagePullBackOff"), "\(error)")
        }
        #expect(try await k.inventory() == ["VolumeSnapshot/devdb-gen-shop-1"])
    }

    /// Seeds under `fault`; the seed must fail with an error naming all of `expected`, and leave
    /// no object behind.
    func expectSeedFails(_ fault: JSONValue, _ expected: [String], tweak: (inout KubernetesSettings) -> Void = { _ in }) async throws {
        let k = try KubeDouble()
        let p = try k.provisioner(tweak)
        try await k.faults(fault)
        do {
            try await p.seed(project: shop, generation: generation()) { _, _ in }
            Issue.record("seed succeeded under \(fault)")
        } catch {
            for text in expected { #expect("\(error)".contains(text), "\(error)") }
        }
        try await k.faults([:])
        #expect(try await k.inventory() == [])
    }

    @Test func aVolumeThatNeverBindsFailsWithItsReason() async throws {
        try await expectSeedFails(["pvc_never_binds": true], ["did not bind within 1 s", "csi-hostpath-sc"]) { $0.bindTimeout = 1 }
    }

    @Test func aSnapshotThatNeverBecomesReadyFails() async throws {
        try await expectSeedFails(["snapshot_never_ready": true], ["was not readyToUse within 1 s", "csi-hostpath-snapclass"]) { $0.snapshotTimeout = 1 }
    }

    @Test func aFailedRestorePassesOnItsMessage() async throws {
        try await expectSeedFails(["restore_fails": "pg_restore: error: input file does not appear to be a valid archive"],
                                  ["restore job devdb-gen-shop-1-restore failed", "input file does not appear to be a valid archive"])
    }

    @Test func anImageThatMustNotBePulledAndIsMissingFailsAtOnce() async throws {
        // kind-e2e's mistake: pull policy Never reaching the Postgres image.
        try await expectSeedFails(["image_never_pull": "postgres:"], ["ErrImageNeverPull", "not present with pull policy of Never", "databases.imagePullPolicy"]) {
            $0.postgresImagePullPolicy = "Never"
        }
    }

    @Test func aVolumeThatCannotBeMountedFailsWithTheClustersReason() async throws {
        try await expectSeedFails(["mount_fails": "MountVolume.SetUp failed for volume \"s3-credentials\" : secret \"devdb-s3\" not found"],
                                  ["cannot mount its volumes (FailedMount)", "secret \"devdb-s3\" not found"])
    }

    @Test func anUnschedulablePodFailsWithTheClustersReason() async throws {
        try await expectSeedFails(["unschedulable": "0/3 nodes are available: 3 Insufficient memory."],
                                  ["cannot be scheduled", "0/3 nodes are available: 3 Insufficient memory."]) { $0.unschedulableTimeout = 1 }
    }

    @Test func volumesThatWaitForTheirFirstConsumerBindWhenThePodComes() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner { $0.bindTimeout = 30 }
        try await k.faults(["wait_for_first_consumer": true])
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        _ = try await p.create(database: database("wffc"), from: generation()) { _ in }
        #expect(try await k.inventory().contains("Deployment/devdb-db-wffc"))
    }

    @Test func throttlingAndBlipsOfTheAPIServerAreRetried() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        // 429 with Retry-After, then 503s, in the middle of a seed: it still finishes.
        try await k.faults(["throttle": 2, "unavailable": 3])
        let started = Date()
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        let answered = try await k.requests().compactMap { $0["answered"].int }
        #expect(answered.filter { $0 == 429 }.count == 2 && answered.filter { $0 == 503 }.count == 3, "\(answered)")
        #expect(Date().timeIntervalSince(started) >= 2, "Retry-After: 1 was honoured twice")
        #expect(try await k.inventory() == ["VolumeSnapshot/devdb-gen-shop-1"])
    }

    @Test func aClusterWithoutTheSnapshotAPISaysWhatToDo() async throws {
        try await expectSeedFails(["no_snapshot_api": true], ["VolumeSnapshot API", "leave the snapshot class empty"])
    }

    @Test func reconcileRemovesOrphansAndReportsWhatTheClusterSays() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        var d = database()
        _ = try await p.create(database: d, from: generation()) { _ in }
        d.state = .ready
        // An instance nobody knows (its catalog entry was lost) and an unknown generation.
        var ghost = database("ghost")
        ghost.state = .ready
        _ = try await p.create(database: ghost, from: generation()) { _ in }
        try await p.seed(project: shop, generation: generation(7)) { _, _ in }

        var report = try await p.recover(databases: [d], generations: [generation()], snapshots: [])
        #expect(report.orphansRemoved == ["generation shop/7", "ghost"])
        #expect(report.healthy == ["kate-pg"])
        #expect(report.missing.isEmpty && report.unhealthy.isEmpty)
        try await waitUntilAsync { try await k.inventory().allSatisfy { !$0.contains("ghost") && !$0.contains("gen-shop-7") } }

        // The pod stops being ready: reported with the cluster's view.
        let pod = try #require(try await k.objects().first { $0["kind"].string == "Pod" }?.at("metadata.name").string)
        try await k.setPod(pod, ready: false)
        try await waitUntilAsync { try await p.recover(databases: [d], generations: [generation()], snapshots: []).unhealthy["kate-pg"] != nil }
        try await k.setPod(pod, ready: true)
        try await waitUntilAsync { try await p.recover(databases: [d], generations: [generation()], snapshots: []).healthy == ["kate-pg"] }

        // Someone deletes the Deployment: the catalog entry has no instance.
        try await k.removeBehindOurBack("deployments", "devdb-db-kate-pg")
        report = try await p.recover(databases: [d], generations: [generation()], snapshots: [])
        #expect(report.missing == ["kate-pg"])
        // And a snapshot that disappeared marks its generation.
        try await k.removeBehindOurBack("volumesnapshots", "devdb-gen-shop-1")
        report = try await p.recover(databases: [], generations: [generation()], snapshots: [])
        #expect(report.missingGenerations.map(\.number) == [1])
    }

    @Test func longNamesStayValidObjectNames() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        let long = String(repeating: "a", count: 60) + "-z9"
        let d = database(long)
        let info = try await p.create(database: d, from: generation()) { _ in }
        let service = try #require(info.host.split(separator: ".").first)
        #expect(service.count <= 63)
        #expect(service != Substring("devdb-db-\(long)"))
        try await p.delete(database: d)
        #expect(try await k.inventory() == ["VolumeSnapshot/devdb-gen-shop-1"])
    }
}

func waitUntilAsync(timeout: Double = 20, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(100))
    }
    Issue.record("condition not met within \(timeout) s")
}

extension KubernetesProvisionerTests {
    /// A refresh makes a new generation (snapshot) and leaves databases made from the old one as
    /// they are; the old snapshot stays while they use it.
    @Test func refreshLeavesRunningDatabasesAlone() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        try await p.seed(project: shop, generation: generation(1)) { _, _ in }
        let d = database()
        _ = try await p.create(database: d, from: generation(1)) { _ in }
        let before = try await k.objects().filter { $0.at("metadata.labels").object?["devdb.io/database"] == "kate-pg" }
            .map { "\($0["kind"].string!)/\($0.at("metadata.uid").string!)" }.sorted()
        try await p.seed(project: shop, generation: generation(2)) { _, _ in }
        let after = try await k.objects().filter { $0.at("metadata.labels").object?["devdb.io/database"] == "kate-pg" }
            .map { "\($0["kind"].string!)/\($0.at("metadata.uid").string!)" }.sorted()
        #expect(before == after, "the database's objects are the same objects")
        #expect(try await k.object("VolumeSnapshot", "devdb-gen-shop-2")?.at("status.readyToUse").bool == true)
        await #expect(throws: (any Error).self) { try await p.deleteGeneration(generation(1)) }
        // A new database starts from the new generation.
        let e = database("fresh")
        _ = try await p.create(database: e, from: generation(2)) { _ in }
        #expect(try await k.object("PersistentVolumeClaim", "devdb-db-fresh")?.at("spec.dataSource.name").string == "devdb-gen-shop-2")
        try await p.delete(database: d)
        try await p.deleteGeneration(generation(1))
        #expect(try await k.object("VolumeSnapshot", "devdb-gen-shop-1") == nil)
    }
}

extension KubernetesProvisionerTests {
    @Test func quantities() {
        #expect(Quantity.bytes("10Gi") == 10_737_418_240.0)
        #expect(Quantity.bytes("500M") == 500e6)
        #expect(Quantity.bytes("1.5Ti") == 1.5 * pow(1024, 4))
        #expect(Quantity.bytes("1073741824") == 1_073_741_824.0)
        #expect(Quantity.bytes("ten") == nil)
    }

    /// A database volume is at least as large as its snapshot's restoreSize, and a generation
    /// whose snapshot is gone fails with what to do.
    @Test func aVolumeFromASnapshotIsAtLeastItsRestoreSize() async throws {
        let k = try KubeDouble()
        try await k.provisioner { $0.volumeSize = "20Gi" }.seed(project: shop, generation: generation()) { _, _ in }
        let small = try k.provisioner { $0.volumeSize = "1Gi" }
        _ = try await small.create(database: database(), from: generation()) { _ in }
        #expect(try await k.object("PersistentVolumeClaim", "devdb-db-kate-pg")?.at("spec.resources.requests.storage") == "20Gi")
        try await k.removeBehindOurBack("volumesnapshots", "devdb-gen-shop-1")
        do {
            _ = try await small.create(database: database("late"), from: generation()) { _ in }
            Issue.record("a database was made from a snapshot that is gone")
        } catch {
            #expect("\(error)".contains("has no ready snapshot"), "\(error)")
            #expect("\(error)".contains("devdb project refresh shop"), "\(error)")
        }
        #expect(try await k.inventory().allSatisfy { !$0.contains("late") })
    }
}

/// Each generation and database runs the image of its own PostgreSQL major.
@Suite struct PostgresMajorImageTests {
    @Test func theRestoreJobAndTheDatabaseUseTheGenerationsMajor() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner { $0.postgresImages = [18: "registry.example.com/postgres:18.6"] }
        var g17 = generation(1)
        g17.state = .fetching
        g17.postgresMajor = 17
        try await p.seed(project: shop, generation: g17) { _, _ in }
        let job = try #require(try await k.created("Job").first)
        #expect(job.at("spec.template.spec")["containers"][0]["image"].string == "postgres:17-bookworm")
        // The restore step branches on the format devdb-fetch-dump read from the bytes.
        let script = job.at("spec.template.spec")["containers"][0]["command"][2].string ?? ""
        #expect(script.contains("plain-gzip)") && script.contains("directory-tar)"))

        var d = database("eighteen")
        d.postgresMajor = 18
        var ready = generation(1)
        ready.postgresMajor = 18
        _ = try await p.create(database: d, from: ready) { _ in }
        let deployment = try #require(try await k.created("Deployment").first)
        let images = deployment.at("spec.template.spec")["containers"].array.compactMap { $0["image"].string }
            + deployment.at("spec.template.spec")["initContainers"].array.compactMap { $0["image"].string }
        #expect(!images.isEmpty && images.allSatisfy { $0 == "registry.example.com/postgres:18.6" }, "\(images)")
        // Pull secrets and the restore service account reach the pods the provisioner makes.
        var s = KubernetesSettings()
        s.imagePullSecrets = ["ecr"]
        s.restoreServiceAccount = "devdb-restore"
        let m = KubeManifests(settings: s, namespace: "x")
        let restoreSpec = m.restoreJob(name: "j", claim: "c", labels: [:], project: shop, major: 17, owner: nil).at("spec.template.spec")
        #expect(restoreSpec["serviceAccountName"].string == "devdb-restore")
        #expect(restoreSpec["imagePullSecrets"][0]["name"].string == "ecr")
        #expect(restoreSpec["volumes"].array.contains { $0["name"] == "shm" && $0.at("emptyDir.medium") == "Memory" })
        let dbSpec = m.deployment(database("x"), owner: ["kind": "Secret"]).at("spec.template.spec")
        #expect(dbSpec["imagePullSecrets"][0]["name"].string == "ecr" && dbSpec["serviceAccountName"].isNull)
        #expect(dbSpec["containers"][0].at("livenessProbe.exec").isNull == false, "exec probe, not tcpSocket")
        // Platform-assigned uids (OpenShift): none fixed; alpine images: 70.
        var open = KubernetesSettings()
        open.postgresUID = nil
        #expect(KubeManifests(settings: open, namespace: "x").deployment(database("y"), owner: ["kind": "Secret"])
            .at("spec.template.spec.securityContext.runAsUser").isNull)
        // Before majors were recorded: 15.
        #expect(KubeManifests(settings: KubernetesSettings(), namespace: "x").deployment(database("old"), owner: ["kind": "Secret"])
            .at("spec.template.spec")["containers"][0]["image"].string == "postgres:15-bookworm")
    }
}

@Suite struct RestoreVolumeSizeTests {
    @Test func theRestoreVolumeIsSizedFromTheDumpAndThePreviousGeneration() {
        let m = KubeManifests(settings: KubernetesSettings(), namespace: "x")
        #expect(m.restoreVolumeSize(dumpBytes: nil, previousRestored: nil) == "10Gi")
        #expect(m.restoreVolumeSize(dumpBytes: 3 << 30, previousRestored: nil) == "22Gi")
        #expect(m.restoreVolumeSize(dumpBytes: 3 << 30, previousRestored: "30Gi") == "39Gi")
        #expect(m.restoreVolumeSize(dumpBytes: 100 << 20, previousRestored: "1Gi") == "10Gi", "never below volumeSize")
        var s = KubernetesSettings()
        s.restoreVolumeSize = "200Gi"
        #expect(KubeManifests(settings: s, namespace: "x").restoreVolumeSize(dumpBytes: 3 << 30, previousRestored: nil) == "200Gi")
        #expect(KubernetesProvisioner.dumpBytes("etag=\"x\";content-length=12345") == 12345)
        #expect(KubernetesProvisioner.dumpBytes("size=99;mtime=1.2") == 99)
    }
}

@Suite struct SnapshotClassCheckTests {
    @Test func aRetainSnapshotClassIsWarnedAbout() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        #expect(await p.checkSnapshotClass() == nil)
        try await k.faults(["snapshot_class_policy": "Retain"])
        let warning = await p.checkSnapshotClass()
        #expect(warning?.contains("deletionPolicy Retain") == true && warning?.contains("csi-hostpath-snapclass") == true, "\(String(describing: warning))")
        let noClass = try k.provisioner { $0.snapshotClass = nil }
        #expect(await noClass.checkSnapshotClass() == nil)
    }

    /// What `helm uninstall` keeps, removed by the chart's opt-in pre-delete hook: `devdb-api
    /// --uninstall` deletes everything of its installation and nothing of another one's.
    @Test func uninstallRemovesEverythingOfThisInstallationAndNothingElse() async throws {
        let k = try KubeDouble()
        _ = try await readyDatabase(try k.provisioner())
        let other = try k.provisioner { $0.instance = "other" }
        try await other.seed(project: shop, generation: generation()) { _, _ in }
        _ = try await other.create(database: database("theirs"), from: generation()) { _ in }
        let before = try await k.inventory()
        #expect(before.contains("Secret/devdb-db-kate-pg") && before.contains("VolumeSnapshot/devdb-gen-shop-1"), "\(before)")

        let r = try run([try TestPaths.binary("devdb-api"), "--provisioner", "kubernetes", "--kubeconfig", k.kubeconfig.path,
                         "--namespace", KubeDouble.namespace, "--instance", "devdb", "--uninstall"], timeout: 120, check: false)
        #expect(r.status == 0 && r.stdout.contains("removed") && r.stdout.contains("secrets/devdb-db-kate-pg"), "\(r.output)")
        let labels = try await k.objects().filter { $0["kind"].string != "Event" }.map { $0.at("metadata.labels")["app.kubernetes.io/instance"].string }
        let after = try await k.inventory()
        #expect(!labels.contains("devdb"), "nothing of this installation is left: \(after)")
        #expect(labels.contains("other"), "another installation's objects stay: \(after)")
        let again = try run([try TestPaths.binary("devdb-api"), "--provisioner", "kubernetes", "--kubeconfig", k.kubeconfig.path,
                             "--namespace", KubeDouble.namespace, "--instance", "devdb", "--uninstall"], timeout: 60, check: false)
        #expect(again.status == 0 && again.stdout.contains("nothing to remove"), "\(again.output)")
        let local = try run([try TestPaths.binary("devdb-api"), "--uninstall"], timeout: 30, check: false)
        #expect(local.status != 0 && local.output.contains("--provisioner local"), "\(local.output)")
    }
}
