import DevDBCore
import Foundation

/// Databases and their lifecycle transitions (the effect interpreter of `DatabaseLifecycle`).
extension CatalogEngine {
    func createDatabase(_ d: DatabaseRecord) throws {
        _ = try optimistic("creating database \(d.name)") { () throws -> (Transaction, Void)? in
            guard let (p, raw) = try getRaw(Project.self, Key.project(d.project)) else {
                throw CatalogError.notFound("project \"\(d.project)\" does not exist")
            }
            guard p.state != .deleting else { throw CatalogError.conflict("project \"\(d.project)\" is being deleted") }
            if try backend.get(Key.database(d.name)) != nil { throw CatalogError.conflict("database \"\(d.name)\" already exists") }
            var t = Transaction()
            t.guards = [.value(Key.project(d.project), raw), .value(Key.database(d.name), nil)]
            t.writes = [.set(Key.database(d.name), Self.encode(d)), .setAdd(Key.databases, d.name),
                        .setAdd(Key.ownerDatabases(d.owner), d.name), .setAdd(Key.projectDatabases(d.project), d.name)]
            t.writes += Self.indexWrites(d.name, before: nil, after: d)
            if let base = d.base, let (db, snap) = SnapshotRecord.parse(base) {
                // A branch holds on to its snapshot: it cannot be deleted while the branch exists.
                guard let (s, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(db, snap)), s.state != .failed else {
                    throw CatalogError.notFound("snapshot \(base) does not exist")
                }
                t.guards.append(.value(Key.snapshot(db, snap), sraw))
                t.writes.append(.setAdd(Key.snapshotUsers(db, snap), d.name))
            }
            // Teams (#27): quotas decided in this transaction; the state interval log starts.
            t.guards += try quotaGuards(owner: d.owner, adding: QuotaChange(databases: 1, awake: 1))
            t.writes.append(UsageLog.event(before: nil, after: d))
            return (t, ())
        }
    }

    func database(_ name: String) throws -> DatabaseRecord? { try getJSON(DatabaseRecord.self, Key.database(name)) }

    func databaseAsRead(_ name: String) throws -> RecordAsRead<DatabaseRecord> {
        guard let (d, raw) = try getRaw(DatabaseRecord.self, Key.database(name)) else { return RecordAsRead(value: nil, raw: nil) }
        return RecordAsRead(value: d, raw: raw)
    }

    /// Many records with the text each was read as (absent names: nil, nil).
    func databasesAsRead(_ names: [String], decodedBy cache: DecodedRecords? = nil) throws -> [String: RecordAsRead<DatabaseRecord>] {
        var out: [String: RecordAsRead<DatabaseRecord>] = [:]
        var read: [(name: String, key: String, text: String)] = []
        for (name, text) in zip(names, try backend.getMany(names.map(Key.database))) {
            if let text { read.append((name, Key.database(name), text)) } else { out[name] = RecordAsRead(value: nil, raw: nil) }
        }
        let records = try cache.map { try $0.decode(read.map { ($0.key, $0.text) }) }
            ?? read.map { try Self.decode(DatabaseRecord.self, $0.text, key: $0.key) }
        for (r, d) in zip(read, records) { out[r.name] = RecordAsRead(value: d, raw: r.text) }
        return out
    }

    func allDatabasesAsRead() throws -> [String: RecordAsRead<DatabaseRecord>] { try databasesAsRead(members(Key.databases), decodedBy: allDecoded) }

    func updateDatabase(_ name: String, _ change: (inout DatabaseRecord) -> Void) throws -> DatabaseRecord? {
        try optimistic("database \(name)") { () throws -> (Transaction, DatabaseRecord)? in
            guard let (d, raw) = try getRaw(DatabaseRecord.self, Key.database(name)) else { return nil }
            var next = d
            change(&next)
            let writes: [RedisWrite] = [.set(Key.database(name), Self.encode(next))] + Self.indexWrites(name, before: d, after: next)
            return (Transaction(guards: [.value(Key.database(name), raw)], writes: writes), next)
        }
    }

    func databases(owner: String?) throws -> [DatabaseRecord] {
        let names = try members(owner.map(Key.ownerDatabases) ?? Key.databases)
        return try getMany(DatabaseRecord.self, names.map(Key.database))
    }

    func transition(_ name: String, _ event: DatabaseLifecycle.Event, conditions: [CatalogCondition]) throws -> Transition? {
        let extra: [Guard] = conditions.map {
            switch $0 {
            case .snapshotUnchanged(let db, let snap, let raw): return .value(Key.snapshot(db, snap), raw)
            }
        }
        return try optimistic("database \(name)") { () throws -> (Transaction, Transition)? in
            guard let (d, raw) = try getRaw(DatabaseRecord.self, Key.database(name)) else { return nil }
            var t = Transaction(guards: [.value(Key.database(name), raw)] + extra)
            var removed: [SnapshotRecord] = []
            switch DatabaseLifecycle.decide(d, event) {
            case .refuse(let refusal): throw refusal
            case .ignore: return (t, Transition(record: d, actions: [], applied: false))
            case .commit(var next, let effects, let actions):
                next?.stampPhase(since: d)
                // The operation this ends goes into the database's history, in this transaction.
                t.writes += OperationHistory.record(before: d, after: &next, event: event, effects: effects)
                // Teams (#27): quotas of a snapshot or wake, decided in this transaction; state intervals.
                t.guards += try quotaGuards(for: d, event, next: next)
                if let e = UsageLog.transitionEvent(before: d, after: next, effects: effects) { t.writes.append(e) }
                // A fresh version per route write: routers tell a route read before a fence from one
                // after it. The record carries it, so a concurrent transition's guard fails.
                var routeVersion = 0
                if effects.contains(where: { if case .setRoute = $0 { return true }; return false }) {
                    routeVersion = try backend.increment(RouteContract.routeVersionCounter)
                    next?.routeVersion = routeVersion
                }
                if let next { t.writes.append(.set(Key.database(name), Self.encode(next))) }
                t.writes += Self.indexWrites(name, before: d, after: next)
                for e in effects {
                    switch e {
                    case .setRoute(var route):
                        route.version = routeVersion
                        let fields = route.fields.map { RedisWrite.HashField($0.0, $0.1) } + [.init("project", d.project), .init("owner", d.owner)]
                        t.writes += [.delete([RouteContract.routeKey(name)]), .hashSet(RouteContract.routeKey(name), fields)]
                        t.writes += route.fence != nil ? [.setAdd(RouteContract.fences, name)] : Self.endFence(name)
                        t.publish = [name]
                    case .removeRoute:
                        t.writes.append(.delete([RouteContract.routeKey(name)]))
                        t.writes += Self.endFence(name)
                        t.publish = [name]
                    case .removeRecord:
                        t.writes += [.delete([Key.database(name), OperationHistory.key(name), OperationHistory.legacyKey(name)]), .setRemove(Key.databases, name),
                                     .setRemove(Key.ownerDatabases(d.owner), name), .setRemove(Key.projectDatabases(d.project), name)]
                        if let port = d.backendPort { t.writes.append(.hashDeleteIfEquals(Key.ports, field: String(port), value: name)) }
                        removed += try releaseSnapshots(of: d, into: &t)
                    case .addSnapshot(let snap):
                        let existing = try members(Key.databaseSnapshots(name))
                        if existing.contains(snap) { throw CatalogRefusal.snapshotExists(database: name, snapshot: snap) }
                        guard existing.count < maxSnapshotsPerDatabase else {
                            throw CatalogRefusal.tooManySnapshots(database: name, count: existing.count)
                        }
                        let record = SnapshotRecord(database: name, name: snap, owner: d.owner, project: d.project, generation: d.generation)
                        t.guards += [.value(Key.snapshot(name, snap), nil), .cardinality(Key.databaseSnapshots(name), existing.count)]
                        t.writes += [.set(Key.snapshot(name, snap), Self.encode(record)), .setAdd(Key.databaseSnapshots(name), snap)]
                    case .finishSnapshot(let snap, let outcome, let reason):
                        guard let (cur, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(name, snap)) else { continue }
                        var done = cur
                        done.state = outcome == nil ? .failed : .ready
                        done.reason = reason
                        done.method = outcome?.method; done.sizeBytes = outcome?.sizeBytes; done.unavailableSeconds = outcome?.unavailableSeconds
                        t.guards.append(.value(Key.snapshot(name, snap), sraw))
                        t.writes.append(.set(Key.snapshot(name, snap), Self.encode(done)))
                    }
                }
                return (t, Transition(record: next, actions: actions, removedSnapshots: removed))
            }
        }
    }

    /// The writes that end a route's fence, if it had one.
    static func endFence(_ name: String) -> [RedisWrite] {
        [.setRemove(RouteContract.fences, name), .delete([RouteContract.fenceAcksKey(name)])]
    }

    /// When a database goes: its snapshots no branch uses are removed, the others are kept (marked
    /// `database_deleted`) for their branches; its own use of the snapshot it was branched from
    /// ends, and that snapshot goes too if its database is gone and nothing else uses it.
    private func releaseSnapshots(of d: DatabaseRecord, into t: inout Transaction) throws -> [SnapshotRecord] {
        var removed: [SnapshotRecord] = []
        for snap in try members(Key.databaseSnapshots(d.name)) {
            guard let (s, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(d.name, snap)) else { continue }
            let users = try members(Key.snapshotUsers(d.name, snap)).filter { $0 != d.name }
            t.guards += [.value(Key.snapshot(d.name, snap), sraw), .cardinality(Key.snapshotUsers(d.name, snap), users.count)]
            if users.isEmpty {
                t.writes.append(.delete([Key.snapshot(d.name, snap), Key.snapshotUsers(d.name, snap)]))
                removed.append(s)
            } else {
                var kept = s
                kept.databaseDeleted = true
                t.writes.append(.set(Key.snapshot(d.name, snap), Self.encode(kept)))
            }
        }
        t.writes.append(.delete([Key.databaseSnapshots(d.name)]))
        if let base = d.base, let (db, snap) = SnapshotRecord.parse(base) {
            t.writes.append(.setRemove(Key.snapshotUsers(db, snap), d.name))
            if let (s, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(db, snap)), s.databaseDeleted == true {
                let others = try members(Key.snapshotUsers(db, snap)).filter { $0 != d.name }
                t.guards += [.value(Key.snapshot(db, snap), sraw), .cardinality(Key.snapshotUsers(db, snap), others.count + 1)]
                if others.isEmpty {
                    t.writes.append(.delete([Key.snapshot(db, snap), Key.snapshotUsers(db, snap)]))
                    removed.append(s)
                }
            }
        }
        return removed
    }
}
