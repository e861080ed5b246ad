import DevDBCatalog
import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

extension KubernetesProvisionerTests {
    /// Scale to zero on Kubernetes, against the API server double: the Deployment goes and its
    /// pod with it; the PVC (the data), Secret (the password) and Service (the address) stay; start
    /// makes the Deployment again and waits for the pod to be ready.
    @Test func hibernateScalesToZeroAndWakeComesBackWithTheSameObjects() async throws {
        let k = try KubeDouble()
        let p = try k.provisioner()
        let ready = try await readyDatabase(p)
        let d = ready
        let name = "devdb-db-kate-pg"

        try await p.stop(database: ready)
        let asleep = try await k.inventory()
        #expect(!asleep.contains("Deployment/\(name)") && !asleep.contains { $0.hasPrefix("Pod/\(name)") }, "\(asleep)")
        for kept in ["PersistentVolumeClaim/\(name)", "Secret/\(name)", "Service/\(name)"] { #expect(asleep.contains(kept), "\(kept) kept") }
        // A sleeping database is not reported as missing by reconcile (it is not ready).
        var sleeping = ready
        sleeping.state = .hibernated
        let report = try await p.recover(databases: [sleeping], generations: [generation()], snapshots: [])
        #expect(report.missing.isEmpty && report.orphansRemoved.isEmpty)

        // A snapshot while asleep cuts the volume as it is and leaves it at zero.
        var snapping = sleeping
        snapping.operation = .init(kind: .snapshot, id: "s1", target: "asleep", asleep: true)
        let snap = SnapshotRecord(database: d.name, name: "asleep", owner: d.owner, project: d.project, generation: 1)
        let outcome = try await p.snapshot(database: snapping, as: snap)
        #expect(outcome.unavailableSeconds == 0)
        #expect(try await k.object("VolumeSnapshot", p.manifests.snapshotObject(snap)) != nil)
        #expect(!(try await k.inventory()).contains("Deployment/\(name)"), "still asleep")

        let back = try await p.start(database: ready)
        #expect(back.host == ready.backendHost && back.port == 5432)
        let awake = try await k.inventory()
        #expect(awake.contains("Deployment/\(name)"))
        #expect(try await k.objects().contains { $0["kind"] == "Pod" && Self.ready($0) })
        // The same volume and Secret: nothing was made again but the Deployment.
        #expect(try await k.created("PersistentVolumeClaim").filter { $0.at("metadata.name").string == name }.count == 1)
        #expect(try await k.created("Secret").filter { $0.at("metadata.name").string == name }.count == 1)
        #expect(try await k.created("Deployment").filter { $0.at("metadata.name").string == name }.count == 2)
    }
}
