import DevDBCatalog
import Foundation
#if canImport(Glibc)
import Glibc
#endif

// Recovery: after a restart or crash, the local provisioner's files and processes are matched
// against the catalog. What no record wants is removed; ready instances that do not run are
// started again.
extension LocalProvisioner {
    /// Whether a catalog entry still wants the instance `name` (read again now: the snapshot
    /// the reconcile started from may predate a database created since).
    fileprivate func instanceWanted(_ name: String) async -> Bool {
        do {
            guard let d = try await catalog.database(name) else { return false }
            return d.state != .failed
        } catch { return true }  // Redis away: remove nothing
    }

    /// Whether the generation exists (`seeding`: and is being restored now).
    fileprivate func generationWanted(_ project: String, _ number: Int, seeding: Bool = false) async -> Bool {
        do {
            guard let g = try await catalog.generation(project, number) else { return false }
            return !seeding || GenerationLifecycle.isSeeding(g)
        } catch { return true }
    }

    public func recover(databases: [DatabaseRecord], generations: [Generation], snapshots: [SnapshotRecord]) async throws -> RecoveryReport {
        var report = RecoveryReport()
        let fm = FileManager.default
        // Snapshot directories without a record (a delete interrupted after its commit), and
        // ready records whose directory is gone.
        let knownSnapshots = Set(snapshots.map(\.reference))
        let snapshotsRoot = layout.path("snapshots")
        for db in (try? fm.contentsOfDirectory(atPath: snapshotsRoot)) ?? [] {
            for snap in (try? fm.contentsOfDirectory(atPath: "\(snapshotsRoot)/\(db)")) ?? [] where !knownSnapshots.contains("\(db)@\(snap)") {
                let wanted: Bool
                do { wanted = try await catalog.snapshot(db, snap) != nil } catch { continue }
                guard !wanted else { continue }
                try? await deleteSnapshot(SnapshotRecord(database: db, name: snap, owner: "", project: "", generation: nil))
                report.orphansRemoved.append("snapshot \(db)@\(snap)")
            }
        }
        for s in snapshots where s.state == .ready && !fm.fileExists(atPath: "\(layout.snapshotDir(s))/pgdata/PG_VERSION") {
            report.missingSnapshots.append(s)
        }
        let wantedNow = Set(databases.filter { $0.state != .failed }.map(\.name))
        // Instance directories and processes no record wants (failed databases keep none).
        for name in (try? fm.contentsOfDirectory(atPath: layout.path("instances"))) ?? []
        where !wantedNow.contains(name) {
            guard await !instanceWanted(name) else { continue }
            try? await stopAndRemove(name)
            report.orphansRemoved.append("instance \(name)")
        }
        // Generation directories without a generation record.
        let known = Set(generations.map { "\($0.project)/\($0.number)" })
        let generationsRoot = layout.path("generations")
        for project in (try? fm.contentsOfDirectory(atPath: generationsRoot)) ?? [] {
            for entry in (try? fm.contentsOfDirectory(atPath: "\(generationsRoot)/\(project)")) ?? [] where !known.contains("\(project)/\(entry)") {
                guard let n = Int(entry), await !generationWanted(project, n) else { continue }
                try? await deleteGeneration(Generation(project: project, number: n))
                report.orphansRemoved.append("generation \(project)/\(n)")
            }
        }
        // Temporary instances of schema diffs that no query uses (an API that crashed meanwhile).
        for dir in orphanScratch() {
            await removeScratch(dir, "")
            report.orphansRemoved.append("scratch \((dir as NSString).lastPathComponent)")
        }
        // Postmasters under the data directory that nothing wants: their directory is gone, or
        // no record or seeding generation names it.
        let instancesRoot = layout.path("instances") + "/"
        for p in Postmasters.list() where p.dataDirectory.hasPrefix(dataDirectory.path + "/") {
            let rest = p.dataDirectory
            var wanted = false
            if rest.hasPrefix(instancesRoot), rest.hasSuffix("/pgdata") {
                let name = String(rest.dropFirst(instancesRoot.count).dropLast("/pgdata".count))
                if fm.fileExists(atPath: rest) { wanted = wantedNow.contains(name) ? true : await instanceWanted(name) }
            } else if rest.hasPrefix(layout.path("scratch") + "/") {
                wanted = activeScratch.withLock { $0.contains(String(rest.dropLast("/pgdata".count))) }
            } else if rest.hasPrefix(generationsRoot + "/"), rest.hasSuffix("/pgdata") {
                let parts = rest.dropFirst(generationsRoot.count + 1).dropLast("/pgdata".count).split(separator: "/")
                if parts.count == 2, let n = Int(parts[1]), fm.fileExists(atPath: rest) {
                    wanted = await generationWanted(String(parts[0]), n, seeding: true)
                }
            }
            guard !wanted else { continue }
            await Postmasters.stop(p.pid)
            report.orphansRemoved.append("postgres process \(p.pid) (\(p.dataDirectory))")
        }
        for d in databases where d.state == .ready || d.state == .unavailable {
            guard let port = d.backendPort, fm.fileExists(atPath: "\(layout.instanceDir(d.name))/pgdata/PG_VERSION") else {
                report.missing.append(d.name)
                continue
            }
            if await !isRunning(d.name) {
                // A stale postmaster.pid from a crash or reboot would stop pg_ctl start.
                let pidFile = "\(layout.instanceDir(d.name))/pgdata/postmaster.pid"
                if fm.fileExists(atPath: pidFile) { unlink(pidFile) }
                try? PostgresTools.writeAuthentication(pgdata: "\(layout.instanceDir(d.name))/pgdata")
                do { try await start(d.name, port: port) } catch {
                    report.unhealthy[d.name] = "its Postgres does not start: \(error)"
                    continue
                }
                report.restarted.append(d.name)
            }
            report.healthy.append(d.name)
        }
        return report
    }
}
