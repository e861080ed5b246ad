import DevDBCatalog
import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

extension KubernetesProvisionerTests {
    /// Database snapshots on Kubernetes: the Deployment goes down, a VolumeSnapshot of the
    /// database's PVC is cut, the Deployment comes back; branches and resets are PVCs from it.
    @Test func snapshotBranchResetToAndDeleteAgainstTheDouble() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        let ready = try await readyDatabase(p)
        let d = ready
        let snap = SnapshotRecord(database: d.name, name: "before", owner: d.owner, project: d.project, generation: 1)

        let outcome = try await p.snapshot(database: ready, as: snap)
        #expect(outcome.method == "volumesnapshot")
        #expect(outcome.unavailableSeconds > 0)
        let object = p.manifests.snapshotObject(snap)
        let body = try #require(try await k.created("VolumeSnapshot").first { $0.at("metadata.name").string == object })
        #expect(body.at("spec.source.persistentVolumeClaimName").string == "devdb-db-kate-pg")
        #expect(body.at("spec.volumeSnapshotClassName").string == "csi-hostpath-snapclass")
        #expect(body.at("metadata.labels").object?["devdb.io/snapshot-of"] == "kate-pg")
        #expect(body.at("metadata.labels").object?["devdb.io/snapshot"] == "before")
        #expect(body.at("metadata.labels").object?["devdb.io/database"] == nil, "a snapshot outlives its database")
        // Consistent: the snapshot was cut only after the database's pod was gone, and the
        // Deployment was made again after it.
        let reqs = try await k.requests()
        let deleteAt = try #require(reqs.firstIndex { $0["verb"].string == "delete" && $0["resource"].string == "deployments" })
        let snapAt = try #require(reqs.firstIndex { $0["verb"].string == "create" && $0.at("body.metadata.name").string == object })
        let againAt = try #require(reqs.lastIndex { $0["verb"].string == "create" && $0["resource"].string == "deployments" })
        #expect(deleteAt < snapAt && snapAt < againAt)
        #expect(reqs[deleteAt..<snapAt].contains { $0["verb"].string == "list" && $0["resource"].string == "pods" })
        #expect(try await k.objects().contains { $0["kind"].string == "Pod" && Self.ready($0) }, "the database serves again")

        // A branch: a PVC whose dataSource is that snapshot, its own Secret with its own password.
        var branch = database("kate-branch")
        branch.base = snap.reference
        let b = try await p.create(database: branch, from: .snapshot(snap)) { _ in }
        #expect(b.cloneMethod == "snapshot")
        let claim = try #require(try await k.created("PersistentVolumeClaim").first { $0.at("metadata.name").string == "devdb-db-kate-branch" })
        #expect(claim.at("spec.dataSource.name").string == object && claim.at("spec.dataSource.kind").string == "VolumeSnapshot")
        #expect(try await k.created("Secret").first { $0.at("metadata.name").string == "devdb-db-kate-branch" }?.at("stringData.password").string == branch.password)

        // Reset to the snapshot: the database's PVC is made again from it; Secret and Service stay.
        _ = try await p.reset(database: ready, to: .snapshot(snap)) { _ in }
        let claims = try await k.created("PersistentVolumeClaim").filter { $0.at("metadata.name").string == "devdb-db-kate-pg" }
        #expect(claims.count == 2 && claims.last?.at("spec.dataSource.name").string == object)

        // Reconcile keeps known snapshots, removes unknown ones, reports missing ones.
        var orphan = snap
        orphan.name = "orphan"
        _ = try await p.snapshot(database: ready, as: orphan)
        var report = try await p.recover(databases: [ready, branch], generations: [generation()], snapshots: [snap])
        #expect(report.orphansRemoved.contains("snapshot kate-pg@orphan"), "\(report.orphansRemoved)")
        #expect(try await k.object("VolumeSnapshot", object) != nil)
        #expect(try await k.object("VolumeSnapshot", p.manifests.snapshotObject(orphan)) == nil)

        // Deleting the origin leaves the snapshot (it has its own labels), deleteSnapshot removes it.
        try await p.delete(database: ready)
        #expect(try await k.object("VolumeSnapshot", object) != nil)
        try await p.deleteSnapshot(snap)
        #expect(try await k.object("VolumeSnapshot", object) == nil)
        var gone = snap
        gone.state = .ready
        report = try await p.recover(databases: [branch], generations: [generation()], snapshots: [gone])
        #expect(report.missingSnapshots.map(\.reference) == [snap.reference])
    }

    @Test func withoutASnapshotClassASnapshotIsRefusedAndTheDatabaseKeepsRunning() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner({ $0.snapshotClass = nil }, projects: [shop])
        let d = database()
        let info = try await p.create(database: d, from: generation()) { _ in }
        var ready = d
        ready.backendHost = info.host; ready.backendPort = info.port
        do {
            _ = try await p.snapshot(database: ready, as: SnapshotRecord(database: d.name, name: "x", owner: d.owner, project: d.project, generation: 1))
            Issue.record("a snapshot without a VolumeSnapshot class was taken")
        } catch let e as SnapshotFailure {
            #expect(e.instanceRunning)
            #expect(e.description.contains("VolumeSnapshot class"))
        }
        #expect(try await !k.requests().contains { $0["verb"].string == "delete" && $0["resource"].string == "deployments" })
    }

    static func ready(_ pod: JSONValue) -> Bool {
        pod.at("status.conditions").array.contains { $0["type"].string == "Ready" && $0["status"].string == "True" }
    }
}
