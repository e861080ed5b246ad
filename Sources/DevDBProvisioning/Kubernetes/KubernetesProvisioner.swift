import DevDBCatalog
import Foundation

/// Databases as pods in one namespace, made through the Kubernetes REST API:
///
/// - a generation is a PVC filled by a restore Job, then a CSI `VolumeSnapshot` of it (the PVC
///   and Job go once the snapshot is readyToUse);
/// - a database is a Secret (its credentials; it owns the rest), a PVC whose `dataSource` is the
///   generation's snapshot, a one-replica `Recreate` Deployment and a ClusterIP Service, which the
///   route names by its cluster DNS name;
/// - without a snapshot class every database's PVC is filled by its own restore Job instead.
public final class KubernetesProvisioner: Provisioner, PostgresMajors {
    /// Any major: each runs its own image (--postgres-image-template, --postgres-image).
    public var availableMajors: [Int]? { nil }

    public let kind = "kubernetes"
    public let client: KubeClient
    public let settings: KubernetesSettings
    public let manifests: KubeManifests

    /// The project a database belongs to (the per-database restore needs its dump URL).
    let projectLookup: @Sendable (String) async throws -> Project?

    public init(client: KubeClient, settings: KubernetesSettings, projectLookup: @escaping @Sendable (String) async throws -> Project?) {
        self.client = client
        self.settings = settings
        self.projectLookup = projectLookup
        self.manifests = KubeManifests(settings: settings, namespace: client.namespace)
    }

    var snapshots: Bool { !(settings.snapshotClass ?? "").isEmpty }
    var ns: String { client.namespace }

    // MARK: REST paths

    enum Resource: String, CaseIterable {
        case secrets, persistentvolumeclaims, services, pods, deployments, jobs, volumesnapshots, events
        var base: String {
            switch self {
            case .secrets, .persistentvolumeclaims, .services, .pods, .events: return "/api/v1"
            case .deployments: return "/apis/apps/v1"
            case .jobs: return "/apis/batch/v1"
            case .volumesnapshots: return "/apis/snapshot.storage.k8s.io/v1"
            }
        }
    }
    func path(_ r: Resource, _ name: String? = nil) -> String {
        "\(r.base)/namespaces/\(ns)/\(r.rawValue)" + (name.map { "/\($0)" } ?? "")
    }
    /// The kinds DevDB creates, in the order it removes leftovers.
    static let owned: [Resource] = [.deployments, .jobs, .services, .persistentvolumeclaims, .volumesnapshots, .secrets]

    /// Lists objects of a kind; an uninstalled snapshot API (404) has none.
    func list(_ r: Resource, selector: String) async throws -> [JSONValue] {
        do { return try await client.list(path(r), labelSelector: selector) } catch let e as KubeError where e.code == 404 && r == .volumesnapshots {
            return []
        }
    }

    static func timestamp(_ text: String) -> Date? { ISO8601DateFormatter().date(from: text) }

    /// A warning about the configured VolumeSnapshotClass, or nil when it is fine: with
    /// deletionPolicy Retain every deleted generation leaves a VolumeSnapshotContent and a cloud
    /// snapshot behind. The class is cluster-scoped: without the chart's optional ClusterRole
    /// (rbac.readSnapshotClass) it cannot be read, and the warning says what to check by hand.
    public func checkSnapshotClass() async -> String? {
        guard let name = settings.snapshotClass, !name.isEmpty else { return nil }
        do { try await requireSnapshotAPI() } catch {
            return "\(error): every seed will fail until it is (checked at start, before any restore)"
        }
        do {
            let cls = try await client.get("/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/\(name)")
            if cls["deletionPolicy"].string == "Retain" {
                return "VolumeSnapshotClass \(name) has deletionPolicy Retain: every deleted generation leaves its VolumeSnapshotContent and cloud snapshot behind (and their cost). Use a class with deletionPolicy: Delete"
            }
            return nil
        } catch let e as KubeError where e.code == 403 {
            return "cannot read VolumeSnapshotClass \(name) (cluster-scoped; the chart grants it with rbac.readSnapshotClass=true): check by hand that its deletionPolicy is Delete, or deleted generations leave cloud snapshots behind"
        } catch let e as KubeError where e.code == 404 {
            return "VolumeSnapshotClass \(name) does not exist: seeding will fail until it does (kubectl get volumesnapshotclass)"
        } catch {
            return nil
        }
    }

    /// The dump's size from a fingerprint ("content-length=N" over HTTP, "size=N" for files).
    public static func dumpBytes(_ fingerprint: String?) -> Int64? {
        for part in (fingerprint ?? "").split(separator: ";") {
            let kv = part.split(separator: "=", maxSplits: 1)
            if kv.count == 2, kv[0] == "content-length" || kv[0] == "size", let n = Int64(kv[1].trimmingCharacters(in: .whitespaces)) { return n }
        }
        return nil
    }

    // MARK: generations

    public func seed(project: Project, generation g: Generation, progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        guard snapshots else {
            // Nothing to snapshot: every database restores the dump into its own volume.
            progress("no VolumeSnapshot class: databases restore the dump themselves", 0)
            return
        }
        // Before an hour of restoring: the snapshot API must be there to keep what it makes.
        try await requireSnapshotAPI()
        let volume = manifests.generationObject(g)
        let labels = manifests.generationLabels(g)
        let selector = "\(manifests.managedSelector),\(KubeNames.projectLabel)=\(KubeNames.labelValue(g.project)),\(KubeNames.generationLabel)=\(g.number)"
        let job = manifests.restoreJobName(volume)
        // An API restarted (a helm upgrade) while this seed ran: what it started goes on, and is
        // adopted; anything else it left (a failed Job, half-made objects) is removed first.
        let adopted = try await adoptableSeed(volume: volume, job: job)
        if adopted == nil { try await removeAll(selector: selector) }
        do {
            if adopted == nil {
                progress("fetching", 0)
                // Sized from the dump (its size is in the project's fingerprint) and the previous generation's restore.
                let previous = g.number > 1 ? try await client.getIfPresent(path(.volumesnapshots, manifests.generationObject(Generation(project: g.project, number: g.number - 1))))?.decoded(as: VolumeSnapshotStatus.self).restoreSize : nil
                let dumpBytes = Self.dumpBytes(project.dumpFingerprint)
                let size = manifests.restoreVolumeSize(dumpBytes: dumpBytes, previousRestored: previous)
                if dumpBytes == nil && settings.restoreVolumeSize == nil {
                    // Said, not guessed silently: the API could not learn the dump's size.
                    progress("restore volume \(size): the dump's size is unknown to the API (it cannot read the dump); set databases.restoreVolumeSize if the restored database is larger", 0)
                }
                let claim = try await client.create(path(.persistentvolumeclaims), manifests.volumeClaim(name: volume, labels: labels, snapshot: nil, owner: nil, size: size))
                if let sql = project.afterRestoreSql, !sql.isEmpty {
                    try await client.create(path(.secrets), manifests.afterRestoreSecret(job: job, labels: labels, sql: sql, owner: claim))
                }
                try await client.create(path(.jobs), manifests.restoreJob(name: job, claim: volume, labels: labels, project: project, major: g.major, owner: claim))
            } else {
                progress(adopted == .snapshot ? "snapshotting (adopted after a restart)" : "restoring (adopted the running restore job after a restart)", 0)
            }
            if adopted != .snapshot {
                try await waitForJob(job, claim: volume) { progress($0, 0) }
                progress("snapshotting", 0)
                do {
                    try await client.create(path(.volumesnapshots), manifests.volumeSnapshot(name: volume, labels: labels, claim: volume))
                } catch let e as KubeError where e.code == 404 {
                    throw ProvisioningError(.misconfigured, Self.noSnapshotAPI)
                }
            }
            try await waitForSnapshot(volume)
            // The snapshot stands on its own; the restored volume and its Job are no longer needed.
            try await client.delete(path(.persistentvolumeclaims, volume))
            try await client.delete(path(.jobs, job))
        } catch {
            try? await removeAll(selector: selector)
            throw error
        }
    }

    static let noSnapshotAPI = "the VolumeSnapshot API (snapshot.storage.k8s.io/v1) is not installed in this cluster: install the CSI snapshot controller and its CRDs, or leave the snapshot class empty so each database restores the dump"

    /// Fails at once when the cluster does not serve the VolumeSnapshot API (its CRDs are not
    /// installed): found here, not after a whole restore.
    func requireSnapshotAPI() async throws {
        do { _ = try await client.list(path(.volumesnapshots), labelSelector: manifests.managedSelector) } catch let e as KubeError where e.code == 404 {
            throw ProvisioningError(.misconfigured, Self.noSnapshotAPI)
        }
    }

    enum Adopted { case job, snapshot }

    /// What of a generation's seed is still under way after an API restart: its VolumeSnapshot
    /// (cut, maybe still uploading), or its restore Job running (not failed, not being deleted)
    /// with its volume. nil: nothing worth keeping.
    func adoptableSeed(volume: String, job: String) async throws -> Adopted? {
        if let snap = try await client.getIfPresent(path(.volumesnapshots, volume))?.decoded(as: VolumeSnapshotStatus.self), snap.metadata?.isDeleting != true {
            return .snapshot
        }
        guard let j = try await client.getIfPresent(path(.jobs, job))?.decoded(as: JobStatus.self), j.metadata?.isDeleting != true, !j.hasFailed,
              let pvc = try await client.getIfPresent(path(.persistentvolumeclaims, volume))?.decoded(as: PVCStatus.self), pvc.metadata?.isDeleting != true else { return nil }
        return .job
    }

    public func deleteGeneration(_ g: Generation) async throws {
        let snapshot = manifests.generationObject(g)
        let claims = try await client.list(path(.persistentvolumeclaims), labelSelector: manifests.managedSelector).map { try $0.decoded(as: PVCStatus.self) }
        let users = claims.filter { $0.sourceSnapshot == snapshot }
        guard users.isEmpty else {
            throw ProvisioningError(.sourceUnavailable, "generation \(g.number) of \(g.project) is still used by \(users.compactMap { $0.metadata?.name }.joined(separator: ", ")); its snapshot stays")
        }
        try await removeAll(selector: "\(manifests.managedSelector),\(KubeNames.projectLabel)=\(KubeNames.labelValue(g.project)),\(KubeNames.generationLabel)=\(g.number)")
    }

    // MARK: databases

    public func create(database d: DatabaseRecord, from g: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        let selector = databaseSelector(d.name)
        if !snapshots, case .generation = g, let owner = try await adoptableRestore(d) {
            // An API restarted (a helm upgrade) while this database's restore ran: wait for it.
            phase("restoring the dump (adopted the running restore job after a restart)")
            do { return try await finishRestore(d, owner: owner, phase: phase) } catch {
                try? await removeAll(selector: selector)
                throw error
            }
        }
        try await removeAll(selector: selector)  // leftovers of an interrupted attempt
        do {
            phase("creating objects")
            let owner = try await client.create(path(.secrets), manifests.secret(d))
            try await client.create(path(.services), manifests.service(d, owner: owner))
            return try await fillAndStart(d, from: g, owner: owner, phase: phase)
        } catch {
            try? await removeAll(selector: selector)
            throw error
        }
    }

    /// Makes the database's volume (from the generation's or a database snapshot, or by
    /// restoring) and its Deployment, then waits for the pod to be ready.
    func fillAndStart(_ d: DatabaseRecord, from source: CloneSource, owner: JSONValue, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        let name = manifests.databaseObject(d.name)
        let snapshot: String?
        switch source {
        case .generation(let g): snapshot = snapshots ? manifests.generationObject(g) : nil
        case .snapshot(let s):
            snapshot = manifests.snapshotObject(s)
            // A snapshot just cut may still be uploading: a volume can be made from it once it is readyToUse.
            try await waitForSnapshot(snapshot!)
        }
        phase(snapshot == nil ? "creating volume" : "cloning")
        var size = settings.volumeSize
        if let snapshot {
            guard let snap = try await client.getIfPresent(path(.volumesnapshots, snapshot))?.decoded(as: VolumeSnapshotStatus.self), snap.readyToUse else {
                if case .generation(let g) = source {
                    throw ProvisioningError(.sourceUnavailable, "generation \(g.number) of \(g.project) has no ready snapshot (\(snapshot)); run \"devdb project refresh \(g.project)\" and reset with --latest")
                }
                throw ProvisioningError(.sourceUnavailable, "\(source.description) has no ready VolumeSnapshot (\(snapshot))")
            }
            // A volume made from a snapshot must be at least as large as the snapshot.
            if let restore = snap.restoreSize, let need = Quantity.bytes(restore),
               let have = Quantity.bytes(settings.volumeSize), need > have {
                size = restore
            }
        }
        try await client.create(path(.persistentvolumeclaims),
                                manifests.volumeClaim(name: name, labels: manifests.databaseLabels(d), snapshot: snapshot, owner: owner, size: size))
        if snapshot == nil, case .generation = source {
            phase("restoring the dump (no VolumeSnapshot class)")
            guard let project = try await projectLookup(d.project) else { throw ProvisioningError(.sourceUnavailable, "project \(d.project) is gone") }
            var labels = manifests.databaseLabels(d)
            labels["app.kubernetes.io/component"] = "restore"
            let job = manifests.restoreJobName(name)
            if let sql = project.afterRestoreSql, !sql.isEmpty, try await client.getIfPresent(path(.secrets, manifests.afterRestoreSecretName(job))) == nil {
                try await client.create(path(.secrets), manifests.afterRestoreSecret(job: job, labels: labels, sql: sql, owner: owner))
            }
            try await client.create(path(.jobs), manifests.restoreJob(name: job, claim: name, labels: labels, project: project, major: d.postgresMajor ?? 15, owner: owner))
            return try await finishRestore(d, owner: owner, phase: phase)
        }
        phase("starting")
        try await client.create(path(.deployments), manifests.deployment(d, owner: owner))
        try await waitForDatabase(d, claim: name, snapshot: snapshot)
        return InstanceInfo(host: manifests.serviceHost(d.name), port: 5432, cloneMethod: snapshot == nil ? "restore" : "snapshot",
                            note: snapshot == nil ? "restored from the dump: no VolumeSnapshot class is configured, so this database did not start from a snapshot" : nil)
    }


    /// A database's own restore (no snapshot class) that a previous API pod started and that still
    /// runs: its Secret (the same credentials), volume and restore Job, none failed or being
    /// deleted. Returns the Secret (the owner of the rest).
    func adoptableRestore(_ d: DatabaseRecord) async throws -> JSONValue? {
        let name = manifests.databaseObject(d.name)
        guard let owner = try await client.getIfPresent(path(.secrets, name)), manifests.isOurs(owner), owner.at("metadata.deletionTimestamp").isNull,
              owner.at("data.password").string == Data(d.password.utf8).base64EncodedString(),
              let j = try await client.getIfPresent(path(.jobs, manifests.restoreJobName(name)))?.decoded(as: JobStatus.self), j.metadata?.isDeleting != true,
              (j.status?.failed ?? 0) == 0,
              let pvc = try await client.getIfPresent(path(.persistentvolumeclaims, name))?.decoded(as: PVCStatus.self), pvc.metadata?.isDeleting != true else { return nil }
        return owner
    }

    /// Waits for a database's restore Job, removes it and starts the database.
    func finishRestore(_ d: DatabaseRecord, owner: JSONValue, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        let name = manifests.databaseObject(d.name)
        let job = manifests.restoreJobName(name)
        if try await client.getIfPresent(path(.services, name)) == nil {
            try await client.create(path(.services), manifests.service(d, owner: owner))
        }
        try await waitForJob(job, claim: name) { p in phase(p == "restoring" || p == "fetching" ? "\(p) the dump (no VolumeSnapshot class)" : p) }
        try await client.delete(path(.jobs, job))
        try await waitGone(path(.jobs, job))
        phase("starting")
        if try await client.getIfPresent(path(.deployments, name)) == nil {
            try await client.create(path(.deployments), manifests.deployment(d, owner: owner))
        }
        try await waitForDatabase(d, claim: name, snapshot: nil)
        return InstanceInfo(host: manifests.serviceHost(d.name), port: 5432, cloneMethod: "restore",
                            note: "restored from the dump: no VolumeSnapshot class is configured, so this database did not start from a snapshot")
    }

    public func reset(database d: DatabaseRecord, to g: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        let name = manifests.databaseObject(d.name)
        guard let owner = try await client.getIfPresent(path(.secrets, name)) else {
            // Its objects are gone: make them again (same name, same credentials).
            return try await create(database: d, from: g, phase: phase)
        }
        phase("stopping")
        try await client.delete(path(.deployments, name))
        try await waitGone(path(.deployments, name))
        try await waitNoPods(databaseSelector(d.name, component: "database"))
        try await client.delete(path(.jobs, manifests.restoreJobName(name)))
        try await client.delete(path(.persistentvolumeclaims, name))
        try await waitGone(path(.persistentvolumeclaims, name))
        if try await client.getIfPresent(path(.services, name)) == nil {
            try await client.create(path(.services), manifests.service(d, owner: owner))
        }
        return try await fillAndStart(d, from: g, owner: owner, phase: phase)
    }

    public func delete(database d: DatabaseRecord) async throws {
        try await removeAll(selector: databaseSelector(d.name))
    }

    // MARK: database snapshots

    /// Stops the database (its Deployment is deleted: Postgres shuts down, and whatever it did not
    /// flush is recovered from WAL like after a crash, so the volume is consistent), cuts a CSI
    /// VolumeSnapshot of its volume, and starts it again. The PVC, Secret and Service stay.
    public func snapshot(database d: DatabaseRecord, as s: SnapshotRecord) async throws -> SnapshotOutcome {
        guard snapshots else {
            throw SnapshotFailure(ProvisioningError(.notSupported, "no VolumeSnapshot class is configured (--snapshot-class / databases.snapshotClass): snapshots need one"), instanceRunning: true)
        }
        let name = manifests.databaseObject(d.name)
        let snap = manifests.snapshotObject(s)
        guard let owner = try await client.getIfPresent(path(.secrets, name)) else {
            throw SnapshotFailure(ProvisioningError(.instanceGone, "the database's objects are gone; run \"devdb db reset \(d.name)\""), instanceRunning: false)
        }
        let stopped = Date()
        var failure: ProvisioningError?
        do {
            try await client.delete(path(.deployments, name))
            try await waitGone(path(.deployments, name))
            try await waitNoPods(databaseSelector(d.name, component: "database"))
            // What an interrupted try left.
            if try await client.delete(path(.volumesnapshots, snap)) != nil { try await waitGone(path(.volumesnapshots, snap)) }
            try await client.create(path(.volumesnapshots), manifests.volumeSnapshot(name: snap, labels: manifests.snapshotLabels(s), claim: name))
            try await waitForSnapshotCut(snap)
        } catch {
            failure = ProvisioningError(error)
            _ = try? await client.delete(path(.volumesnapshots, snap))
        }
        if d.operation?.asleep == true {
            // Scaled to zero already: the volume is cut as it is, and the database stays asleep.
            if let failure { throw SnapshotFailure(failure, instanceRunning: false) }
            let taken = try await client.getIfPresent(path(.volumesnapshots, snap))?.decoded(as: VolumeSnapshotStatus.self)
            return SnapshotOutcome(method: "volumesnapshot", sizeBytes: taken?.restoreSize.flatMap(Quantity.bytes).map(Int64.init),
                                   unavailableSeconds: 0)
        }
        do {
            if try await client.getIfPresent(path(.deployments, name)) == nil {
                try await client.create(path(.deployments), manifests.deployment(d, owner: owner))
            }
            try await waitForDatabase(d, claim: name, snapshot: nil)
        } catch {
            let again = ProvisioningError(error)
            throw SnapshotFailure(ProvisioningError(.snapshotFailed, "\(failure.map { $0.userMessage + "; " } ?? "")the database did not start again: \(again.userMessage)",
                                                    detail: "\(failure.map { $0.detail + "; " } ?? "")the database did not start again: \(again.detail)"), instanceRunning: false)
        }
        if let failure { throw SnapshotFailure(failure, instanceRunning: true) }
        let taken = try await client.getIfPresent(path(.volumesnapshots, snap))?.decoded(as: VolumeSnapshotStatus.self)
        return SnapshotOutcome(method: "volumesnapshot", sizeBytes: taken?.restoreSize.flatMap(Quantity.bytes).map(Int64.init),
                               unavailableSeconds: Date().timeIntervalSince(stopped))
    }

    // MARK: hibernation

    /// Scales the database to zero: its Deployment goes (Postgres shuts down); the PVC, Secret and
    /// Service stay, so it starts again with its data, credentials and address.
    public func stop(database d: DatabaseRecord) async throws {
        let name = manifests.databaseObject(d.name)
        try await client.delete(path(.deployments, name))
        try await waitGone(path(.deployments, name))
        try await waitNoPods(databaseSelector(d.name, component: "database"))
    }

    /// Back from zero: the Deployment again, ready when its pod is (image pull, volume attach,
    /// Postgres start and the readiness probe).
    public func start(database d: DatabaseRecord) async throws -> InstanceInfo {
        let name = manifests.databaseObject(d.name)
        guard let owner = try await client.getIfPresent(path(.secrets, name)) else {
            throw ProvisioningError(.instanceGone, "its objects are gone; run \"devdb db reset \(d.name)\"")
        }
        if try await client.getIfPresent(path(.deployments, name)) == nil {
            try await client.create(path(.deployments), manifests.deployment(d, owner: owner))
        }
        try await waitForDatabase(d, claim: name, snapshot: nil)
        return InstanceInfo(host: manifests.serviceHost(d.name), port: 5432, cloneMethod: d.cloneMethod ?? "snapshot", note: d.note)
    }

    public func deleteSnapshot(_ s: SnapshotRecord) async throws {
        try await client.delete(path(.volumesnapshots, manifests.snapshotObject(s)))
    }

    func databaseSelector(_ name: String, component: String? = nil) -> String {
        var s = "\(manifests.managedSelector),\(KubeNames.databaseLabel)=\(KubeNames.labelValue(name))"
        if let component { s += ",app.kubernetes.io/component=\(component)" }
        return s
    }


}
