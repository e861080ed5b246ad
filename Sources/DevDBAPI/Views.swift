import DevDBCatalog
import DevDBCore
import Foundation

/// A database as the API shows it. `password`, `uri` and `psql` only appear on show/create.
struct DatabaseView: Encodable {
    var name: String
    var project: String
    var owner: String
    var state: String
    /// `delete` when a delete was accepted while a create or reset runs (it runs after).
    var pending: String?
    /// For a branch: the snapshot it was made from, `DB@SNAP`.
    var base: String?
    /// Seconds without a session before it sleeps (nil: never), and since when it sleeps.
    var hibernateAfterSeconds: Double?
    var hibernatedAt: Date?
    /// The project has a newer ready generation than the one this database holds.
    var newerGeneration: Int?
    var hint: String?
    /// On delete: the database's snapshots that go with it, and those kept for branches.
    var snapshotsDeleted: [String]?
    var snapshotsKept: [KeptSnapshot]?
    var reason: String?
    var phase: String?
    var generation: Int?
    /// The PostgreSQL major it runs (its generation's); nil until it is made.
    var postgres: Int?
    var host: String
    /// Where the router is when the name does not resolve (one machine); nil with wildcard DNS.
    var hostaddr: String?
    var port: Int
    var user: String
    var password: String?
    var database: String
    var uri: String?
    var psql: String?
    var cloneMethod: String?
    var note: String?
    var createdAt: Date
    var expiresAt: Date?

    init(_ d: DatabaseRecord, config: APIConfiguration, secrets: Bool) {
        name = d.name; project = d.project; owner = d.owner; state = d.state.rawValue; reason = d.reason; phase = d.phase
        pending = d.deleteQueued == true ? "delete" : d.wakeQueued == true ? "wake" : nil
        base = d.base
        let after = d.hibernateAfterSeconds ?? config.hibernateAfterSeconds
        hibernateAfterSeconds = after > 0 ? after : nil
        hibernatedAt = [.hibernating, .hibernated, .waking].contains(d.state) ? d.hibernatedAt : nil
        generation = d.generation
        postgres = d.postgresMajor ?? (d.generation == nil ? nil : 15)
        host = "\(d.name).\(config.dbDomain)"
        hostaddr = config.routerHost.isEmpty ? nil : config.routerHost
        port = config.routerPort
        user = d.user; database = d.database; cloneMethod = d.cloneMethod; note = d.note; createdAt = d.createdAt; expiresAt = d.expiresAt
        if secrets {
            password = d.password
            // hostaddr lets libpq connect where the name does not resolve and still send it as SNI.
            uri = "postgresql://\(d.user):\(d.password)@\(host):\(port)/\(d.database)?sslmode=require" + (hostaddr.map { "&hostaddr=\($0)" } ?? "")
            // The password goes in the environment of the command, never in psql's argv (ps shows argv to every user).
            psql = "PGPASSWORD='\(d.password)' psql \"host=\(host)" + (hostaddr.map { " hostaddr=\($0)" } ?? "") + " port=\(port) user=\(d.user) dbname=\(d.database) sslmode=require\""
        }
    }
}

extension DatabaseView {
    /// Says when the project has newer data than this database holds (it stays on its generation
    /// until a reset --latest).
    mutating func noteNewerData(_ d: DatabaseRecord, newest: Int?) {
        guard let newest, let mine = d.generation, newest > mine, d.base == nil else { return }
        newerGeneration = newest
        hint = "newer data: run devdb db reset \(d.name) --latest"
    }
}

struct KeptSnapshot: Encodable {
    var name: String
    var branches: [String]
}

struct SnapshotView: Encodable {
    var database: String
    var name: String
    var state: String
    var reason: String?
    var generation: Int?
    var createdAt: Date
    var sizeBytes: Int64?
    var method: String?
    var unavailableSeconds: Double?
    /// Branches made from it (they keep it when its database is deleted).
    var branches: [String]
    init(_ s: SnapshotRecord, branches: [String]) {
        database = s.database; name = s.name; state = s.state.rawValue; reason = s.reason; generation = s.generation
        createdAt = s.createdAt; sizeBytes = s.sizeBytes; method = s.method; unavailableSeconds = s.unavailableSeconds
        self.branches = branches
    }
}

struct GenerationView: Encodable {
    var number: Int
    var state: String
    var reason: String?
    var phase: String?
    var bytesFetched: Int64
    var restoreSeconds: Double?
    /// The PostgreSQL major it restores into (decided when its seed starts).
    var postgres: Int?
    /// The dump's format, read from its bytes.
    var dumpFormat: String?
    var createdAt: Date
    init(_ g: Generation) {
        number = g.number; state = g.state.rawValue; reason = g.reason; phase = g.phase; bytesFetched = g.bytesFetched
        restoreSeconds = g.restoreSeconds; createdAt = g.createdAt
        postgres = g.postgresMajor ?? (g.state == .ready ? 15 : nil); dumpFormat = g.dumpFormat
    }
}

struct ProjectView: Encodable {
    var name: String
    var postgres: Int
    /// Where the dump lives (server paths, bucket names): admins only.
    var dumpUrl: String?
    var state: String
    var reason: String?
    var createdAt: Date
    var generations: [GenerationView]
    /// Whether generations are masked by after-restore SQL; the SQL itself only for admins.
    var masks: Bool
    var afterRestoreSql: String?
    var refreshOnChange: Bool
    var refreshSchedule: String?
    var nextScheduledRefresh: Date?
    var keepGenerations: Int
    init(_ p: Project, generations: [Generation], admin: Bool) {
        name = p.name; postgres = p.postgresMajor; dumpUrl = admin ? p.dumpUrl : nil; state = p.state.rawValue; reason = p.reason
        createdAt = p.createdAt; self.generations = generations.map(GenerationView.init)
        masks = p.afterRestoreSql?.isEmpty == false
        afterRestoreSql = admin ? p.afterRestoreSql : nil
        refreshOnChange = p.refreshOnChange ?? false
        refreshSchedule = p.refreshSchedule
        nextScheduledRefresh = p.refreshSchedule.flatMap { try? CronSchedule(parsing: $0) }?.next(after: p.lastScheduledRefresh ?? p.createdAt)
        keepGenerations = p.keepGenerations ?? Project.defaultKeepGenerations
    }
}

struct TokenView: Encodable {
    var id: String
    var user: String
    var admin: Bool
    var createdAt: Date
    /// Only when created.
    var token: String?
    init(_ t: TokenRecord, token: String? = nil) { id = t.id; user = t.user; admin = t.admin; createdAt = t.createdAt; self.token = token }
}

struct ListBody<T: Encodable>: Encodable { var items: [T] }

struct CreateProjectBody: Decodable {
    var name: String
    var postgres: Int?
    var dumpUrl: String
    var afterRestoreSql: String?
    var refreshOnChange: Bool?
    var refreshSchedule: String?
    var keepGenerations: Int?
}
/// Absent fields stay as they are; an empty `after_restore_sql` or `refresh_schedule` removes it.
struct UpdateProjectBody: Decodable {
    var afterRestoreSql: String?
    var refreshOnChange: Bool?
    var refreshSchedule: String?
    var keepGenerations: Int?
}
struct CreateDatabaseBody: Decodable {
    var name: String?
    /// Required unless `from` names the database to branch from.
    var project: String?
    var ttl: String?
    /// `NAME@SNAP` (a branch from that snapshot) or `NAME` (from NAME's state now).
    var from: String?
    /// "30m", "never" (or "0"); absent: the API's --hibernate-after.
    var hibernateAfter: String?
}
struct UpdateDatabaseBody: Decodable { var ttl: String?; var hibernateAfter: String? }

/// "never"/"0" → 0 (never sleeps); a duration → seconds; nil → invalid.
func hibernateAfterSeconds(_ text: String) -> Double? {
    if text == "never" || text == "0" { return 0 }
    return DurationText.seconds(text)
}
struct ResetBody: Decodable { var latest: Bool?; var to: String? }
struct CreateSnapshotBody: Decodable { var name: String? }
struct CreateTokenBody: Decodable { var user: String; var admin: Bool? }
