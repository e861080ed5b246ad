import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import DevDBRedis
import Logging
import ServiceLifecycle

/// Reconciles the catalog with what runs and repairs catalog keys nothing owns: at start (which
/// resumes interrupted work) and then every --reconcile-interval, checked at the passes' rhythm
/// (--reap-interval).
struct Reconciler: Service, ControlPlanePart {
    let context: ControlPlaneContext

    func run() async throws {
        var lastReconcile = Date()
        await withDiscardingTaskGroup { group in
            group.addTask {
                // Redis may not be up yet: keep trying, the API answers 503 meanwhile.
                var backoff = Backoff(initial: 0.5, cap: 10)
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    do {
                        try await reconcile()
                        // Once a start: the stream an earlier version kept each history in.
                        if let n = try? await catalog.removeLegacyOperationStreams(), n > 0 {
                            logger.info("removed the operation streams of an earlier version (the history is a list now)", metadata: ["devdb.keys": "\(n)"])
                        }
                        return
                    } catch {
                        logger.error("recovery after start failed; retrying", metadata: ["devdb.error": "\(error)"])
                        try? await Task.sleep(nanoseconds: Backoff.nanoseconds(backoff.next()))
                    }
                }
            }
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                if Date().timeIntervalSince(lastReconcile) >= config.reconcileIntervalSeconds {
                    lastReconcile = Date()
                    await measurePass("reconcile") {
                        do { try await reconcile() } catch {
                            logger.warning("reconcile failed", metadata: ["devdb.error": "\(error)"])
                        }
                    }
                }
                do {
                    try await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(config.reapIntervalSeconds)) }
                } catch { return }
            }
        }
    }

    /// Compares the catalog with what runs and repairs what it owns: instances and processes no
    /// record wants are removed; ready databases whose instance is gone fail, unhealthy ones become
    /// unavailable and come back; routes without a ready database and port leases without their
    /// database are removed; generations without a project are removed; work in flight that no
    /// worker runs (a restart, a lost job) is resumed; projects left `deleting` are finished.
    /// Runs at start and then every reconcile interval.
    @discardableResult
    func reconcile() async throws -> RecoveryReport {
        // One read of every record, with its text: the comparisons below and the guards of the
        // key repairs use it (a record changed since fails its guard; nothing is read twice).
        let asRead = try await catalog.allDatabasesAsRead()
        let databases = asRead.values.compactMap(\.value).sorted { $0.name < $1.name }
        var generations: [Generation] = []
        let projects = try await catalog.projects()
        for p in projects { generations += try await catalog.generations(p.name) }
        let snapshots = try await catalog.allSnapshots()
        let catalog = self.catalog
        // The provisioner reads the catalog again right before each delete: a create, refresh or
        // snapshot recorded after this first read keeps its objects.
        let report = try await provisioner.recover(CatalogView(databases: databases, generations: generations, snapshots: snapshots.map(\.0))) {
            var generations: [Generation] = []
            for p in try await catalog.projects() { generations += try await catalog.generations(p.name) }
            return CatalogView(databases: try await catalog.databases(), generations: generations, snapshots: try await catalog.allSnapshots().map(\.0))
        }
        if !report.orphansRemoved.isEmpty {
            logger.warning("removed what no catalog entry wants", metadata: ["devdb.removed": "\(report.orphansRemoved.joined(separator: ", "))"])
            for o in report.orphansRemoved { await audit.automatic("reconcile.remove-orphan", o) }  // #27
        }
        if !report.spared.isEmpty {
            logger.info("kept objects the catalog did not know at first (recorded since, or made moments ago)", metadata: ["devdb.kept": "\(report.spared.joined(separator: ", "))"])
        }
        let previouslyForeign = context.foreignObjects.withLock { f in defer { f = report.foreign }; return f }
        if !report.foreign.isEmpty && report.foreign != previouslyForeign {
            logger.warning("""
                found objects another DevDB installation made (a reinstall over a lost catalog?); they are kept, never deleted. \
                To remove them: kubectl delete deployments,services,secrets,jobs,persistentvolumeclaims,volumesnapshots -l devdb.io/installation=<id>. \
                To keep them, leave them: this installation ignores them (GET /v1/admin/foreign-objects lists them)
                """, metadata: ["devdb.foreign": "\(report.foreign.joined(separator: "; "))"])
        }
        if !report.restarted.isEmpty {
            logger.info("restarted instances", metadata: ["devdb.instances": "\(report.restarted.joined(separator: ","))"])
            for n in report.restarted { await audit.automatic("reconcile.restart", n) }  // #27
        }
        for name in report.missing { if await record(name, .instanceMissing, .bestEffort)?.applied == true { await audit.automatic("reconcile.instance-missing", name) } }  // #27
        for (name, why) in report.unhealthy { await record(name, .instanceUnhealthy(reason: why), .bestEffort) }
        // Only an unavailable database has anything to change when healthy (a ready one would be
        // an ignored transition: a read per database for nothing).
        let unavailable = Set(databases.filter { $0.state == .unavailable }.map(\.name))
        for name in report.healthy where unavailable.contains(name) { await record(name, .instanceHealthy, .bestEffort) }
        for s in report.missingSnapshots {
            if let raw = snapshots.first(where: { $0.0.reference == s.reference })?.1 {
                _ = try? await catalog.failSnapshot(s, raw: raw, reason: "its data is gone")
            }
        }
        await repairSnapshots(snapshots, databases: databases)
        for g in report.missingGenerations {
            try? await catalog.failGeneration(g, reason: "its snapshot is gone; the next database restores a new generation")
        }

        // Work in flight that nothing runs.
        let busy = context.running.withLock { $0 }
        for d in databases where d.state.isTransitional {
            if let op = d.operation, busy.contains(Job.database(d.name, op).key) { continue }
            await record(d.name, .resume, .bestEffort)
        }
        for p in projects where p.state == .deleting && !busy.contains(Job.deleteProject(p.name).key) {
            submit(.deleteProject(p.name))
        }
        for g in generations where GenerationLifecycle.isSeeding(g) && !busy.contains(Job.seed(project: g.project, generation: g.number).key) {
            if projects.first(where: { $0.name == g.project })?.state != .deleting { submit(.seed(project: g.project, generation: g.number)) }
        }
        try await repairKeys(projects: Set(projects.map(\.name)), databases: databases, asRead: asRead)
        // The state counts and the ready and expiry indexes, rebuilt if they differ (a catalog an
        // older version wrote): compared with the records read above, read again only then.
        if try await catalog.repairDatabaseIndexes(checking: databases) {
            logger.info("rebuilt the database indexes (state counts, ready, expiry) from the records")
        }
        return report
    }

    /// Snapshots being taken by work that is gone fail; snapshots whose database was deleted and
    /// that no branch uses any more are removed.
    func repairSnapshots(_ snapshots: [(SnapshotRecord, String)], databases: [DatabaseRecord]) async {
        for (s, raw) in snapshots {
            let d = databases.first { $0.name == s.database }
            if s.state == .taking, d?.operation?.target != s.name || d?.operation?.kind != .snapshot {
                // Read again: the snapshot may have started after the list was read.
                guard let now = try? await catalog.database(s.database), now.operation?.target == s.name else {
                    _ = try? await catalog.failSnapshot(s, raw: raw, reason: "the work taking it is gone")
                    continue
                }
            }
            if d == nil, (try? await catalog.snapshotUsers(s.database, s.name))?.isEmpty == true,
               (try? await catalog.removeSnapshotRecord(s, ifUnchanged: raw)) == true {
                await removeSnapshotFiles([s])
                logger.warning("removed a snapshot no database or branch uses", metadata: ["devdb.snapshot": "\(s.reference)"])
                await audit.automatic("reconcile.remove-snapshot", s.reference)  // #27
            }
        }
    }

    /// Routes, leases and generation keys that nothing owns. Every removal is guarded by the
    /// owning record as read (`asRead`: reconcile's read, and a read of the names it did not
    /// hold), so work that changes it at the same time wins.
    func repairKeys(projects: Set<String>, databases: [DatabaseRecord], asRead: [String: RecordAsRead<DatabaseRecord>]) async throws {
        var removed: [String] = []
        // Read in bulk (a few round trips for thousands of databases); write only what differs.
        func recordsOf(_ names: [String]) async throws -> [String: RecordAsRead<DatabaseRecord>] {
            let unread = names.filter { asRead[$0] == nil }
            return unread.isEmpty ? asRead : asRead.merging(try await catalog.databasesAsRead(unread)) { _, fresh in fresh }
        }
        let routed = try await catalog.routedNames()
        let records = try await recordsOf(routed)
        let routes = try await catalog.routes(routed)
        for name in routed {
            let read = records[name] ?? RecordAsRead(value: nil, raw: nil)
            if let d = read.value, DatabaseLifecycle.hasRoute(d.state) {
                let route = routes[name]
                func differs(_ d: DatabaseRecord) -> Bool { route?.host != d.backendHost || route?.port != d.backendPort }
                // The record read at the start of the pass may be older than the route: repair
                // only what the record says now.
                if differs(d), let now = try await catalog.database(name), differs(now) { await record(name, .routeRepair, .bestEffort) }
                continue
            }
            if try await catalog.removeRoute(name, ifDatabaseIs: read.raw) { removed.append("route \(name)") }
        }
        let routedSet = Set(routed)
        for d in databases where DatabaseLifecycle.hasRoute(d.state) && !routedSet.contains(d.name) {
            // Only a repair that committed counts: the database may have moved on (reset, deleted)
            // between the list and the route's read, and then it has no route to restore.
            if try await catalog.route(d.name) == nil, await record(d.name, .routeRepair, .bestEffort)?.applied == true { removed.append("(restored route \(d.name))") }
        }
        let leases = try await catalog.portOwners()
        let owners = try await recordsOf(Array(Set(leases.values)))
        for (port, owner) in leases {
            let read = owners[owner] ?? RecordAsRead(value: nil, raw: nil)
            if read.value?.backendPort == port { continue }
            if try await catalog.releaseLease(port, owner: owner, ifDatabaseIs: read.raw) { removed.append("port lease \(port) of \(owner)") }
        }
        for stray in try await catalog.strayGenerationKeys(known: projects) {
            if try await catalog.removeStrayKey(stray) { removed.append(stray.key) }
        }
        if !removed.isEmpty { logger.warning("reconcile repaired catalog keys", metadata: ["devdb.repaired": "\(removed.joined(separator: ", "))"]) }
        for k in removed { await audit.automatic("reconcile.repair-key", k) }  // #27
    }
}
