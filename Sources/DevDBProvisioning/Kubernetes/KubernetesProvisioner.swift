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

    func sleep() async throws { try await Task.sleep(for: .milliseconds(Int(settings.pollInterval * 1000))) }

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

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
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
                let previous = g.number > 1 ? try await client.getIfPresent(path(.volumesnapshots, manifests.generationObject(Generation(project: g.project, number: g.number - 1))))?.at("status.restoreSize").string : nil
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
                    throw Failure(Self.noSnapshotAPI)
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
            throw Failure(Self.noSnapshotAPI)
        }
    }

    enum Adopted { case job, snapshot }

    /// What of a generation's seed is still under way after an API restart: its VolumeSnapshot
    /// (cut, maybe still uploading), or its restore Job running (not failed, not being deleted)
    /// with its volume. nil: nothing worth keeping.
    func adoptableSeed(volume: String, job: String) async throws -> Adopted? {
        if let snap = try await client.getIfPresent(path(.volumesnapshots, volume)), snap.at("metadata.deletionTimestamp").isNull {
            return .snapshot
        }
        guard let j = try await client.getIfPresent(path(.jobs, job)), j.at("metadata.deletionTimestamp").isNull,
              (j.at("status.failed").int ?? 0) == 0,
              !j.at("status.conditions").array.contains(where: { $0["type"].string == "Failed" && $0["status"].string == "True" }),
              let pvc = try await client.getIfPresent(path(.persistentvolumeclaims, volume)), pvc.at("metadata.deletionTimestamp").isNull else { return nil }
        return .job
    }

    public func deleteGeneration(_ g: Generation) async throws {
        let snapshot = manifests.generationObject(g)
        let claims = try await client.list(path(.persistentvolumeclaims), labelSelector: manifests.managedSelector)
        let users = claims.filter { $0.at("spec.dataSource.name").string == snapshot && $0.at("spec.dataSource.kind").string == "VolumeSnapshot" }
        guard users.isEmpty else {
            throw Failure("generation \(g.number) of \(g.project) is still used by \(users.compactMap { $0.at("metadata.name").string }.joined(separator: ", ")); its snapshot stays")
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
            guard let snap = try await client.getIfPresent(path(.volumesnapshots, snapshot)), snap.at("status.readyToUse").bool == true else {
                if case .generation(let g) = source {
                    throw Failure("generation \(g.number) of \(g.project) has no ready snapshot (\(snapshot)); run \"devdb project refresh \(g.project)\" and reset with --latest")
                }
                throw Failure("\(source.description) has no ready VolumeSnapshot (\(snapshot))")
            }
            // A volume made from a snapshot must be at least as large as the snapshot.
            if let restore = snap.at("status.restoreSize").string, let need = Quantity.bytes(restore),
               let have = Quantity.bytes(settings.volumeSize), need > have {
                size = restore
            }
        }
        try await client.create(path(.persistentvolumeclaims),
                                manifests.volumeClaim(name: name, labels: manifests.databaseLabels(d), snapshot: snapshot, owner: owner, size: size))
        if snapshot == nil, case .generation = source {
            phase("restoring the dump (no VolumeSnapshot class)")
            guard let project = try await projectLookup(d.project) else { throw Failure("project \(d.project) is gone") }
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
              let j = try await client.getIfPresent(path(.jobs, manifests.restoreJobName(name))), j.at("metadata.deletionTimestamp").isNull,
              (j.at("status.failed").int ?? 0) == 0,
              let pvc = try await client.getIfPresent(path(.persistentvolumeclaims, name)), pvc.at("metadata.deletionTimestamp").isNull else { return nil }
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
            throw SnapshotFailure("no VolumeSnapshot class is configured (--snapshot-class / databases.snapshotClass): snapshots need one", instanceRunning: true)
        }
        let name = manifests.databaseObject(d.name)
        let snap = manifests.snapshotObject(s)
        guard let owner = try await client.getIfPresent(path(.secrets, name)) else {
            throw SnapshotFailure("the database's objects are gone; run \"devdb db reset \(d.name)\"", instanceRunning: false)
        }
        let stopped = Date()
        var failure: String?
        do {
            try await client.delete(path(.deployments, name))
            try await waitGone(path(.deployments, name))
            try await waitNoPods(databaseSelector(d.name, component: "database"))
            // What an interrupted try left.
            if try await client.delete(path(.volumesnapshots, snap)) != nil { try await waitGone(path(.volumesnapshots, snap)) }
            try await client.create(path(.volumesnapshots), manifests.volumeSnapshot(name: snap, labels: manifests.snapshotLabels(s), claim: name))
            try await waitForSnapshotCut(snap)
        } catch {
            failure = "\(error)"
            _ = try? await client.delete(path(.volumesnapshots, snap))
        }
        if d.operation?.asleep == true {
            // Scaled to zero already: the volume is cut as it is, and the database stays asleep.
            if let failure { throw SnapshotFailure(failure, instanceRunning: false) }
            let taken = try await client.getIfPresent(path(.volumesnapshots, snap))
            return SnapshotOutcome(method: "volumesnapshot", sizeBytes: taken?.at("status.restoreSize").string.flatMap(Quantity.bytes).map(Int64.init),
                                   unavailableSeconds: 0)
        }
        do {
            if try await client.getIfPresent(path(.deployments, name)) == nil {
                try await client.create(path(.deployments), manifests.deployment(d, owner: owner))
            }
            try await waitForDatabase(d, claim: name, snapshot: nil)
        } catch {
            throw SnapshotFailure("\(failure.map { $0 + "; " } ?? "")the database did not start again: \(error)", instanceRunning: false)
        }
        if let failure { throw SnapshotFailure(failure, instanceRunning: true) }
        let taken = try await client.getIfPresent(path(.volumesnapshots, snap))
        return SnapshotOutcome(method: "volumesnapshot", sizeBytes: taken?.at("status.restoreSize").string.flatMap(Quantity.bytes).map(Int64.init),
                               unavailableSeconds: Date().timeIntervalSince(stopped))
    }

    /// Waits until the snapshot is cut (`creationTime` set, or already readyToUse): the database
    /// may run again then, even while the snapshot is still being uploaded.
    func waitForSnapshotCut(_ name: String) async throws {
        try await waitForSnapshotStatus(name, what: "cut") { $0.at("status.readyToUse").bool == true || $0.at("status.creationTime").string != nil }
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
            throw Failure("its objects are gone; run \"devdb db reset \(d.name)\"")
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

    /// Deletes every object matching `selector` (owners first, so the garbage collector does most
    /// of it) and waits until none is left.
    /// Deletes every object this installation made in its namespace (its --instance's databases,
    /// generations, restore Jobs, VolumeSnapshots, Secrets) and waits until they are gone: what
    /// `helm uninstall` leaves, removed by the chart's opt-in pre-delete hook (`devdb-api
    /// --uninstall`). Returns what it deleted, as `kind/name`.
    public func removeEverything() async throws -> [String] {
        var found: [String] = []
        for r in Self.owned {
            for item in try await list(r, selector: manifests.managedSelector) {
                found.append("\(r.rawValue)/\(item.at("metadata.name").string ?? "?")")
            }
        }
        try await removeAll(selector: manifests.managedSelector)
        return found
    }

    func removeAll(selector: String) async throws {
        // Only this installation's: another's (a reinstall over a lost catalog) keeps its objects.
        for r in [Resource.secrets] + Self.owned.filter({ $0 != .secrets }) {
            for item in try await list(r, selector: selector) where manifests.isOurs(item) {
                if let n = item.at("metadata.name").string { try await client.delete(path(r, n)) }
            }
        }
        var left: [String] = []
        try await poll({
            left = []
            for r in Self.owned {
                for item in try await list(r, selector: selector) where manifests.isOurs(item) {
                    left.append("\(r.rawValue)/\(item.at("metadata.name").string ?? "?")")
                }
            }
            return left.isEmpty
        }, failure: {
            "these objects were deleted but are still present after \(Int(settings.readyTimeout)) s: \(left.joined(separator: ", ")); check their finalizers with kubectl -n \(ns) get \(left[0]) -o yaml"
        })
    }

    /// Polls `done` every poll interval for up to readyTimeout; then fails with `failure()`.
    func poll(_ done: () async throws -> Bool, failure: () -> String) async throws {
        let deadline = Date().addingTimeInterval(settings.readyTimeout)
        while try await !done() {
            if Date() > deadline { throw Failure(failure()) }
            try await sleep()
        }
    }

    func waitGone(_ objectPath: String) async throws {
        try await poll({ try await client.getIfPresent(objectPath) == nil },
                       failure: { "\(objectPath) is still present \(Int(settings.readyTimeout)) s after it was deleted" })
    }

    func waitNoPods(_ selector: String) async throws {
        try await poll({ try await client.list(path(.pods), labelSelector: selector).isEmpty },
                       failure: { "the database's pod did not stop within \(Int(settings.readyTimeout)) s" })
    }

    // MARK: what the cluster reports

    /// Why a pod cannot make progress, if it cannot (image pulls, crash loops, failed init).
    static func podProblem(_ pod: JSONValue) -> String? { podProblems(pod).first?.message }

    /// A reason a pod is stuck; `transient` ones the kubelet retries by itself (a registry's
    /// 429, a blip pulling a layer, a container runtime busy creating): they fail the step only
    /// when they last longer than `transientPodErrorTimeout`.
    struct PodProblem {
        let message: String
        let transient: Bool
        let key: String
    }

    static func podProblems(_ pod: JSONValue) -> [PodProblem] {
        let name = pod.at("metadata.name").string ?? "pod"
        let statuses = pod.at("status.initContainerStatuses").array + pod.at("status.containerStatuses").array
        var found: [PodProblem] = []
        for s in statuses {
            let container = s["name"].string ?? "container"
            if let reason = s.at("state.waiting.reason").string {
                let message = s.at("state.waiting.message").string ?? ""
                let key = "\(name)/\(container)"
                switch reason {
                case "ErrImagePull", "ImagePullBackOff":
                    found.append(PodProblem(message: "pod \(name) cannot pull the image for \(container) (\(reason)): \(message). Check the image name, the registry's rate limits and pull secrets", transient: true, key: key))
                case "CreateContainerError":
                    found.append(PodProblem(message: "pod \(name) cannot create container \(container) (\(reason)): \(message)", transient: true, key: key))
                default:
                    if let fatal = fatalWaiting(reason: reason, message: message, pod: name, container: container, status: s) {
                        found.append(PodProblem(message: fatal, transient: false, key: key))
                    }
                }
            }
        }
        return found
    }

    static func fatalWaiting(reason: String, message: String, pod name: String, container: String, status s: JSONValue) -> String? {
                switch reason {
                case "InvalidImageName":
                    return "pod \(name) cannot pull the image for \(container) (\(reason)): \(message). Check the image name"
                case "ErrImageNeverPull":
                    return "pod \(name) cannot start \(container) (ErrImageNeverPull): \(message). Its pull policy is Never and the image is not on the node: load it (kind load docker-image) or set databases.imagePullPolicy"
                case "CreateContainerConfigError":
                    return "pod \(name) cannot create container \(container) (\(reason)): \(message)"
                case "CrashLoopBackOff":
                    let last = s.at("lastState.terminated.message").string ?? s.at("lastState.terminated.reason").string ?? ""
                    return "container \(container) of pod \(name) keeps crashing: \(last.trimmingCharacters(in: .whitespacesAndNewlines))"
                default: return nil
                }
    }

    /// The problem that fails the step now, if any: fatal ones at once, transient ones once they
    /// have lasted `transientPodErrorTimeout` (the kubelet's message then). `since` remembers
    /// when each container was first seen failing; a container that recovered is forgotten.
    func podFailure(_ pod: JSONValue, since: inout [String: Date]) -> String? {
        let problems = Self.podProblems(pod)
        let name = pod.at("metadata.name").string ?? "pod"
        for key in since.keys where key.hasPrefix(name + "/") && !problems.contains(where: { $0.key == key }) { since[key] = nil }
        for p in problems {
            guard p.transient else { return p.message }
            let first = since[p.key] ?? Date()
            since[p.key] = first
            if Date().timeIntervalSince(first) > settings.transientPodErrorTimeout {
                return p.message + " (for \(Int(settings.transientPodErrorTimeout)) s)"
            }
        }
        return nil
    }

    /// What the cluster says keeps a pod from starting, beyond its containers' states: a volume
    /// that cannot be mounted (a missing Secret: event FailedMount), or no node for it
    /// (PodScheduled=False, Unschedulable, for longer than unschedulableTimeout; unbound volumes
    /// are left to the bind timeout). `since` remembers when each pod was first seen unschedulable.
    func podBlocked(_ pod: JSONValue, since: inout [String: Date]) async throws -> String? {
        let name = pod.at("metadata.name").string ?? "pod"
        if let scheduled = pod.at("status.conditions").array.first(where: { $0["type"].string == "PodScheduled" }),
           scheduled["status"].string == "False", scheduled["reason"].string == "Unschedulable" {
            let message = scheduled["message"].string ?? ""
            if !message.contains("unbound") && !message.contains("PersistentVolumeClaim") {
                let first = since[name] ?? Date()
                since[name] = first
                if Date().timeIntervalSince(first) > settings.unschedulableTimeout {
                    return "pod \(name) cannot be scheduled (Unschedulable for \(Int(settings.unschedulableTimeout)) s): \(message). Check node resources (requests \(settings.cpuRequest) CPU, \(settings.memoryRequest)), taints and node selectors"
                }
            }
        } else {
            since[name] = nil
        }
        // Mount failures show only as events while the pod sits in ContainerCreating.
        let waitingToStart = (pod.at("status.initContainerStatuses").array + pod.at("status.containerStatuses").array)
            .contains { ["ContainerCreating", "PodInitializing"].contains($0.at("state.waiting.reason").string ?? "") }
        guard waitingToStart || pod.at("status.phase").string == "Pending" else { return nil }
        let events = ((try? await client.list(path(.events), labelSelector: "", fieldSelector: "involvedObject.name=\(name)")) ?? [])
            .filter { $0.at("involvedObject.name").string == name && $0.at("involvedObject.kind").string == "Pod" }
        for e in events where ["FailedMount", "FailedAttachVolume"].contains(e["reason"].string ?? "") {
            let message = e["message"].string ?? ""
            if message.contains("not found") || (e["count"].int ?? 1) >= 3 {
                return "pod \(name) cannot mount its volumes (\(e["reason"].string ?? "FailedMount")): \(message)"
            }
        }
        return nil
    }

    /// Why a Job's controller cannot make its pod (admission: Pod Security, a ResourceQuota, a
    /// LimitRange), from its FailedCreate events; nil while there is none.
    func controllerRefused(kind: String, name: String) async throws -> String? {
        let events = ((try? await client.list(path(.events), labelSelector: "", fieldSelector: "involvedObject.name=\(name)")) ?? [])
            .filter { $0.at("involvedObject.name").string == name && $0.at("involvedObject.kind").string == kind && $0["reason"].string == "FailedCreate" }
        guard let message = events.last?["message"].string else { return nil }
        return message + Self.admissionHint(message)
    }

    static func admissionHint(_ message: String) -> String {
        message.contains("PodSecurity") ? ". The namespace enforces Pod Security \"restricted\": check databases.postgresUID (not 0) and podSecurity values" : ""
    }

    static func podReady(_ pod: JSONValue) -> Bool {
        pod.at("status.conditions").array.contains { $0["type"].string == "Ready" && $0["status"].string == "True" }
    }

    /// Fails once a PVC has been Pending longer than the bind timeout.
    func checkClaim(_ claim: String, since start: Date, snapshot: String?) async throws -> Bool {
        guard let pvc = try await client.getIfPresent(path(.persistentvolumeclaims, claim)) else {
            throw Failure("volume \(claim) disappeared")
        }
        if pvc.at("status.phase").string == "Bound" { return true }
        if Date().timeIntervalSince(start) > settings.bindTimeout {
            var why = "volume \(claim) did not bind within \(Int(settings.bindTimeout)) s (phase \(pvc.at("status.phase").string ?? "Pending"))"
            if let snapshot, let snap = try await client.getIfPresent(path(.volumesnapshots, snapshot)), snap.at("status.readyToUse").bool != true {
                why += "; its source snapshot \(snapshot) is not ready"
            }
            // The provisioner's own words (ProvisioningFailed: a size below the snapshot's, a quota).
            let events = ((try? await client.list(path(.events), labelSelector: "", fieldSelector: "involvedObject.name=\(claim)")) ?? [])
                .filter { $0.at("involvedObject.name").string == claim && $0.at("involvedObject.kind").string == "PersistentVolumeClaim" && $0["type"].string == "Warning" }
            if let last = events.last, let message = last["message"].string {
                why += "; \(last["reason"].string ?? "event"): \(message)"
            }
            throw Failure(why + ": check the StorageClass (\(settings.storageClass ?? "cluster default")) with kubectl -n \(ns) describe pvc \(claim)")
        }
        return false
    }

    func waitForJob(_ job: String, claim: String, phase: @escaping @Sendable (String) -> Void) async throws {
        let start = Date()
        var unschedulable: [String: Date] = [:]
        var transient: [String: Date] = [:]
        var last = ""
        func report(_ p: String) { if p != last { last = p; phase(p) } }
        while true {
            if Date().timeIntervalSince(start) > settings.restoreTimeout {
                throw Failure("restore job \(job) did not finish within \(Int(settings.restoreTimeout)) s")
            }
            // The API server away longer than the client's retry budget: keep waiting, within the restore's deadline.
            guard let found = try await transiently({ try await client.getIfPresent(path(.jobs, job)) }, since: start, deadline: settings.restoreTimeout),
                  let pods = try await transiently({ try await client.list(path(.pods), labelSelector: "job-name=\(job)") }, since: start, deadline: settings.restoreTimeout) else {
                report("waiting for the Kubernetes API")
                try await sleep()
                continue
            }
            guard let j = found else { throw Failure("restore job \(job) disappeared") }
            if (j.at("status.succeeded").int ?? 0) >= 1 { return }
            if pods.isEmpty, let refused = try await controllerRefused(kind: "Job", name: job) {
                throw Failure("restore job \(job) cannot make its pod: \(refused)")
            }
            let failed = j.at("status.conditions").array.first { $0["type"].string == "Failed" && $0["status"].string == "True" }
            if failed != nil || (j.at("status.failed").int ?? 0) > 0 {
                var detail = failed?["message"].string ?? failed?["reason"].string ?? "the job failed"
                for p in pods {
                    for s in p.at("status.initContainerStatuses").array + p.at("status.containerStatuses").array {
                        if let code = s.at("state.terminated.exitCode").int, code != 0 {
                            let msg = (s.at("state.terminated.message").string ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                            detail = "\(s["name"].string ?? "container") exited with \(code)" + (msg.isEmpty ? "" : ": \(msg)")
                        }
                    }
                }
                throw Failure("restore job \(job) failed: \(detail)")
            }
            for p in pods {
                if let problem = podFailure(p, since: &transient) { throw Failure(problem) }
                if let blocked = try await podBlocked(p, since: &unschedulable) { throw Failure(blocked) }
                if p.at("status.initContainerStatuses").array.contains(where: { !$0.at("state.running").isNull }) { report("fetching") }
                if p.at("status.containerStatuses").array.contains(where: { !$0.at("state.running").isNull }) { report("restoring") }
            }
            if try await transiently({ try await checkClaim(claim, since: start, snapshot: nil) }, since: start, deadline: settings.restoreTimeout) == false {
                report("waiting for volume")
            }
            try await sleep()
        }
    }

    /// Waits for `readyToUse` until the snapshot deadline. A `status.error` is not the end: the
    /// snapshot controller writes errors it retries ("the object has been modified", a throttled
    /// cloud API) and clears them; the last one seen is reported only when the deadline passes.
    func waitForSnapshot(_ name: String) async throws {
        try await waitForSnapshotStatus(name, what: "readyToUse") { $0.at("status.readyToUse").bool == true }
    }

    func waitForSnapshotStatus(_ name: String, what: String, _ done: (JSONValue) -> Bool) async throws {
        let start = Date()
        var lastError: String?
        while true {
            if let s = try await transiently({ try await client.getIfPresent(path(.volumesnapshots, name)) }, since: start, deadline: settings.snapshotTimeout) {
                guard let s else { throw Failure("VolumeSnapshot \(name) disappeared") }
                if done(s) { return }
                if let message = s.at("status.error.message").string { lastError = message }
            }
            if Date().timeIntervalSince(start) > settings.snapshotTimeout {
                if let lastError {
                    throw Failure("VolumeSnapshot \(name) failed: \(lastError) (still failing after \(Int(settings.snapshotTimeout)) s: check the CSI driver's snapshotter with kubectl -n \(ns) describe volumesnapshot \(name))")
                }
                throw Failure("VolumeSnapshot \(name) was not \(what) within \(Int(settings.snapshotTimeout)) s: check the VolumeSnapshotClass \(settings.snapshotClass ?? "") and the CSI driver's snapshotter")
            }
            try await sleep()
        }
    }

    /// One poll of a long wait. An API server that is away for longer than the client's retry
    /// budget (a control-plane upgrade, an outage) does not fail the step: the poll answers nil
    /// and the wait goes on until the step's own deadline (`deadline` seconds after `since`).
    func transiently<T>(_ body: () async throws -> T, since: Date, deadline: Double) async throws -> T? {
        do { return try await body() } catch let e as KubeError where e.isTransient && Date().timeIntervalSince(since) < deadline {
            return nil
        }
    }

    func waitForDatabase(_ d: DatabaseRecord, claim: String, snapshot: String?) async throws {
        let start = Date()
        var unschedulable: [String: Date] = [:]
        var transient: [String: Date] = [:]
        let selector = databaseSelector(d.name, component: "database")
        while true {
            let pods = try await client.list(path(.pods), labelSelector: selector)
            if pods.contains(where: Self.podReady) { return }
            if pods.isEmpty, let deployment = try await client.getIfPresent(path(.deployments, claim)),
               let failure = deployment.at("status.conditions").array.first(where: { $0["type"].string == "ReplicaFailure" && $0["status"].string == "True" }) {
                throw Failure("database \(d.name) cannot get a pod (\(failure["reason"].string ?? "ReplicaFailure")): \(failure["message"].string ?? "")\(Self.admissionHint(failure["message"].string ?? ""))")
            }
            for p in pods {
                if let problem = podFailure(p, since: &transient) { throw Failure(problem) }
                if let blocked = try await podBlocked(p, since: &unschedulable) { throw Failure(blocked) }
            }
            _ = try await checkClaim(claim, since: start, snapshot: snapshot)
            if Date().timeIntervalSince(start) > settings.readyTimeout {
                let status = pods.lazy.compactMap(Self.podProblem).first
                    ?? pods.first.map { "pod \($0.at("metadata.name").string ?? "?") is \($0.at("status.phase").string ?? "Pending")" } ?? "no pod was created"
                throw Failure("database \(d.name) was not ready within \(Int(settings.readyTimeout)) s: \(status); see kubectl -n \(ns) describe deployment \(claim)")
            }
            try await sleep()
        }
    }

    // MARK: reconcile

    public func recover(databases: [DatabaseRecord], generations: [Generation], snapshots known: [SnapshotRecord]) async throws -> RecoveryReport {
        let view = CatalogView(databases: databases, generations: generations, snapshots: known)
        return try await recover(view) { view }
    }

    /// Which catalog entry an object belongs to, by its labels, and whether `view` knows it.
    func wanted(_ labels: JSONValue, name: String, by view: CatalogView) -> (what: String, known: Bool)? {
        if let db = labels[KubeNames.snapshotOfLabel].string {
            return ("snapshot \(db)@\(labels[KubeNames.snapshotLabel].string ?? "?")", Set(view.snapshots.map(manifests.snapshotObject)).contains(name))
        } else if let db = labels[KubeNames.databaseLabel].string {
            return (db, view.databases.contains { KubeNames.labelValue($0.name) == db })
        } else if let project = labels[KubeNames.projectLabel].string, let number = labels[KubeNames.generationLabel].string {
            return ("generation \(project)/\(number)", view.generations.contains { KubeNames.labelValue($0.project) == project && String($0.number) == number })
        }
        return nil
    }

    public func recover(_ view: CatalogView, current: @escaping @Sendable () async throws -> CatalogView) async throws -> RecoveryReport {
        var report = RecoveryReport()
        let databases = view.databases, generations = view.generations, known = view.snapshots
        var orphans: Set<String> = []
        var foreign: [String: Set<String>] = [:]
        var spared: Set<String> = []
        for r in Self.owned {
            for item in try await list(r, selector: manifests.managedSelector) {
                let labels = item.at("metadata.labels")
                guard let name = item.at("metadata.name").string, let (what, known) = wanted(labels, name: name, by: view), !known else { continue }
                guard manifests.isOurs(item) else {
                    foreign[labels[KubeNames.installationLabel].string ?? "(no installation label)", default: []].insert("\(r.rawValue)/\(name)")
                    continue
                }
                if item.at("metadata.deletionTimestamp").string != nil { continue }  // going already
                // Young objects are left alone: the work making them may not have recorded them yet.
                if let made = item.at("metadata.creationTimestamp").string.flatMap(Self.timestamp), Date().timeIntervalSince(made) < settings.orphanGracePeriod {
                    spared.insert(what)
                    continue
                }
                // The catalog again, right before the delete: what was recorded since the first read stays.
                if wanted(labels, name: name, by: try await current())?.known == true {
                    spared.insert(what)
                    continue
                }
                try await client.delete(path(r, name))
                orphans.insert(what)
            }
        }
        report.foreign = foreign.keys.sorted().map { id in
            "installation \(id): \(foreign[id]!.sorted().joined(separator: ", "))"
        }
        report.spared = spared.sorted()
        report.orphansRemoved = orphans.sorted()
        let deployments = try await client.list(path(.deployments), labelSelector: manifests.managedSelector)
        let present = Set(deployments.compactMap { $0.at("metadata.name").string })
        for d in databases where d.state == .ready || d.state == .unavailable {
            let name = manifests.databaseObject(d.name)
            guard present.contains(name) else { report.missing.append(d.name); continue }
            let pods = try await client.list(path(.pods), labelSelector: databaseSelector(d.name, component: "database"))
            if pods.contains(where: Self.podReady) {
                report.healthy.append(d.name)
            } else {
                report.unhealthy[d.name] = pods.compactMap(Self.podProblem).first
                    ?? (pods.isEmpty ? "its pod is not running" : "its pod is \(pods[0].at("status.phase").string ?? "Pending") and not ready")
            }
        }
        for s in known where s.state == .ready {
            if try await client.getIfPresent(path(.volumesnapshots, manifests.snapshotObject(s))) == nil { report.missingSnapshots.append(s) }
        }
        for g in generations where g.state == .ready && snapshots {
            if try await client.getIfPresent(path(.volumesnapshots, manifests.generationObject(g))) == nil {
                report.missingGenerations.append(g)
            }
        }
        return report
    }
}
