import Foundation

/// Snapshot records (taking and finishing a snapshot are database transitions).
extension CatalogEngine {
    func snapshot(_ db: String, _ name: String) throws -> SnapshotRecord? { try getJSON(SnapshotRecord.self, Key.snapshot(db, name)) }

    func snapshotAsRead(_ db: String, _ name: String) throws -> RecordAsRead<SnapshotRecord> {
        guard let (s, raw) = try getRaw(SnapshotRecord.self, Key.snapshot(db, name)) else { return RecordAsRead(value: nil, raw: nil) }
        return RecordAsRead(value: s, raw: raw)
    }

    func snapshots(of db: String) throws -> [SnapshotRecord] {
        try getMany(SnapshotRecord.self, try members(Key.databaseSnapshots(db)).map { Key.snapshot(db, $0) }).sorted { $0.createdAt < $1.createdAt }
    }

    func snapshotUsers(_ db: String, _ name: String) throws -> [String] { try members(Key.snapshotUsers(db, name)) }

    func deleteSnapshot(_ db: String, _ name: String) throws -> SnapshotRecord? {
        try optimistic("snapshot \(db)@\(name)") { () throws -> (Transaction, SnapshotRecord)? in
            guard let (s, sraw) = try getRaw(SnapshotRecord.self, Key.snapshot(db, name)) else { return nil }
            let d = try databaseAsRead(db)
            if s.state == .taking { throw CatalogRefusal.snapshotBeingTaken(database: db, snapshot: name) }
            let users = try members(Key.snapshotUsers(db, name))
            guard users.isEmpty else { throw CatalogRefusal.snapshotInUse(database: db, snapshot: name, branches: users) }
            if let v = d.value, v.operation?.target == s.reference { throw CatalogRefusal.snapshotBeingRestored(database: db, snapshot: name) }
            var t = Transaction()
            t.guards = [.value(Key.snapshot(db, name), sraw), .cardinality(Key.snapshotUsers(db, name), 0), .value(Key.database(db), d.raw)]
            t.writes = [.delete([Key.snapshot(db, name), Key.snapshotUsers(db, name)]), .setRemove(Key.databaseSnapshots(db), name),
                        UsageLog.snapshotRemoved(s)]  // Teams (#27): its bytes stop counting
            return (t, s)
        }
    }

    func removeSnapshotRecord(_ s: SnapshotRecord, ifUnchanged raw: String) throws -> Bool {
        try commit(Transaction(guards: [.value(Key.snapshot(s.database, s.name), raw), .cardinality(Key.snapshotUsers(s.database, s.name), 0)],
                               writes: [.delete([Key.snapshot(s.database, s.name), Key.snapshotUsers(s.database, s.name)]),
                                        .setRemove(Key.databaseSnapshots(s.database), s.name)]))
    }

    func allSnapshots() throws -> [(SnapshotRecord, String)] {
        // Keys from one SCAN, records by MGET (not a round trip per snapshot).
        let keys = try backend.scan("devdb:snapshot:*").filter { !$0.hasSuffix(":users") }.sorted()
        return try zip(keys, try backend.getMany(keys)).compactMap { key, text in
            try text.map { (try Self.decode(SnapshotRecord.self, $0, key: key), $0) }
        }
    }

    func failSnapshot(_ s: SnapshotRecord, raw: String, reason: String) throws -> Bool {
        var failed = s
        failed.state = .failed; failed.reason = reason
        return try commit(Transaction(guards: [.value(Key.snapshot(s.database, s.name), raw)],
                                      writes: [.set(Key.snapshot(s.database, s.name), Self.encode(failed))]))
    }
}
