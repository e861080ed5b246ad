import Foundation

/// One change of a database that usage is computed from: it went awake, asleep, off or away,
/// woke, had a snapshot taken, or its snapshots' bytes changed. Written in the same transaction
/// as the change (stream `devdb:usage`), so the intervals are exactly the catalog's.
public struct UsageEvent: Codable, Sendable, Equatable {
    /// `awake`: an instance runs (or starts); `asleep`: hibernated; `off`: failed or being deleted
    /// (no instance, data kept); `gone`: deleted.
    public enum Phase: String, Codable, Sendable { case awake, asleep, off, gone }
    public var time: Date
    public var database: String
    public var owner: String
    public var project: String
    /// The phase from now on (nil: unchanged).
    public var phase: Phase?
    public var wake = false
    public var snapshot = false
    /// Bytes of this database's snapshots added (or removed, negative).
    public var storageDelta: Int64 = 0

    public init(time: Date, database: String, owner: String, project: String, phase: Phase? = nil,
                wake: Bool = false, snapshot: Bool = false, storageDelta: Int64 = 0) {
        self.time = time; self.database = database; self.owner = owner; self.project = project
        self.phase = phase; self.wake = wake; self.snapshot = snapshot; self.storageDelta = storageDelta
    }

    public static func phase(of d: DatabaseRecord?) -> Phase {
        guard let d else { return .gone }
        if QuotaPolicy.isAwake(d) { return .awake }
        switch d.state {
        case .hibernated, .hibernating, .snapshotting: return .asleep
        default: return .off
        }
    }
}

/// Usage of one user or project over a period.
public struct UsageTotals: Codable, Sendable, Equatable {
    public var key: String
    public var awakeHours = 0.0
    public var asleepHours = 0.0
    public var storageGiBHours = 0.0
    public var snapshots = 0
    public var wakes = 0
    public init(key: String) { self.key = key }
}

/// The usage arithmetic: a pure function of the recorded events, the period and `now` (tests
/// inject both), so the numbers can be checked against a scripted scenario.
public enum UsageReport {
    public enum Grouping: String, Sendable { case user, project }

    /// Totals per user or project over [since, now]. Events before `since` only set the state
    /// each database was in when the period began. Sorted by key.
    public static func compute(_ events: [UsageEvent], since: Date, now: Date, by grouping: Grouping) -> [UsageTotals] {
        struct Running { var phase: UsageEvent.Phase; var bytes: Int64; var at: Date; var key: String }
        var dbs: [String: Running] = [:]
        var totals: [String: UsageTotals] = [:]
        func add(_ r: Running, until end: Date) {
            let from = max(r.at, since), to = min(end, now)
            guard to > from, r.phase != .gone else { return }
            let hours = to.timeIntervalSince(from) / 3600
            var t = totals[r.key] ?? UsageTotals(key: r.key)
            if r.phase == .awake { t.awakeHours += hours }
            if r.phase == .asleep { t.asleepHours += hours }
            t.storageGiBHours += Double(r.bytes) / Double(1 << 30) * hours
            totals[r.key] = t
        }
        for e in events.sorted(by: { $0.time < $1.time }) where e.time <= now {
            let key = grouping == .user ? e.owner : e.project
            var r = dbs[e.database] ?? Running(phase: .gone, bytes: 0, at: e.time, key: key)
            add(r, until: e.time)
            r.at = e.time
            r.key = key
            if let p = e.phase { r.phase = p }
            r.bytes = r.phase == .gone ? 0 : max(0, r.bytes + e.storageDelta)
            dbs[e.database] = r
            if e.time >= since && (e.wake || e.snapshot) {
                var t = totals[key] ?? UsageTotals(key: key)
                if e.wake { t.wakes += 1 }
                if e.snapshot { t.snapshots += 1 }
                totals[key] = t
            }
        }
        for r in dbs.values { add(r, until: now) }
        return totals.values.sorted { $0.key < $1.key }
    }
}

/// The usage event log: stream `devdb:usage` (trimmed to about `maxEvents`).
public enum UsageLog {
    public static let key = "devdb:usage"
    public static let maxEvents = 1_000_000

    static func xadd(_ e: UsageEvent) -> RedisWrite {
        .streamAdd(key, value: CatalogEngine.encode(e), maxLength: maxEvents, approximate: true)
    }

    /// The event of a new database (awake: it is being made).
    static func event(before: DatabaseRecord?, after d: DatabaseRecord, now: Date = Date()) -> RedisWrite {
        xadd(UsageEvent(time: now, database: d.name, owner: d.owner, project: d.project, phase: UsageEvent.phase(of: d)))
    }

    /// The event of a lifecycle transition, if it changes anything usage counts.
    static func transitionEvent(before d: DatabaseRecord, after next: DatabaseRecord?, effects: [DatabaseLifecycle.Effect], now: Date = Date()) -> RedisWrite? {
        let was = UsageEvent.phase(of: d), now_ = UsageEvent.phase(of: next)
        var e = UsageEvent(time: now, database: d.name, owner: d.owner, project: d.project, phase: was == now_ ? nil : now_)
        e.wake = d.state == .hibernated && next?.state == .waking
        for effect in effects {
            switch effect {
            case .addSnapshot: e.snapshot = true
            case .finishSnapshot(_, let outcome, _): e.storageDelta += outcome?.sizeBytes ?? 0
            default: break
            }
        }
        guard e.phase != nil || e.wake || e.snapshot || e.storageDelta != 0 else { return nil }
        return xadd(e)
    }

    /// A snapshot deleted on its own: its bytes stop counting.
    static func snapshotRemoved(_ s: SnapshotRecord, now: Date = Date()) -> RedisWrite {
        xadd(UsageEvent(time: now, database: s.database, owner: s.owner, project: s.project, storageDelta: -(s.sizeBytes ?? 0)))
    }
}

extension CatalogEngine {
    /// Every recorded usage event (of `owner` only, when given), oldest first.
    func usageEvents(owner: String? = nil) throws -> [UsageEvent] {
        var out: [UsageEvent] = []
        var start = "-"
        while true {
            let rows = try backend.streamRange(UsageLog.key, start: start, end: "+", count: 5000, reverse: false)
            for row in rows {
                guard let e = try? Self.decode(UsageEvent.self, row.value, key: UsageLog.key) else { continue }
                if owner == nil || e.owner == owner { out.append(e) }
            }
            guard rows.count == 5000, let last = rows.last else { break }
            start = "(" + last.id
        }
        return out
    }
}
