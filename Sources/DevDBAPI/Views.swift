import DevDBAPIContract
import DevDBCatalog
import DevDBCore
import Foundation

// The contract's views (DevDBAPIContract) built from catalog records: the one place the API
// decides what a caller sees.

extension DatabaseView {
    /// `secrets`: password, URI and psql line (show, create, reset).
    init(_ d: DatabaseRecord, config: APIConfiguration, secrets: Bool) {
        self.init()
        name = d.name; project = d.project; owner = d.owner; state = d.state.rawValue; reason = d.reason; phase = d.phase
        phaseStartedAt = d.phaseStartedAt ?? d.createdAt
        pending = d.deleteQueued == true ? "delete" : d.wakeQueued == true ? "wake" : nil
        base = d.base
        schemaOnly = d.schemaOnly == true ? true : nil
        let after = d.hibernateAfterSeconds ?? config.hibernateAfterSeconds
        hibernateAfterSeconds = after > 0 ? after : nil
        hibernatedAt = [.hibernating, .hibernated, .waking].contains(d.state) ? d.hibernatedAt : nil
        generation = d.generation
        postgres = d.postgresMajor ?? (d.generation == nil ? nil : 15)
        host = "\(d.name).\(config.dbDomain)"
        hostaddr = config.routerHost.isEmpty ? nil : config.routerHost
        port = config.routerPort
        user = d.user; database = d.database; cloneMethod = d.cloneMethod; note = d.note; createdAt = d.createdAt; expiresAt = d.expiresAt
        hint = Self.hint(for: d)
        if secrets {
            password = d.password
            // hostaddr lets libpq connect where the name does not resolve and still send it as SNI.
            uri = "postgresql://\(d.user):\(d.password)@\(host):\(port)/\(d.database)?sslmode=require" + (hostaddr.map { "&hostaddr=\($0)" } ?? "")
            // The password goes in the environment of the command, never in psql's argv (ps shows argv to every user).
            psql = "PGPASSWORD='\(d.password)' psql \"host=\(host)" + (hostaddr.map { " hostaddr=\($0)" } ?? "") + " port=\(port) user=\(d.user) dbname=\(d.database) sslmode=require\""
        }
    }

    /// What to do next, fitted to the state (nil where nothing is needed).
    static func hint(for d: DatabaseRecord) -> String? {
        switch d.state {
        case .failed:
            return d.operation == nil && d.reason?.hasPrefix("delete failed") == true
                ? "run devdb db delete \(d.name) again" : "devdb db reset \(d.name) tries again; devdb db delete \(d.name) removes it"
        case .unavailable: return "the platform reports it is not serving; it returns to ready by itself (devdb db show \(d.name))"
        case .deleting: return "it is being deleted"
        default: return nil
        }
    }

    /// Says when the project has newer data than this database holds (it stays on its generation
    /// until a reset --latest).
    mutating func noteNewerData(_ d: DatabaseRecord, newest: Int?) {
        guard let newest, let mine = d.generation, newest > mine, d.base == nil else { return }
        newerGeneration = newest
        hint = "newer data: run devdb db reset \(d.name) --latest"
    }
}

extension SnapshotView {
    init(_ s: SnapshotRecord, branches: [String]) {
        self.init()
        database = s.database; name = s.name; state = s.state.rawValue; reason = s.reason; generation = s.generation
        createdAt = s.createdAt; sizeBytes = s.sizeBytes; method = s.method; unavailableSeconds = s.unavailableSeconds
        self.branches = branches
    }
}

extension GenerationView {
    init(_ g: Generation) {
        self.init()
        number = g.number; state = g.state.rawValue; reason = g.reason; phase = g.phase; bytesFetched = g.bytesFetched
        phaseStartedAt = GenerationLifecycle.isSeeding(g) ? (g.phaseStartedAt ?? g.createdAt) : nil
        restoreSeconds = g.restoreSeconds; createdAt = g.createdAt
        postgres = g.postgresMajor ?? (g.state == .ready ? 15 : nil); dumpFormat = g.dumpFormat
    }
}

extension ProjectView {
    init(_ p: Project, generations: [Generation], admin: Bool) {
        self.init()
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

extension TokenView {
    init(_ t: TokenRecord, token: String? = nil) {
        self.init()
        id = t.id; user = t.user; admin = t.admin; createdAt = t.createdAt; self.token = token
    }
}

/// "never"/"0" → 0 (never sleeps); a duration → seconds; nil → invalid.
func hibernateAfterSeconds(_ text: String) -> Double? {
    if text == "never" || text == "0" { return 0 }
    return DurationText.seconds(text)
}

/// `GET /v1/admin/foreign-objects`: objects another installation made in the namespace (kept).
struct ForeignObjectsView: Encodable {
    /// One line per installation: `installation <id>: kind/name, ...`.
    var items: [String]
}

extension APIError {
    /// A catalog refusal in the user's words, with what to do (409).
    init(refusal: CatalogRefusal) {
        switch refusal {
        case .snapshotExists(let db, let snap):
            self = .conflict("database \"\(db)\" already has a snapshot \"\(snap)\"",
                             hint: "choose another name with --as, or delete it: devdb db snapshot delete \(db) \(snap)")
        case .tooManySnapshots(let db, let count):
            self = .conflict("database \"\(db)\" has \(count) snapshots, the most one database may have",
                             hint: "delete one first: devdb db snapshots \(db), then devdb db snapshot delete \(db) SNAP")
        case .snapshotBeingTaken(let db, let snap):
            self = .conflict("snapshot \(db)@\(snap) is being taken", hint: "wait until it is ready (devdb db snapshots \(db)), then delete it")
        case .snapshotInUse(let db, let snap, let branches):
            self = .conflict("snapshot \(db)@\(snap) is used by branch(es) \(branches.joined(separator: ", "))",
                             hint: "delete them first: " + branches.map { "devdb db delete \($0)" }.joined(separator: "; "))
        case .snapshotBeingRestored(let db, let snap):
            self = .conflict("database \(db) is being reset to snapshot \(snap)", hint: "wait until it is ready, then delete the snapshot")
        }
    }
}
