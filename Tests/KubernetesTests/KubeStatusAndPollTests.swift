@testable import DevDBProvisioning
import Foundation
import Testing

/// The typed statuses the provisioner reads, decoded from JSON shaped like a real API server's
/// answers, and the one poll helper every wait goes through.
@Suite struct KubeStatusTests {
    func decode<T: Decodable>(_ json: String, as: T.Type) throws -> T { try JSONValue.decode(Data(json.utf8)).decoded(as: T.self) }

    @Test func podStatusReadsContainersConditionsAndReadiness() throws {
        let pod = try decode("""
            {"apiVersion":"v1","kind":"Pod","metadata":{"name":"devdb-db-kate-pg-7d9f","namespace":"devdb","uid":"1f0e","creationTimestamp":"2026-12-07T02:00:00Z"},
             "spec":{"containers":[{"name":"postgres","image":"postgres:17"}]},
             "status":{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"True","lastTransitionTime":"2026-12-07T02:00:01Z"},
                                                       {"type":"Ready","status":"False","reason":"ContainersNotReady"}],
               "initContainerStatuses":[{"name":"fetch","ready":true,"restartCount":0,"state":{"terminated":{"exitCode":0,"reason":"Completed"}}}],
               "containerStatuses":[{"name":"postgres","ready":false,"restartCount":3,
                  "state":{"waiting":{"reason":"CrashLoopBackOff","message":"back-off 40s restarting failed container"}},
                  "lastState":{"terminated":{"exitCode":1,"reason":"Error","message":"FATAL:  data directory has wrong ownership\\n"}}}]}}
            """, as: PodStatus.self)
        #expect(pod.name == "devdb-db-kate-pg-7d9f" && pod.phase == "Pending" && !pod.isReady)
        #expect(pod.allContainers.map(\.name) == ["fetch", "postgres"])
        #expect(pod.initContainers[0].state?.terminated?.exitCode == 0)
        let problem = try #require(KubernetesProvisioner.podProblems(pod).first)
        #expect(problem.kind == .postgresStartFailed && !problem.transient)
        #expect(problem.message == "container postgres of pod devdb-db-kate-pg-7d9f keeps crashing: FATAL:  data directory has wrong ownership")
        let ready = try decode(#"{"metadata":{"name":"p"},"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}],"containerStatuses":[{"name":"postgres","state":{"running":{"startedAt":"2026-12-07T02:00:05Z"}}}]}}"#, as: PodStatus.self)
        #expect(ready.isReady && ready.containers[0].state?.running != nil)
    }

    @Test func imagePullIsTransientAndKindImagePull() throws {
        let pod = try decode(#"{"metadata":{"name":"p"},"status":{"phase":"Pending","containerStatuses":[{"name":"postgres","state":{"waiting":{"reason":"ImagePullBackOff","message":"Back-off pulling image \"postgres:99\""}}}]}}"#, as: PodStatus.self)
        let problem = try #require(KubernetesProvisioner.podProblems(pod).first)
        #expect(problem.kind == .imagePull && problem.transient && problem.message.contains("cannot pull the image"))
    }

    @Test func jobStatusSucceededAndFailed() throws {
        let running = try decode(#"{"kind":"Job","metadata":{"name":"restore-gen-shop-1"},"status":{"active":1,"startTime":"2026-12-07T02:00:00Z"}}"#, as: JobStatus.self)
        #expect(!running.succeeded && !running.hasFailed && running.metadata?.isDeleting == false)
        let done = try decode(#"{"status":{"succeeded":1,"conditions":[{"type":"Complete","status":"True"}]}}"#, as: JobStatus.self)
        #expect(done.succeeded && !done.hasFailed)
        let failed = try decode("""
            {"metadata":{"name":"j","deletionTimestamp":"2026-12-07T02:10:00Z"},
             "status":{"failed":1,"conditions":[{"type":"Failed","status":"True","reason":"BackoffLimitExceeded","message":"Job has reached the specified backoff limit"}]}}
            """, as: JobStatus.self)
        #expect(failed.hasFailed && failed.failedCondition?.reason == "BackoffLimitExceeded" && failed.metadata?.isDeleting == true)
        let notYet = try decode(#"{"status":{"conditions":[{"type":"Failed","status":"False"}]}}"#, as: JobStatus.self)
        #expect(!notYet.hasFailed)
    }

    @Test func pvcStatusPhaseAndSnapshotSource() throws {
        let pvc = try decode("""
            {"kind":"PersistentVolumeClaim","metadata":{"name":"devdb-db-kate-pg"},
             "spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"10Gi"}},
                     "dataSource":{"apiGroup":"snapshot.storage.k8s.io","kind":"VolumeSnapshot","name":"devdb-gen-shop-1"}},
             "status":{"phase":"Bound","capacity":{"storage":"10Gi"}}}
            """, as: PVCStatus.self)
        #expect(pvc.isBound && pvc.sourceSnapshot == "devdb-gen-shop-1")
        let pending = try decode(#"{"metadata":{"name":"x"},"spec":{"dataSource":{"kind":"PersistentVolumeClaim","name":"y"}}}"#, as: PVCStatus.self)
        #expect(!pending.isBound && pending.phase == "Pending" && pending.sourceSnapshot == nil)
    }

    @Test func volumeSnapshotStatusCutReadyAndError() throws {
        let cut = try decode("""
            {"apiVersion":"snapshot.storage.k8s.io/v1","kind":"VolumeSnapshot","metadata":{"name":"devdb-gen-shop-1"},
             "status":{"boundVolumeSnapshotContentName":"snapcontent-1","creationTime":"2026-12-07T02:00:00Z","readyToUse":false,"restoreSize":"1Gi"}}
            """, as: VolumeSnapshotStatus.self)
        #expect(cut.isCut && !cut.readyToUse && cut.restoreSize == "1Gi")
        let erring = try decode(#"{"status":{"readyToUse":false,"error":{"message":"the object has been modified; please apply your changes to the latest version","time":"2026-12-07T02:00:01Z"}}}"#, as: VolumeSnapshotStatus.self)
        #expect(!erring.isCut && erring.errorMessage?.contains("has been modified") == true)
        let fresh = try decode(#"{"metadata":{"name":"s"}}"#, as: VolumeSnapshotStatus.self)
        #expect(!fresh.isCut && fresh.errorMessage == nil)
    }

    @Test func deploymentReplicaFailureAndEvents() throws {
        let d = try decode(#"{"status":{"conditions":[{"type":"Available","status":"False"},{"type":"ReplicaFailure","status":"True","reason":"FailedCreate","message":"pods \"x\" is forbidden: exceeded quota: devdb"}]}}"#, as: DeploymentStatus.self)
        #expect(d.replicaFailure?.reason == "FailedCreate")
        let e = try decode(#"{"kind":"Event","involvedObject":{"kind":"Pod","name":"p","namespace":"devdb"},"reason":"FailedMount","message":"secret \"s\" not found","type":"Warning","count":4}"#, as: KubeEvent.self)
        #expect(e.concerns("Pod", "p") && !e.concerns("Job", "p") && e.count == 4)
    }
}

@Suite struct KubePollTests {
    /// A provisioner whose client points nowhere: `poll` itself makes no requests.
    func provisioner(pollInterval: Double = 0.02) -> KubernetesProvisioner {
        var s = KubernetesSettings()
        s.pollInterval = pollInterval
        let client = KubeClient(connection: KubeConnection(server: "http://127.0.0.1:9", caPEM: nil, credential: .none, namespace: "devdb", source: "test"))
        return KubernetesProvisioner(client: client, settings: s) { _ in nil }
    }

    @Test func returnsTheFirstAnswer() async throws {
        let p = provisioner()
        var calls = 0
        let value = try await p.poll(timeout: 60, { () async throws -> Int? in calls += 1; return calls == 3 ? 42 : nil },
                                     timedOut: { ProvisioningError(.timeout, "late") })
        #expect(value == 42 && calls == 3)
    }

    @Test func failsWithItsOwnErrorAtTheDeadline() async throws {
        let p = provisioner()
        let start = Date()
        await #expect(throws: ProvisioningError(.timeout, "never")) {
            _ = try await p.poll(timeout: 0.2, { () async throws -> Bool? in nil }, timedOut: { ProvisioningError(.timeout, "never") })
        }
        let took = Date().timeIntervalSince(start)
        // Not before the deadline; the upper bound only says it ends (tests are not timed: a busy
        // machine delays the sleeps).
        #expect(took >= 0.2 && took < 60, "\(took)")
    }

    @Test func toleratesAnOutageOnlyWhenAsked() async throws {
        let p = provisioner()
        var calls = 0, outages = 0
        let value = try await p.poll(timeout: 60, outages: true, onOutage: { outages += 1 }, { () async throws -> String? in
            calls += 1
            if calls < 3 { throw KubeError.status(code: 503, reason: "ServiceUnavailable", message: "apiserver restarting", request: "GET /api/v1/pods") }
            return "up"
        }, timedOut: { ProvisioningError(.timeout, "late") })
        #expect(value == "up" && outages == 2)
        // Without `outages` the first transient error ends the wait; a permanent one always does.
        var tries = 0
        await #expect(throws: KubeError.self) {
            _ = try await p.poll(timeout: 60, { () async throws -> Bool? in
                tries += 1
                throw KubeError.transport("connection refused", transient: true) }, timedOut: { ProvisioningError(.timeout, "late") })
        }
        #expect(tries == 1)
        tries = 0
        await #expect(throws: KubeError.self) {
            _ = try await p.poll(timeout: 60, outages: true, { () async throws -> Bool? in
                tries += 1
                throw KubeError.status(code: 422, reason: "Invalid", message: "spec.source", request: "POST /x") }, timedOut: { ProvisioningError(.timeout, "late") })
        }
        #expect(tries == 1)
    }

    @Test func anOutageLongerThanTheDeadlineFailsWithTheOutage() async throws {
        let p = provisioner()
        await #expect(throws: KubeError.self) {
            _ = try await p.poll(timeout: 0.15, outages: true, { () async throws -> Bool? in throw KubeError.transport("connection refused", transient: true) },
                                 timedOut: { ProvisioningError(.timeout, "late") })
        }
    }
}
