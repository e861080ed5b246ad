import Foundation

/// Indexes over database records that let periodic passes and /metrics read what their work
/// needs instead of every record: the count per state, the set of ready databases and the
/// databases by expiry. Every transaction that writes a record writes their changes with it
/// (`indexWrites`), under the same guards, so they move exactly with the records; reconcile
/// rebuilds them when they differ (a catalog written before they existed).
extension CatalogEngine {
    /// The index changes from `before` to `after` (nil: absent) of database `name`.
    static func indexWrites(_ name: String, before: DatabaseRecord?, after: DatabaseRecord?) -> [RedisWrite] {
        var w: [RedisWrite] = []
        if (before == nil) != (after == nil) {
            w.append(after != nil ? .sortedSetAdd(Key.databasesByName, member: name, score: 0) : .sortedSetRemove(Key.databasesByName, name))
        }
        if before?.state != after?.state {
            if let b = before { w.append(.hashIncrement(Key.databaseStates, field: b.state.rawValue, by: -1)) }
            if let a = after { w.append(.hashIncrement(Key.databaseStates, field: a.state.rawValue, by: 1)) }
        }
        let wasReady = before?.state == .ready, isReady = after?.state == .ready
        if wasReady != isReady { w.append(isReady ? .setAdd(Key.readyDatabases, name) : .setRemove(Key.readyDatabases, name)) }
        if before?.expiresAt != after?.expiresAt {
            if let at = after?.expiresAt {
                w.append(.sortedSetAdd(Key.databaseExpiry, member: name, score: expiryScore(at)))
            } else {
                w.append(.sortedSetRemove(Key.databaseExpiry, name))
            }
        }
        return w
    }

    /// Whole seconds: records hold their dates as ISO 8601 seconds, so the score is what a
    /// record read back says.
    static func expiryScore(_ at: Date) -> Double { at.timeIntervalSince1970.rounded(.down) }

    func databaseStateCounts() throws -> [DatabaseRecord.State: Int] {
        var out: [DatabaseRecord.State: Int] = [:]
        for (field, value) in try backend.hash(Key.databaseStates) {
            if let state = DatabaseRecord.State(rawValue: field), let n = Int(value), n != 0 { out[state] = n }
        }
        return out
    }

    /// Records of the databases the ready index names (still ready when read).
    func readyDatabases() throws -> [DatabaseRecord] {
        try records(try members(Key.readyDatabases), decodedBy: readyDecoded).filter { $0.state == .ready }
    }

    /// Records of the databases whose expiry is at or before `now`.
    func expiredDatabases(now: Date) throws -> [DatabaseRecord] {
        let names = try backend.sortedSet(Key.databaseExpiry, maxScore: now.timeIntervalSince1970).map(\.member)
        return try records(names).filter { ($0.expiresAt ?? .distantFuture) <= now }
    }

    /// Records of `names` in their order (absent ones left out), read as `databasesAsRead` reads.
    private func records(_ names: [String], decodedBy cache: DecodedRecords? = nil) throws -> [DatabaseRecord] {
        let read = try databasesAsRead(names, decodedBy: cache)
        return names.compactMap { read[$0]?.value }
    }

    /// The indexes as they should be for these records.
    private struct Indexes: Equatable {
        var states: [String: Int] = [:]
        var ready: Set<String> = []
        var expiry: [String: Double] = [:]
        var names: Set<String> = []

        init(_ records: [DatabaseRecord]) {
            for d in records {
                names.insert(d.name)
                states[d.state.rawValue, default: 0] += 1
                if d.state == .ready { ready.insert(d.name) }
                if let at = d.expiresAt { expiry[d.name] = CatalogEngine.expiryScore(at) }
            }
        }

        init(states: [String: Int], ready: Set<String>, expiry: [String: Double], names: Set<String>) {
            self.states = states.filter { $0.value != 0 }; self.ready = ready; self.expiry = expiry; self.names = names
        }

        static func == (a: Indexes, b: Indexes) -> Bool {
            a.states == b.states && a.ready == b.ready && a.names == b.names && a.expiry.keys == b.expiry.keys
                && a.expiry.allSatisfy { abs($0.value - (b.expiry[$0.key] ?? .nan)) < 0.001 }
        }
    }

    private func storedIndexes() throws -> Indexes {
        let states = try backend.hash(Key.databaseStates).compactMapValues { Int($0) }
        let expiry = Dictionary(try backend.sortedSet(Key.databaseExpiry, maxScore: nil).map { ($0.member, $0.score) }) { a, _ in a }
        let names = Set(try backend.sortedSet(Key.databasesByName, maxScore: nil).map(\.member))
        return Indexes(states: states, ready: Set(try backend.setMembers(Key.readyDatabases)), expiry: expiry, names: names)
    }

    /// Rebuilds the indexes from the records when they differ from what `checking` (records read
    /// a moment ago; nil: read them now) implies. The rebuild is one transaction guarded by every
    /// record as read and the number of databases, so a change made meanwhile makes it read
    /// again. True when it rewrote them.
    func repairDatabaseIndexes(checking: [DatabaseRecord]?) throws -> Bool {
        if let checking, Indexes(checking) == (try storedIndexes()) { return false }
        return try optimistic("rebuilding the database indexes") { () throws -> (Transaction, Bool)? in
            let names = try members(Key.databases)
            var guards: [Guard] = [.cardinality(Key.databases, names.count)]
            var records: [DatabaseRecord] = []
            for (name, read) in try databasesAsRead(names) {
                guards.append(.value(Key.database(name), read.raw))
                if let d = read.value { records.append(d) }
            }
            let want = Indexes(records)
            if want == (try storedIndexes()) { return (Transaction(), false) }
            var t = Transaction(guards: guards, writes: [.delete([Key.databaseStates, Key.readyDatabases, Key.databaseExpiry, Key.databasesByName])])
            for (state, n) in want.states.sorted(by: { $0.key < $1.key }) { t.writes.append(.hashIncrement(Key.databaseStates, field: state, by: n)) }
            for name in want.ready.sorted() { t.writes.append(.setAdd(Key.readyDatabases, name)) }
            for name in want.names.sorted() { t.writes.append(.sortedSetAdd(Key.databasesByName, member: name, score: 0)) }
            for (name, at) in want.expiry.sorted(by: { $0.key < $1.key }) { t.writes.append(.sortedSetAdd(Key.databaseExpiry, member: name, score: at)) }
            return (t, true)
        } ?? false
    }
}
