import DevDBCatalog
import Foundation

// Reconcile and removal: what the cluster holds against what the catalog knows.

extension KubernetesProvisioner {
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

    /// Deletes every object matching `selector` (owners first, so the garbage collector does most
    /// of it) and waits until none is left.
    func removeAll(selector: String) async throws {
        // Only this installation's: another's (a reinstall over a lost catalog) keeps its objects.
        for r in [Resource.secrets] + Self.owned.filter({ $0 != .secrets }) {
            for item in try await list(r, selector: selector) where manifests.isOurs(item) {
                if let n = item.at("metadata.name").string { try await client.delete(path(r, n)) }
            }
        }
        var left: [String] = []
        try await waitUntil({
            left = []
            for r in Self.owned {
                for item in try await list(r, selector: selector) where manifests.isOurs(item) {
                    left.append("\(r.rawValue)/\(item.at("metadata.name").string ?? "?")")
                }
            }
            return left.isEmpty
        }, timedOut: {
            ProvisioningError(.timeout, "these objects were deleted but are still present after \(Int(settings.readyTimeout)) s: \(left.joined(separator: ", ")); check their finalizers with kubectl -n \(ns) get \(left[0]) -o yaml")
        })
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
            let pods = try await self.pods(databaseSelector(d.name, component: "database"))
            if pods.contains(where: \.isReady) {
                report.healthy.append(d.name)
            } else {
                report.unhealthy[d.name] = pods.compactMap(Self.podProblem).first
                    ?? (pods.isEmpty ? "its pod is not running" : "its pod is \(pods[0].phase ?? "Pending") and not ready")
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
