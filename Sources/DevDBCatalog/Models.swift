import DevDBCore
import Foundation

/// A project: where its dump lives and which Postgres major it needs.
public struct Project: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        case seeding, ready, failed
        /// Accepted for deletion: its seeds are cancelled and its generations removed.
        case deleting
    }
    public var name: String
    public var postgresMajor: Int
    public var dumpUrl: String
    public var state: State
    public var reason: String?
    public var createdAt: Date
    /// SQL run once per generation after the restore and ANALYZE, before the snapshot (masking).
    public var afterRestoreSql: String?
    /// Start a new generation when the dump changes (checked every --refresh-check-interval).
    public var refreshOnChange: Bool?
    /// A five-field cron schedule (UTC) of refreshes, whether the dump changed or not.
    public var refreshSchedule: String?
    /// Ready generations kept besides those databases and snapshots use (default 2).
    public var keepGenerations: Int?
    /// What the dump looked like when the newest generation started (ETag, Last-Modified, size).
    public var dumpFingerprint: String?
    /// When the schedule last started a refresh.
    public var lastScheduledRefresh: Date?

    public static let defaultKeepGenerations = 2
    /// The most SQL `after_restore_sql` may hold.
    public static let maxAfterRestoreSQLBytes = 256 * 1024

    public init(name: String, postgresMajor: Int, dumpUrl: String, state: State = .seeding, reason: String? = nil, createdAt: Date = Date()) {
        self.name = name; self.postgresMajor = postgresMajor; self.dumpUrl = dumpUrl
        self.state = state; self.reason = reason; self.createdAt = createdAt
    }
}

/// A restored, stopped copy of a project's dump that databases are cloned from.
public struct Generation: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable { case fetching, restoring, ready, failed }
    public var project: String
    public var number: Int
    public var state: State
    public var reason: String?
    /// What the restore is doing now: fetching, initdb, restoring, analyzing, stopping.
    public var phase: String?
    /// When the current step began (the phase's text before a ":"; set by the catalog).
    public var phaseStartedAt: Date?
    public var bytesFetched: Int64
    public var createdAt: Date
    public var readyAt: Date?
    public var restoreSeconds: Double?
    /// The PostgreSQL major this generation is restored into and its databases run (nil: 15, from
    /// before majors were recorded). Decided when its seed starts, from the project and the dump.
    public var postgresMajor: Int?
    /// The dump's format as read from its bytes (custom, tar, directory-tar, plain, plain-gzip, plain-zstd).
    public var dumpFormat: String?

    public var major: Int { postgresMajor ?? 15 }

    public init(project: String, number: Int, state: State = .fetching, createdAt: Date = Date()) {
        self.project = project; self.number = number; self.state = state
        self.bytesFetched = 0; self.createdAt = createdAt
    }
}

/// One engineer's database instance.
public struct DatabaseRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable, CaseIterable {
        case provisioning, restoring, cloning, starting, ready, failed, deleting
        /// Made and once ready, but the platform reports it is not serving now (reason says why);
        /// the reconcile loop moves it back to ready when it is.
        case unavailable
        /// Briefly stopped while a snapshot of it is taken; ready again right after.
        case snapshotting
        /// Idle: being stopped, stopped (costs nothing but its disk), being started again.
        case hibernating, hibernated, waking

        /// States in which work is in flight (an operation runs or is about to be resumed).
        public var isTransitional: Bool {
            switch self {
            case .provisioning, .restoring, .cloning, .starting, .deleting, .snapshotting, .hibernating, .waking: return true
            case .ready, .failed, .unavailable, .hibernated: return false
            }
        }
    }
    /// The work in flight: what it is and a fresh id per accepted operation, so an outcome
    /// reported for an operation that is no longer current (a retry, a stale job) is ignored.
    public struct Operation: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable { case create, reset, delete, snapshot, stop, start }
        public var kind: Kind
        public var id: String
        /// For resets: to the project's newest generation instead of the database's own.
        public var latest: Bool?
        /// For snapshots: the snapshot's name. For resets: the snapshot to go back to, `DB@SNAP`.
        public var target: String?
        /// A snapshot of a sleeping database: copied as it is, and it stays asleep.
        public var asleep: Bool?
        /// A stop the hibernator asked for: the route carries a fence (this operation's id) and the
        /// database is stopped only once every router confirms it has no session on it.
        public var idle: Bool?
        /// When it was accepted (stamped by the catalog; nil on records from before it was kept).
        public var startedAt: Date?
        public init(kind: Kind, id: String, latest: Bool? = nil, target: String? = nil, asleep: Bool? = nil, idle: Bool? = nil) {
            self.kind = kind; self.id = id; self.latest = latest; self.target = target; self.asleep = asleep; self.idle = idle
        }
    }
    public var name: String
    public var project: String
    public var owner: String
    public var state: State
    /// The operation in flight (nil when the state is ready, unavailable or failed).
    public var operation: Operation?
    /// A delete accepted while a create or reset ran: it runs when that ends.
    public var deleteQueued: Bool?
    /// For a branch: the snapshot it was made from, `DB@SNAP`; a plain reset goes back to it.
    public var base: String?
    /// Made from its generation's schema without rows (`--schema-only`); resets go back to that.
    public var schemaOnly: Bool?
    /// Seconds without a session before it hibernates: nil the API's default, 0 never.
    public var hibernateAfterSeconds: Double?
    /// When it last became ready (made, reset, woken): idle time counts from here at least.
    public var readyAt: Date?
    public var hibernatedAt: Date?
    /// A wake asked for while it was being stopped: it starts again once stopped.
    public var wakeQueued: Bool?
    /// The version of the route this record last wrote (`devdb:route-version`): kept in the
    /// record so two transitions that write the route conflict like any two writes of it.
    public var routeVersion: Int?
    public var reason: String?
    public var phase: String?
    /// When the current state or step began (set by the catalog, for elapsed times).
    public var phaseStartedAt: Date?
    public var generation: Int?
    /// The PostgreSQL major it runs (its generation's; nil: 15, from before majors were recorded).
    public var postgresMajor: Int?
    /// Where the instance listens (the router's backend), set once a port is allocated.
    public var backendHost: String?
    public var backendPort: Int?
    public var user: String
    public var password: String
    public var database: String
    /// How the instance was made: `reflink` or `copy` (local), `snapshot` or `restore` (Kubernetes).
    public var cloneMethod: String?
    /// Something the user should know about how it was made, e.g. that it restored without a snapshot.
    public var note: String?
    public var createdAt: Date
    public var expiresAt: Date?

    public init(name: String, project: String, owner: String, user: String, password: String, database: String,
                createdAt: Date = Date(), expiresAt: Date? = nil) {
        self.name = name; self.project = project; self.owner = owner; self.state = .provisioning
        self.operation = Operation(kind: .create, id: Self.newOperationID())
        self.user = user; self.password = password; self.database = database
        self.createdAt = createdAt; self.expiresAt = expiresAt
    }
}

extension DatabaseRecord {
    public static func newOperationID() -> String {
        var rng = SystemRandomNumberGenerator()
        return String(UInt64.random(in: 0...UInt64.max, using: &rng), radix: 16)
    }
}

/// A saved state of one database: a stopped copy of its data directory (local) or a CSI
/// VolumeSnapshot of its volume (Kubernetes). Branches are databases made from one.
public struct SnapshotRecord: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable { case taking, ready, failed }
    public var database: String
    public var name: String
    public var owner: String
    public var project: String
    public var generation: Int?
    public var state: State
    public var reason: String?
    public var createdAt: Date
    public var sizeBytes: Int64?
    /// `reflink` or `copy` (local), `volumesnapshot` (Kubernetes).
    public var method: String?
    /// How long the database did not serve while the snapshot was taken.
    public var unavailableSeconds: Double?
    /// Its database was deleted; it stays while branches made from it exist.
    public var databaseDeleted: Bool?

    public init(database: String, name: String, owner: String, project: String, generation: Int?, createdAt: Date = Date()) {
        self.database = database; self.name = name; self.owner = owner; self.project = project; self.generation = generation
        self.state = .taking; self.createdAt = createdAt
    }

    /// `DB@SNAP`, how branches and resets name it.
    public var reference: String { "\(database)@\(name)" }

    /// Splits `DB@SNAP`.
    public static func parse(_ reference: String) -> (database: String, snapshot: String)? {
        let parts = reference.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else { return nil }
        return (String(parts[0]), String(parts[1]))
    }
}

/// What a provisioner reports of a snapshot it took.
public struct SnapshotOutcome: Sendable, Equatable {
    public var method: String
    public var sizeBytes: Int64?
    public var unavailableSeconds: Double
    public init(method: String, sizeBytes: Int64?, unavailableSeconds: Double) {
        self.method = method; self.sizeBytes = sizeBytes; self.unavailableSeconds = unavailableSeconds
    }
}

/// An API token's record. The token itself is never stored, only its SHA-256.
public struct TokenRecord: Codable, Sendable, Equatable {
    public var id: String
    public var user: String
    public var admin: Bool
    public var createdAt: Date
    public init(id: String, user: String, admin: Bool, createdAt: Date = Date()) {
        self.id = id; self.user = user; self.admin = admin; self.createdAt = createdAt
    }
}

public enum CatalogJSON {
    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys]
        return e
    }()
    public static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        d.dateDecodingStrategy = .iso8601
        return d
    }()
}


extension Generation {
    /// Stamps `phaseStartedAt` when the step changed from `old`'s.
    mutating func stampPhase(since old: Generation, now: Date = Date()) {
        if state != old.state || phaseStep(phase) != phaseStep(old.phase) || phaseStartedAt == nil { phaseStartedAt = now }
    }
}

extension DatabaseRecord {
    /// Stamps `phaseStartedAt` when the state or step changed from `old`'s.
    mutating func stampPhase(since old: DatabaseRecord, now: Date = Date()) {
        if state != old.state || phaseStep(phase) != phaseStep(old.phase) || phaseStartedAt == nil { phaseStartedAt = now }
    }
}
