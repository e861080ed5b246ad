import DevDBCatalog
import DevDBProvisioning
import DevDBRedis
import DevDBTestSupport
import Foundation
import Testing

/// Issue 24: the first install on a real cluster. Each test holds the provisioner to something a
/// real API server, controller or kubelet does (the API server double does it too), and fails
/// when the provisioner ignores it.
extension KubernetesProvisionerTests {
    // MARK: transient faults the cluster retries

    /// The snapshot controller writes an error it retries, then clears it: the seed waits.
    @Test func aSnapshotErrorTheControllerRetriesDoesNotFailTheSeed() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        let message = "Failed to check and update snapshot content: the object has been modified; please apply your changes to the latest version and try again"
        try await k.faults(["snapshot_transient_error": ["message": .string(message), "seconds": .number(1.5)]])
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        #expect(try await k.inventory() == ["VolumeSnapshot/devdb-gen-shop-1"])
        // Past the deadline the last error is what the seed reports.
        let impatient = try k.provisioner { $0.snapshotTimeout = 1 }
        try await k.faults(["snapshot_transient_error": ["message": .string(message), "seconds": 60]])
        do {
            try await impatient.seed(project: shop, generation: generation(2)) { _, _ in }
            Issue.record("the seed succeeded although the snapshot never lost its error")
        } catch {
            #expect("\(error)".contains("the object has been modified") && "\(error)".contains("still failing after 1 s"), "\(error)")
        }
    }

    /// A registry's 429 and a busy container runtime: the kubelet retries, so does DevDB.
    @Test func imagePullAndContainerCreateErrorsThatClearAreWaitedOut() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        try await k.faults(["image_pull": "postgres:15", "image_pull_clears_after": .number(1.5)])
        _ = try await p.create(database: database("pulled"), from: generation()) { _ in }
        try await k.faults(["create_container_error": ["image": "postgres:15", "seconds": .number(1.5)]])
        _ = try await p.create(database: database("created"), from: generation()) { _ in }
        // One that does not clear fails after the transient deadline, with the kubelet's message.
        let impatient = try k.provisioner { $0.transientPodErrorTimeout = 1 }
        try await k.faults(["image_pull": "postgres:15"])
        do {
            _ = try await impatient.create(database: database("never"), from: generation()) { _ in }
            Issue.record("created although the image never pulled")
        } catch {
            #expect("\(error)".contains("cannot pull the image") && "\(error)".contains("(for 1 s)"), "\(error)")
        }
        try await k.faults([:])
        #expect(try await k.inventory().allSatisfy { !$0.contains("never") })
    }

    /// The API server is away longer than one request's retries, in the middle of a restore:
    /// the seed waits within its own deadline.
    @Test func anAPIServerOutageInTheMiddleOfASeedIsWaitedOut() async throws {
        let k = try KubeDouble()
        var client = try k.client()
        client.retryBudget = 1
        let p = KubernetesProvisioner(client: client, settings: try k.provisioner().settings) { _ in shop }
        let seed = Task { try await p.seed(project: shop, generation: generation()) { _, _ in } }
        try await waitUntilAsync { try await k.objects().contains { $0["kind"] == "Pod" && $0.at("metadata.labels").object?["job-name"] != nil } }
        try await k.faults(["outage_seconds": 4])
        try await seed.value
        let answered = try await k.requests().compactMap { $0["answered"].int }
        #expect(answered.filter { $0 == 503 }.count >= 3, "the outage was seen: \(answered.count) answers")
        #expect(try await k.inventory() == ["VolumeSnapshot/devdb-gen-shop-1"])
    }

    /// An API restarted while a seed ran (a helm upgrade): the running restore Job is adopted,
    /// not deleted and started again.
    @Test func aSeedAdoptsTheRestoreJobItsPredecessorStarted() async throws {
        let k = try KubeDouble()
        let before = try k.provisioner()
        // What the previous API pod had made when it stopped.
        let g = generation()
        let volume = before.manifests.generationObject(g)
        let job = before.manifests.restoreJobName(volume)
        let ns = "/api/v1/namespaces/\(KubeDouble.namespace)"
        let claim = try await k.client().create("\(ns)/persistentvolumeclaims",
                                                before.manifests.volumeClaim(name: volume, labels: before.manifests.generationLabels(g), snapshot: nil, owner: nil, size: "10Gi"))
        try await k.client().create("/apis/batch/v1/namespaces/\(KubeDouble.namespace)/jobs",
                                    before.manifests.restoreJob(name: job, claim: volume, labels: before.manifests.generationLabels(g), project: shop, major: 15, owner: claim))
        let started = try await k.requests().count
        let phases = Phases()
        try await k.provisioner().seed(project: shop, generation: g) { phase, _ in phases.add(phase) }
        let after = try await k.requests().dropFirst(started)
        #expect(!after.contains { $0["verb"] == "create" && $0["resource"] == "jobs" }, "the running Job was adopted, not made again")
        #expect(!after.contains { $0["verb"] == "delete" && $0["resource"] == "persistentvolumeclaims" && after.firstIndex(of: $0)! < after.firstIndex { $0["verb"] == "create" && $0["resource"] == "volumesnapshots" }! })
        #expect(phases.all.contains { $0.contains("adopted") }, "\(phases.all)")
        #expect(try await k.inventory() == ["VolumeSnapshot/devdb-gen-shop-1"])
    }

    /// The same for a database's own restore (no snapshot class): the running Job is adopted.
    @Test func aDatabaseRestoreIsAdoptedAfterARestart() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner({ $0.snapshotClass = nil }, projects: [shop])
        let d = database("solo")
        let m = p.manifests
        let name = m.databaseObject(d.name)
        let ns = "/api/v1/namespaces/\(KubeDouble.namespace)"
        // What the previous API pod had made when it stopped.
        let owner = try await k.client().create("\(ns)/secrets", m.secret(d))
        try await k.client().create("\(ns)/services", m.service(d, owner: owner))
        try await k.client().create("\(ns)/persistentvolumeclaims", m.volumeClaim(name: name, labels: m.databaseLabels(d), snapshot: nil, owner: owner))
        var labels = m.databaseLabels(d)
        labels["app.kubernetes.io/component"] = "restore"
        try await k.client().create("/apis/batch/v1/namespaces/\(KubeDouble.namespace)/jobs",
                                    m.restoreJob(name: m.restoreJobName(name), claim: name, labels: labels, project: shop, major: 15, owner: owner))
        let started = try await k.requests().count
        let phases = Phases()
        let info = try await p.create(database: d, from: .generation(generation())) { phases.add($0) }
        #expect(info.cloneMethod == "restore")
        let after = try await k.requests().dropFirst(started)
        #expect(!after.contains { $0["verb"] == "create" && ($0["resource"] == "jobs" || $0["resource"] == "secrets" || $0["resource"] == "persistentvolumeclaims") },
                "the running restore was adopted, not made again")
        #expect(phases.all.contains { $0.contains("adopted") }, "\(phases.all)")
        #expect(try await k.inventory().contains("Deployment/\(name)"))
    }

    /// At start: a configured snapshot class without the snapshot API is warned about at once.
    @Test func aMissingSnapshotAPIIsWarnedAboutAtStart() async throws {
        let k = try KubeDouble()
        try await k.faults(["no_snapshot_api": true])
        let warning = await (try k.provisioner()).checkSnapshotClass()
        #expect(warning?.contains("VolumeSnapshot API") == true && warning?.contains("checked at start") == true, "\(String(describing: warning))")
    }

    /// Restore pods get their own resources and the annotations that keep them; every pod opts
    /// out of sidecar injection.
    @Test func restorePodsHaveTheirOwnResourcesAndAnnotations() throws {
        var s = KubernetesSettings()
        s.snapshotClass = "csi-hostpath-snapclass"
        let m = KubeManifests(settings: s, namespace: KubeDouble.namespace)
        let job = m.restoreJob(name: "j", claim: "c", labels: [:], project: shop, major: 15, owner: nil)
        let template = job.at("spec.template")
        #expect(template.at("metadata.annotations") == ["sidecar.istio.io/inject": "false", "karpenter.sh/do-not-disrupt": "true",
                                                        "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"])
        for c in template.at("spec.initContainers").array + template.at("spec.containers").array {
            #expect(c["resources"] == ["requests": ["cpu": "500m", "memory": "1Gi"], "limits": ["cpu": "2", "memory": "4Gi"]], "\(c["name"])")
        }
        let deployment = m.deployment(database(), owner: ["apiVersion": "v1", "kind": "Secret", "metadata": ["name": "x", "uid": "u"]])
        #expect(deployment.at("spec.template.metadata.annotations") == ["sidecar.istio.io/inject": "false"])
        #expect(deployment.at("spec.template.spec.containers").array.first?["resources"].at("limits.memory") == "1Gi")
    }

    /// Missing snapshot CRDs are found before a restore, not after it.
    @Test func aMissingSnapshotAPIIsFoundBeforeRestoring() async throws {
        let k = try KubeDouble()
        try await k.faults(["no_snapshot_api": true])
        do {
            try await k.provisioner().seed(project: shop, generation: generation()) { _, _ in }
            Issue.record("seeded without the snapshot API")
        } catch {
            #expect("\(error)".contains("VolumeSnapshot API"), "\(error)")
        }
        let jobs = try await k.created("Job"), claims = try await k.created("PersistentVolumeClaim")
        #expect(jobs.isEmpty && claims.isEmpty, "nothing was made")
    }

    // MARK: reconcile

    /// The reconcile read the catalog, then its LIST came back late while a database was being
    /// made: the catalog is read again before the delete, and the new database keeps its objects.
    @Test func aReconcileWhoseListIsLateKeepsWhatWasMadeMeanwhile() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        var d = database()
        _ = try await p.create(database: d, from: generation()) { _ in }
        d.state = .ready
        let catalog = CatalogBox(CatalogView(databases: [d], generations: [generation()], snapshots: []))
        let firstRead = catalog.view
        try await k.faults(["slow_list": ["resource": "deployments", "seconds": 4, "times": 1]])
        let reconcile = Task { try await p.recover(firstRead) { catalog.view } }
        try await Task.sleep(for: .milliseconds(500))  // the reconcile's LIST is in flight
        var late = database("late")
        _ = try await p.create(database: late, from: generation()) { _ in }
        late.state = .ready
        catalog.view = CatalogView(databases: [d, late], generations: [generation()], snapshots: [])
        let report = try await reconcile.value
        #expect(report.orphansRemoved == [], "\(report.orphansRemoved)")
        #expect(report.spared.contains("late"), "\(report.spared)")
        #expect(try await k.inventory().contains("Deployment/devdb-db-late"))
    }

    /// Objects younger than the grace period are left alone even when no catalog entry wants them.
    @Test func youngObjectsAreLeftAloneByTheReconcile() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner { $0.orphanGracePeriod = 600 }
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        _ = try await p.create(database: database("young"), from: generation()) { _ in }
        let report = try await p.recover(databases: [], generations: [generation()], snapshots: [])
        #expect(report.orphansRemoved.isEmpty && report.spared == ["young"], "\(report)")
        let eager = try k.provisioner { $0.orphanGracePeriod = 0 }
        #expect(try await eager.recover(databases: [], generations: [generation()], snapshots: []).orphansRemoved == ["young"])
    }

    /// A reinstall over a lost catalog: its new identity deletes nothing the old one made, and
    /// reports it.
    @Test func aNewInstallationDeletesNothingAnEarlierOneMade() async throws {
        let k = try KubeDouble()
        let old = try k.provisioner { $0.installation = "old-installation" }
        _ = try await readyDatabase(old)
        let legacy = try k.provisioner { $0.installation = nil }  // a version before installation ids
        _ = try await legacy.create(database: database("legacy"), from: generation()) { _ in }
        let before = try await k.inventory()
        let new = try k.provisioner { $0.installation = "new-installation"; $0.adoptUnlabelled = false }
        let report = try await new.recover(databases: [], generations: [], snapshots: [])
        #expect(report.orphansRemoved == [], "\(report.orphansRemoved)")
        #expect(report.foreign.count == 2 && report.foreign.contains { $0.hasPrefix("installation old-installation: ") && $0.contains("deployments/devdb-db-kate-pg") }
                && report.foreign.contains { $0.hasPrefix("installation (no installation label): ") && $0.contains("deployments/devdb-db-legacy") }, "\(report.foreign)")
        #expect(try await k.inventory() == before)
        // Making a database of a name the old installation holds fails; it deletes nothing of it.
        do {
            _ = try await new.create(database: database(), from: generation()) { _ in }
            Issue.record("made a database over another installation's")
        } catch {
            #expect("\(error)".contains("409") || "\(error)".contains("already exists"), "\(error)")
        }
        #expect(try await k.inventory() == before)
        // The objects carry their installation.
        #expect(try await k.object("Deployment", "devdb-db-kate-pg")?.at("metadata.labels").object?["devdb.io/installation"] == "old-installation")
        // An upgraded installation (its catalog had data) adopts the unlabelled ones.
        let upgraded = try k.provisioner { $0.installation = "new-installation"; $0.adoptUnlabelled = true }
        #expect(try await upgraded.recover(databases: [], generations: [generation()], snapshots: []).orphansRemoved == ["legacy"])
    }

    /// The catalog keeps one installation id; a new empty catalog adopts nothing, one that
    /// already had data adopts unlabelled objects.
    @Test func theCatalogKeepsTheInstallationIdentity() async throws {
        let dir = try TestPaths.makeTemporaryDirectory("devdb-installation")
        let redis = try RedisServer(directory: dir)
        defer { redis.stop() }
        let catalog = RedisCatalogStore(redis: RedisPool(url: try RedisURL(parsing: redis.url)))
        let first = try await catalog.installationIdentity()
        #expect(first.adoptsUnlabelled == false)
        #expect(try await catalog.installationIdentity() == first)
        _ = try redis.cli(["DEL", CatalogKey.installation])
        _ = try redis.cli(["SADD", "devdb:projects", "shop"])
        let upgraded = try await catalog.installationIdentity()
        #expect(upgraded.id != first.id && upgraded.adoptsUnlabelled)
    }

    // MARK: what the double enforces

    /// A VolumeSnapshot is checked against the published CRD (its CEL rules too): 422 naming the field.
    @Test func objectsAreValidatedAgainstThePublishedCRDs() async throws {
        let k = try KubeDouble()
        guard KubeDouble.crdDirectory != nil else {
            print("skipped: ../shared/kubernetes/crds is absent")
            return
        }
        let p = try k.provisioner()
        var bad = p.manifests.volumeSnapshot(name: "bad", labels: [:], claim: "somewhere")
        bad["spec"]["source"]["volumeSnapshotContentName"] = "content"
        do {
            try await k.client().create("/apis/snapshot.storage.k8s.io/v1/namespaces/\(KubeDouble.namespace)/volumesnapshots", bad)
            Issue.record("a VolumeSnapshot with two sources was accepted")
        } catch let e as KubeError {
            #expect(e.code == 422 && "\(e)".contains("spec.source") && "\(e)".contains("exactly one of"), "\(e)")
        }
        var unknown = p.manifests.volumeSnapshot(name: "unknown", labels: [:], claim: "somewhere")
        unknown["spec"]["retain"] = true
        do {
            try await k.client().create("/apis/snapshot.storage.k8s.io/v1/namespaces/\(KubeDouble.namespace)/volumesnapshots", unknown)
            Issue.record("a VolumeSnapshot with an unknown field was accepted")
        } catch let e as KubeError {
            #expect(e.code == 400 && "\(e)".contains("strict decoding error: unknown field \"spec.retain\""), "\(e)")
        }
    }

    /// Built-in kinds against the official schemas: an unknown field (fieldValidation=Strict) and an invalid value.
    @Test func builtInObjectsAreValidatedAgainstTheOfficialSchemas() async throws {
        let k = try KubeDouble()
        let m = try k.provisioner().manifests
        var unknown = m.service(database(), owner: ["apiVersion": "v1", "kind": "Secret", "metadata": ["name": "x", "uid": "u"]])
        unknown["metadata"]["ownerReferences"] = nil
        unknown["spec"]["sessionAffinityy"] = "None"
        do {
            try await k.client().create("/api/v1/namespaces/\(KubeDouble.namespace)/services", unknown)
            Issue.record("a Service with an unknown field was accepted")
        } catch let e as KubeError {
            #expect(e.code == 400 && "\(e)".contains("unknown field \"spec.sessionAffinityy\""), "\(e)")
        }
        var invalid = m.volumeClaim(name: "claim", labels: [:], snapshot: nil, owner: nil)
        invalid["spec"]["accessModes"] = "ReadWriteOnce"  // a string, not a list
        do {
            try await k.client().create("/api/v1/namespaces/\(KubeDouble.namespace)/persistentvolumeclaims", invalid)
            Issue.record("a PVC with accessModes as a string was accepted")
        } catch let e as KubeError {
            #expect(e.code == 422 && "\(e)".contains("spec.accessModes"), "\(e)")
        }
    }

    /// What the chart's Role does not grant is refused with 403, as on a cluster.
    @Test func requestsOutsideTheChartsRBACAreForbidden() async throws {
        let k = try KubeDouble()
        do {
            _ = try await k.client().get("/api/v1/namespaces/\(KubeDouble.namespace)/pods/anything")
            Issue.record("GET of a pod was allowed; the Role grants only list")
        } catch let e as KubeError {
            #expect(e.code == 403 && "\(e)".contains("cannot get resource \"pods\""), "\(e)")
        }
        do {
            _ = try await k.client().get("/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/another-class")
            Issue.record("another VolumeSnapshotClass was readable")
        } catch let e as KubeError {
            #expect(e.code == 403, "\(e)")
        }
    }

    /// Pod Security "restricted": a template that breaks it gets no pods, and the step says why.
    @Test func podSecurityRestrictedRefusesARootDatabase() async throws {
        let k = try KubeDouble()
        let root = try k.provisioner { $0.postgresUID = 0 }
        do {
            try await root.seed(project: shop, generation: generation()) { _, _ in }
            Issue.record("a restore running as root was admitted")
        } catch {
            #expect("\(error)".contains("violates PodSecurity \"restricted:latest\"") && "\(error)".contains("runAsUser=0"), "\(error)")
        }
        #expect(try await k.inventory() == [])
    }

    /// Jobs orphan their pods unless the delete says otherwise: nothing DevDB deletes leaves pods behind.
    @Test func deletingAJobWithoutAPolicyOrphansItsPodsButDevDBsDoNot() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        try await p.seed(project: shop, generation: generation()) { _, _ in }
        try await k.settle()
        #expect(try await k.objects().filter { $0["kind"] == "Pod" }.isEmpty, "the restore's pod went with its Job")
        // A bare DELETE of a Job, as the API server applies it: the pod stays, without an owner.
        let ns = KubeDouble.namespace
        let claim = try await k.client().create("/api/v1/namespaces/\(ns)/persistentvolumeclaims",
                                                p.manifests.volumeClaim(name: "scratch", labels: [:], snapshot: nil, owner: nil, size: "1Gi"))
        try await k.client().create("/apis/batch/v1/namespaces/\(ns)/jobs",
                                    p.manifests.restoreJob(name: "scratch-restore", claim: "scratch", labels: [:], project: shop, major: 15, owner: claim))
        try await waitUntilAsync { try await k.objects().contains { $0["kind"] == "Pod" } }
        _ = try await k.client().request("DELETE", "/apis/batch/v1/namespaces/\(ns)/jobs/scratch-restore")
        try await Task.sleep(for: .seconds(1))
        let orphan = try #require(try await k.objects().first { $0["kind"] == "Pod" })
        #expect(orphan.at("metadata.ownerReferences").array.isEmpty)
    }

    /// Deleting cascades a moment later (the garbage collector) and a deleted pod lingers while it
    /// terminates: a database deleted and made again at once, and a reset, wait for that.
    @Test func deletesWaitForTheGarbageCollectorAndTerminatingPods() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        var d = try await readyDatabase(p)
        try await p.delete(database: d)
        d = database()
        _ = try await p.create(database: d, from: generation()) { _ in }
        _ = try await p.reset(database: d, to: .generation(generation())) { _ in }
        #expect(try await k.inventory().contains("Deployment/devdb-db-kate-pg"))
    }

    /// Drivers round restoreSize up; a database volume below it would never bind.
    @Test func aDatabaseVolumeIsAtLeastTheSnapshotsRoundedRestoreSize() async throws {
        let k = try KubeDouble()
        try await k.provisioner { $0.restoreVolumeSize = "1500Mi" }.seed(project: shop, generation: generation()) { _, _ in }
        #expect(try await k.object("VolumeSnapshot", "devdb-gen-shop-1")?.at("status.restoreSize") == "2Gi")
        let small = try k.provisioner { $0.volumeSize = "1Gi"; $0.bindTimeout = 3 }
        _ = try await small.create(database: database(), from: generation()) { _ in }
        #expect(try await k.object("PersistentVolumeClaim", "devdb-db-kate-pg")?.at("spec.resources.requests.storage") == "2Gi")
    }
}

/// The catalog as a test's reconcile reads it, changed while the reconcile runs.
final class CatalogBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: CatalogView
    init(_ v: CatalogView) { value = v }
    var view: CatalogView {
        get { lock.lock(); defer { lock.unlock() }; return value }
        set { lock.lock(); value = newValue; lock.unlock() }
    }
}
