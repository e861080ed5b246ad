import DevDBCatalog
import DevDBCore
import Foundation

// The provisioner's waits on the cluster, all through one `poll`: a Job, a pod, a volume, a
// VolumeSnapshot, objects going away.

extension KubernetesProvisioner {
    /// Calls `check` until it answers a value, waiting between calls on a Backoff that starts
    /// at a quarter of the poll interval and settles at it; after `timeout` seconds fails with
    /// `timedOut()`. With `outages` an API server away longer than the client's retry budget
    /// (a control-plane upgrade, an outage: a transient `KubeError`) does not fail the wait: that
    /// call counts as "not yet" (`onOutage` hears it) until the wait's own deadline.
    func poll<T>(timeout: Double, outages: Bool = false, onOutage: () -> Void = {},
                 _ check: () async throws -> T?, timedOut: () -> ProvisioningError) async throws -> T {
        let start = Date()
        var backoff = Backoff(initial: max(0.001, settings.pollInterval / 4), cap: max(0.001, settings.pollInterval))
        while true {
            do {
                if let done = try await check() { return done }
            } catch let e as KubeError where outages && e.isTransient && Date().timeIntervalSince(start) < timeout {
                onOutage()
            }
            if Date().timeIntervalSince(start) > timeout { throw timedOut() }
            try await Task.sleep(nanoseconds: Backoff.nanoseconds(backoff.next()))
        }
    }

    /// `poll` for a condition, within readyTimeout.
    func waitUntil(_ done: () async throws -> Bool, timedOut: () -> ProvisioningError) async throws {
        _ = try await poll(timeout: settings.readyTimeout, { try await done() ? true : nil }, timedOut: timedOut)
    }

    func waitGone(_ objectPath: String) async throws {
        try await waitUntil({ try await client.getIfPresent(objectPath) == nil },
                            timedOut: { ProvisioningError(.timeout, "\(objectPath) is still present \(Int(settings.readyTimeout)) s after it was deleted") })
    }

    func waitNoPods(_ selector: String) async throws {
        try await waitUntil({ try await client.list(path(.pods), labelSelector: selector).isEmpty },
                            timedOut: { ProvisioningError(.timeout, "the database's pod did not stop within \(Int(settings.readyTimeout)) s") })
    }

    func pods(_ selector: String) async throws -> [PodStatus] {
        try await client.list(path(.pods), labelSelector: selector).map { try $0.decoded(as: PodStatus.self) }
    }

    /// Fails once a PVC has been Pending longer than the bind timeout.
    func checkClaim(_ claim: String, since start: Date, snapshot: String?) async throws -> Bool {
        guard let pvc = try await client.getIfPresent(path(.persistentvolumeclaims, claim))?.decoded(as: PVCStatus.self) else {
            throw ProvisioningError(.instanceGone, "volume \(claim) disappeared")
        }
        if pvc.isBound { return true }
        if Date().timeIntervalSince(start) > settings.bindTimeout {
            var why = "volume \(claim) did not bind within \(Int(settings.bindTimeout)) s (phase \(pvc.phase))"
            if let snapshot, let snap = try await client.getIfPresent(path(.volumesnapshots, snapshot))?.decoded(as: VolumeSnapshotStatus.self), !snap.readyToUse {
                why += "; its source snapshot \(snapshot) is not ready"
            }
            // The provisioner's own words (ProvisioningFailed: a size below the snapshot's, a quota).
            if let last = await events("PersistentVolumeClaim", claim).last(where: { $0.type == "Warning" }), let message = last.message {
                why += "; \(last.reason ?? "event"): \(message)"
            }
            throw ProvisioningError(.volumeUnavailable, why + ": check the StorageClass (\(settings.storageClass ?? "cluster default")) with kubectl -n \(ns) describe pvc \(claim)")
        }
        return false
    }

    /// Waits for a restore Job to succeed, reporting "fetching" / "restoring" as its pod gets there.
    func waitForJob(_ job: String, claim: String, phase: @escaping @Sendable (String) -> Void) async throws {
        let start = Date()
        var unschedulable: [String: Date] = [:]
        var transient: [String: Date] = [:]
        var last = ""
        func report(_ p: String) { if p != last { last = p; phase(p) } }
        _ = try await poll(timeout: settings.restoreTimeout, outages: true, onOutage: { report("waiting for the Kubernetes API") }, { () async throws -> Bool? in
            guard let j = try await client.getIfPresent(path(.jobs, job))?.decoded(as: JobStatus.self) else {
                throw ProvisioningError(.internal, "restore job \(job) disappeared")
            }
            let pods = try await self.pods("job-name=\(job)")
            if j.succeeded { return true }
            if pods.isEmpty, let refused = await controllerRefused(kind: "Job", name: job) {
                throw ProvisioningError(.quotaExceededInCluster, "restore job \(job) cannot make its pod: \(refused)")
            }
            if j.hasFailed {
                var detail = j.failedCondition?.message ?? j.failedCondition?.reason ?? "the job failed"
                for p in pods {
                    for s in p.allContainers {
                        if let code = s.state?.terminated?.exitCode, code != 0 {
                            let msg = (s.state?.terminated?.message ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                            detail = "\(s.name ?? "container") exited with \(code)" + (msg.isEmpty ? "" : ": \(msg)")
                        }
                    }
                }
                throw ProvisioningError(.restoreFailed, "restore job \(job) failed: \(detail)")
            }
            for p in pods {
                if let problem = podFailure(p, since: &transient) { throw problem }
                if let blocked = await podBlocked(p, since: &unschedulable) { throw blocked }
                if p.initContainers.contains(where: { $0.state?.running != nil }) { report("fetching") }
                if p.containers.contains(where: { $0.state?.running != nil }) { report("restoring") }
            }
            if try await checkClaim(claim, since: start, snapshot: nil) == false { report("waiting for volume") }
            return nil
        }, timedOut: { ProvisioningError(.timeout, "restore job \(job) did not finish within \(Int(settings.restoreTimeout)) s") })
    }

    /// Waits for `readyToUse` until the snapshot deadline.
    func waitForSnapshot(_ name: String) async throws {
        try await waitForSnapshotStatus(name, what: "readyToUse") { $0.readyToUse }
    }

    /// Waits until the snapshot is cut (`creationTime` set, or already readyToUse): the database
    /// may run again then, even while the snapshot is still being uploaded.
    func waitForSnapshotCut(_ name: String) async throws {
        try await waitForSnapshotStatus(name, what: "cut") { $0.isCut }
    }

    /// A `status.error` is not the end: the snapshot controller writes errors it retries ("the
    /// object has been modified", a throttled cloud API) and clears them; the last one seen is
    /// reported only when the deadline passes.
    func waitForSnapshotStatus(_ name: String, what: String, _ done: (VolumeSnapshotStatus) -> Bool) async throws {
        var lastError: String?
        _ = try await poll(timeout: settings.snapshotTimeout, outages: true, { () async throws -> Bool? in
            guard let s = try await client.getIfPresent(path(.volumesnapshots, name))?.decoded(as: VolumeSnapshotStatus.self) else {
                throw ProvisioningError(.snapshotFailed, "VolumeSnapshot \(name) disappeared")
            }
            if done(s) { return true }
            if let message = s.errorMessage { lastError = message }
            return nil
        }, timedOut: {
            if let lastError {
                return ProvisioningError(.snapshotFailed, "VolumeSnapshot \(name) failed: \(lastError) (still failing after \(Int(settings.snapshotTimeout)) s: check the CSI driver's snapshotter with kubectl -n \(ns) describe volumesnapshot \(name))")
            }
            return ProvisioningError(.timeout, "VolumeSnapshot \(name) was not \(what) within \(Int(settings.snapshotTimeout)) s: check the VolumeSnapshotClass \(settings.snapshotClass ?? "") and the CSI driver's snapshotter")
        })
    }

    /// Waits until the database's pod is ready, failing early on what will not get better.
    func waitForDatabase(_ d: DatabaseRecord, claim: String, snapshot: String?) async throws {
        let start = Date()
        var unschedulable: [String: Date] = [:]
        var transient: [String: Date] = [:]
        var seen: [PodStatus] = []
        let selector = databaseSelector(d.name, component: "database")
        _ = try await poll(timeout: settings.readyTimeout, { () async throws -> Bool? in
            let pods = try await self.pods(selector)
            seen = pods
            if pods.contains(where: \.isReady) { return true }
            if pods.isEmpty, let failure = try await client.getIfPresent(path(.deployments, claim))?.decoded(as: DeploymentStatus.self).replicaFailure {
                throw ProvisioningError(.quotaExceededInCluster, "database \(d.name) cannot get a pod (\(failure.reason ?? "ReplicaFailure")): \(failure.message ?? "")\(Self.admissionHint(failure.message ?? ""))")
            }
            for p in pods {
                if let problem = podFailure(p, since: &transient) { throw problem }
                if let blocked = await podBlocked(p, since: &unschedulable) { throw blocked }
            }
            _ = try await checkClaim(claim, since: start, snapshot: snapshot)
            return nil
        }, timedOut: {
            let status = seen.lazy.compactMap(Self.podProblem).first
                ?? seen.first.map { "pod \($0.metadata?.name ?? "?") is \($0.phase ?? "Pending")" } ?? "no pod was created"
            return ProvisioningError(.timeout, "database \(d.name) was not ready within \(Int(settings.readyTimeout)) s: \(status); see kubectl -n \(ns) describe deployment \(claim)")
        })
    }
}
