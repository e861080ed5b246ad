import DevDBCore
import Foundation

/// Limits an admin sets: per user, and a default for everyone. Nil means no limit (for a user:
/// the default's value applies).
public struct QuotaLimits: Codable, Sendable, Equatable {
    public var databases: Int?
    public var snapshots: Int?
    /// Bytes of snapshots (see `QuotaUse.storageBytes`).
    public var storageBytes: Int64?
    /// Databases awake at once.
    public var awake: Int?
    /// The longest ttl a database may have.
    public var maxTtlSeconds: Double?

    public init(databases: Int? = nil, snapshots: Int? = nil, storageBytes: Int64? = nil, awake: Int? = nil, maxTtlSeconds: Double? = nil) {
        self.databases = databases; self.snapshots = snapshots; self.storageBytes = storageBytes; self.awake = awake; self.maxTtlSeconds = maxTtlSeconds
    }

    /// The user's own limit where set, else the default's.
    public func over(_ defaults: QuotaLimits) -> QuotaLimits {
        QuotaLimits(databases: databases ?? defaults.databases, snapshots: snapshots ?? defaults.snapshots,
                    storageBytes: storageBytes ?? defaults.storageBytes, awake: awake ?? defaults.awake,
                    maxTtlSeconds: maxTtlSeconds ?? defaults.maxTtlSeconds)
    }

    public var isEmpty: Bool { self == QuotaLimits() }
}

/// What a user holds now, as the catalog knows it.
public struct QuotaUse: Codable, Sendable, Equatable {
    /// Databases not being deleted.
    public var databases = 0
    /// Snapshots of their databases (taking, ready or failed).
    public var snapshots = 0
    /// Sum of the recorded sizes of those snapshots (a snapshot being taken counts 0 until measured).
    public var storageBytes: Int64 = 0
    /// Databases with a running instance (or one starting): not hibernated, failed or deleting.
    public var awake = 0
    public init() {}
}

/// A create, branch, snapshot or wake refused because it would go over a limit (HTTP 403).
public struct QuotaRefusal: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Resource: String, Codable, Sendable { case databases, snapshots, storage, awake, ttl }
    public var user: String
    public var resource: Resource
    public var limit: Double
    public var use: Double
    /// What to delete (or stop) to make room, as commands.
    public var candidates: [String]

    public var description: String {
        func show(_ v: Double) -> String {
            switch resource {
            case .storage: return ByteCount.describe(Int64(v))
            case .ttl: return DurationText.describe(v)
            default: return String(Int(v))
            }
        }
        let what: String
        switch resource {
        case .databases: what = "databases"
        case .snapshots: what = "snapshots"
        case .storage: what = "snapshot storage"
        case .awake: what = "databases awake at once"
        case .ttl: return "quota: the longest ttl \(user) may give is \(show(limit)); asked for \(show(use))"
        }
        return "quota exceeded: \(user) has \(show(use)) of \(show(limit)) \(what)"
    }

    public var hint: String {
        switch resource {
        case .ttl: return "ask for a ttl of at most \(DurationText.describe(limit)), or ask an admin to raise it: devdb quota set USER --max-ttl D"
        case .awake:
            return (candidates.isEmpty ? "stop one of your databases" : "stop one: " + candidates.joined(separator: "; "))
                + ", or ask an admin to raise the limit (devdb quota show)"
        default:
            return (candidates.isEmpty ? "delete something you no longer need" : "delete one: " + candidates.joined(separator: "; "))
                + ", or ask an admin to raise the limit (devdb quota show)"
        }
    }
}

/// What a request adds, for the quota decision.
public struct QuotaChange: Sendable, Equatable {
    public var databases = 0
    public var snapshots = 0
    public var awake = 0
    public init(databases: Int = 0, snapshots: Int = 0, awake: Int = 0) {
        self.databases = databases; self.snapshots = snapshots; self.awake = awake
    }
    /// Any new database or snapshot grows storage, so a user at or over the storage limit gets neither.
    var growsStorage: Bool { databases > 0 || snapshots > 0 }
}

/// The quota decision: pure, so it is unit-tested; the catalog calls it inside the transaction
/// that makes the change, on counts the transaction's guards pin.
public enum QuotaPolicy {
    public static func check(user: String, limits: QuotaLimits, use: QuotaUse, adding change: QuotaChange,
                             candidates: (QuotaRefusal.Resource) -> [String] = { _ in [] }) -> QuotaRefusal? {
        func refuse(_ r: QuotaRefusal.Resource, _ limit: Double, _ use: Double) -> QuotaRefusal {
            QuotaRefusal(user: user, resource: r, limit: limit, use: use, candidates: candidates(r))
        }
        if change.databases > 0, let l = limits.databases, use.databases + change.databases > l { return refuse(.databases, Double(l), Double(use.databases)) }
        if change.snapshots > 0, let l = limits.snapshots, use.snapshots + change.snapshots > l { return refuse(.snapshots, Double(l), Double(use.snapshots)) }
        if change.growsStorage, let l = limits.storageBytes, use.storageBytes >= l { return refuse(.storage, Double(l), Double(use.storageBytes)) }
        if change.awake > 0, let l = limits.awake, use.awake + change.awake > l { return refuse(.awake, Double(l), Double(use.awake)) }
        return nil
    }

    /// A ttl within the user's longest (nil: fine).
    public static func checkTTL(user: String, limits: QuotaLimits, seconds: Double) -> QuotaRefusal? {
        guard let l = limits.maxTtlSeconds, seconds > l else { return nil }
        return QuotaRefusal(user: user, resource: .ttl, limit: l, use: seconds, candidates: [])
    }

    /// Whether a database in this state holds a running (or starting) instance.
    public static func isAwake(_ d: DatabaseRecord) -> Bool {
        switch d.state {
        case .hibernated, .hibernating, .failed, .deleting: return false
        case .snapshotting: return d.operation?.asleep != true
        default: return d.deleteQueued != true
        }
    }
}

/// Sizes as people read them: `512MiB`, `20GiB`; parses `20G`, `20GiB`, `500M`, `1T`, plain bytes.
public enum ByteCount {
    public static func parse(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased().replacingOccurrences(of: "IB", with: "").replacingOccurrences(of: "B", with: "")
        let units: [(String, Double)] = [("T", 1_099_511_627_776), ("G", 1_073_741_824), ("M", 1_048_576), ("K", 1024)]
        for (u, m) in units where t.hasSuffix(u) {
            guard let n = Double(t.dropLast()), n >= 0, n * m < 9e18 else { return nil }
            return Int64(n * m)
        }
        return Int64(t).flatMap { $0 >= 0 ? $0 : nil }
    }

    public static func describe(_ bytes: Int64) -> String {
        let units: [(String, Double)] = [("TiB", 1_099_511_627_776), ("GiB", 1_073_741_824), ("MiB", 1_048_576), ("KiB", 1024)]
        for (u, m) in units where Double(bytes) >= m {
            let v = Double(bytes) / m
            return v == v.rounded() ? "\(Int(v))\(u)" : String(format: "%.1f%@", v, u)
        }
        return "\(bytes)B"
    }
}

extension CatalogKey {
    public static let quotaDefault = "devdb:quota:default"
    public static func quota(_ user: String) -> String { "devdb:quota:user:\(user)" }
}

extension CatalogEngine {
    /// The default limits and the user's own (each empty when unset).
    func quotaLimits(user: String?) throws -> (defaults: QuotaLimits, own: QuotaLimits) {
        let keys = [Key.quotaDefault] + (user.map { [Key.quota($0)] } ?? [])
        let texts = try backend.getMany(keys)
        let d = try texts[0].map { try Self.decode(QuotaLimits.self, $0, key: keys[0]) } ?? QuotaLimits()
        let o = try (texts.count > 1 ? texts[1] : nil).map { try Self.decode(QuotaLimits.self, $0, key: keys[1]) } ?? QuotaLimits()
        return (d, o)
    }

    /// Sets (replaces) the limits of a user, or the default (user nil); empty limits remove the key.
    func setQuota(user: String?, _ limits: QuotaLimits) throws {
        let key = user.map(Key.quota) ?? Key.quotaDefault
        _ = try commit(Transaction(writes: [limits.isEmpty ? .delete([key]) : .set(key, Self.encode(limits))]))
    }

    /// Changes the stored limits of a user (or the default) from what they are now; returns them.
    /// Guarded, so two admins changing different fields at once both land.
    func updateQuota(user: String?, _ change: (inout QuotaLimits) -> Void) throws -> QuotaLimits {
        let key = user.map(Key.quota) ?? Key.quotaDefault
        return try optimistic("quota of \(user ?? "default")") { () throws -> (Transaction, QuotaLimits)? in
            let raw = try backend.get(key)
            var next = try raw.map { try Self.decode(QuotaLimits.self, $0, key: key) } ?? QuotaLimits()
            change(&next)
            return (Transaction(guards: [.value(key, raw)], writes: [next.isEmpty ? .delete([key]) : .set(key, Self.encode(next))]), next)
        } ?? QuotaLimits()
    }

    /// A user's use now, with guards that pin every count it was computed from (a transaction
    /// carrying them fails if any changed, and its caller reads and decides again) and the
    /// commands that would make room, per resource.
    func quotaUse(owner: String, pinning limits: QuotaLimits) throws
        -> (use: QuotaUse, guards: [Guard], candidates: [QuotaRefusal.Resource: [String]]) {
        var use = QuotaUse()
        var guards: [Guard] = []
        var candidates: [QuotaRefusal.Resource: [String]] = [:]
        let names = try members(Key.ownerDatabases(owner))
        guards.append(.cardinality(Key.ownerDatabases(owner), names.count))
        var records: [DatabaseRecord] = []
        let texts = try names.isEmpty ? [] : backend.getMany(names.map(Key.database))
        for (n, text) in zip(names, texts) {
            guard let raw = text else { continue }
            records.append(try Self.decode(DatabaseRecord.self, raw, key: Key.database(n)))
            // A state change of any of them (a wake, a delete) must make this decision again.
            if limits.awake != nil || limits.databases != nil { guards.append(.value(Key.database(n), raw)) }
        }
        let live = records.filter { $0.state != .deleting && $0.deleteQueued != true }.sorted { $0.createdAt < $1.createdAt }
        use.databases = live.count
        use.awake = records.filter(QuotaPolicy.isAwake).count
        candidates[.databases] = live.prefix(5).map { "devdb db delete \($0.name)" }
        candidates[.awake] = records.filter { QuotaPolicy.isAwake($0) && $0.state == .ready }.prefix(5).map { "devdb db stop \($0.name)" }
        if limits.snapshots != nil || limits.storageBytes != nil {
            var snaps: [SnapshotRecord] = []
            for d in records {
                let set = try members(Key.databaseSnapshots(d.name))
                guards.append(.cardinality(Key.databaseSnapshots(d.name), set.count))
                snaps += try getMany(SnapshotRecord.self, set.map { Key.snapshot(d.name, $0) })
            }
            use.snapshots = snaps.count
            use.storageBytes = snaps.reduce(0) { $0 + ($1.sizeBytes ?? 0) }
            candidates[.snapshots] = snaps.sorted { $0.createdAt < $1.createdAt }.prefix(5).map { "devdb db snapshot delete \($0.database) \($0.name)" }
            candidates[.storage] = snaps.sorted { ($0.sizeBytes ?? 0) > ($1.sizeBytes ?? 0) }.prefix(5).map { "devdb db snapshot delete \($0.database) \($0.name)" }
        }
        return (use, guards, candidates)
    }

    /// The guards a change needs to stay within `owner`'s limits; throws `QuotaRefusal` when it
    /// would go over. No reads beyond the limits when no limit applies to the change.
    func quotaGuards(owner: String, adding change: QuotaChange) throws -> [Guard] {
        let (defaults, own) = try quotaLimits(user: owner)
        let limits = own.over(defaults)
        let relevant = (change.databases > 0 && limits.databases != nil) || (change.snapshots > 0 && limits.snapshots != nil)
            || (change.growsStorage && limits.storageBytes != nil) || (change.awake > 0 && limits.awake != nil)
        guard relevant else { return [] }
        let (use, guards, candidates) = try quotaUse(owner: owner, pinning: limits)
        if let refusal = QuotaPolicy.check(user: owner, limits: limits, use: use, adding: change, candidates: { candidates[$0] ?? [] }) {
            throw refusal
        }
        // The limits themselves are pinned too: a concurrent `quota set` decides again.
        let pins = try backend.getMany([Key.quotaDefault, Key.quota(owner)])
        return guards + [.value(Key.quotaDefault, pins[0]), .value(Key.quota(owner), pins[1])]
    }

    /// The quota guards of a lifecycle event: a snapshot adds one, a wake of a sleeping database
    /// adds one awake (a wake of an awake one, or any other event, adds nothing).
    func quotaGuards(for d: DatabaseRecord, _ event: DatabaseLifecycle.Event, next: DatabaseRecord?) throws -> [Guard] {
        switch event {
        case .snapshot:
            return try quotaGuards(owner: d.owner, adding: QuotaChange(snapshots: 1))
        case .wake:
            guard let next, !QuotaPolicy.isAwake(d), QuotaPolicy.isAwake(next) else { return [] }
            return try quotaGuards(owner: d.owner, adding: QuotaChange(awake: 1))
        default:
            return []
        }
    }

    /// Throws `QuotaRefusal` if `change` would go over `owner`'s limits now: an early answer
    /// before work that would be wasted (an implicit snapshot); the create's transaction decides.
    func checkQuota(owner: String, adding change: QuotaChange) throws {
        _ = try quotaGuards(owner: owner, adding: change)
    }

    /// Marks a route's wake refused (field `wake_refused`: `<unix time> <reason>`) and tells the
    /// routers, if the route still exists.
    func setWakeRefusal(_ name: String, _ text: String) throws {
        var t = Transaction(guards: [.exists(RouteContract.routeKey(name))],
                            writes: [.hashSet(RouteContract.routeKey(name), [.init(RouteContract.wakeRefusedField, text)])])
        t.publish = [name]
        _ = try commit(t)
    }
}
