import DevDBAPIContract
import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import Hummingbird

/// /v1/databases: each caller's own databases (admins: everyone's).
struct DatabasesController {
    let plane: LifecycleRequests
    var catalog: any CatalogStore { plane.catalog }
    var config: APIConfiguration { plane.config }

    func addRoutes(to group: RouterGroup<APIRequestContext>) {
        group.get(use: list)
        group.post(use: create)
        group.get(":name", use: show)
        group.patch(":name", use: update)
        group.delete(":name", use: delete)
        group.post(":name/reset", use: reset)
        // Scale to zero by hand: stop (hibernate) and start (wake).
        group.post(":name/stop", use: stop)
        group.post(":name/start", use: start)
    }

    @Sendable func create(_ request: Request, context: APIRequestContext) async throws -> Response {
        let c = try context.requireCaller()
        let b = try await decodeBody(CreateDatabaseRequest.self, request)
        // A branch: from another database's snapshot, or from its state now.
        var source: DatabaseRecord?
        var base: String?
        if let from = b.from {
            let parts = from.split(separator: "@", omittingEmptySubsequences: false).map(String.init)
            guard parts.count <= 2, !parts[0].isEmpty, parts.count == 1 || !parts[1].isEmpty else {
                throw APIError.badRequest("invalid \"from\" \"\(from)\"", hint: "use NAME (its state now) or NAME@SNAPSHOT")
            }
            let origin = try await visibleDatabase(catalog, parts[0], c)
            source = origin
            if parts.count == 2 {
                guard let s = try await catalog.snapshot(origin.name, parts[1]) else {
                    throw APIError.notFound("snapshot \"\(parts[1])\" of \(origin.name)", hint: "run \"devdb db snapshots \(origin.name)\"")
                }
                guard s.state != .failed else { throw APIError.conflict("snapshot \(s.reference) failed: \(s.reason ?? "")", hint: "take another: devdb db snapshot \(origin.name)") }
                base = s.reference
            }
            if let p = b.project, p != origin.project {
                throw APIError.badRequest("a branch of \(origin.name) belongs to its project \(origin.project), not \(p)", hint: "leave out --project")
            }
        }
        if b.schemaOnly == true {
            guard b.from == nil else {
                throw APIError.badRequest("a branch copies its origin as it is: schema_only goes with project, not from", hint: "leave out --from, or --schema-only")
            }
            guard plane.provisioner.kind == "local" else {
                throw APIError.conflict("schema-only databases are not available with the \(plane.provisioner.kind) provisioner yet", hint: "create a database with data")
            }
        }
        guard let projectName = source?.project ?? b.project else {
            throw APIError.badRequest("say which project to copy (\"project\") or which database to branch from (\"from\")")
        }
        guard let project = try await catalog.project(projectName) else {
            throw APIError.notFound("project \"\(projectName)\"", hint: "run \"devdb project list\"")
        }
        let name = b.name ?? generatedName(user: c.user, project: project.name)
        try checkName(name, what: "database")
        var expires: Date?
        let ttl = try b.ttl.map { try checkTTL($0, max: config.maxTTLSeconds) }
        // #27: within the owner's quota (longest ttl; the counts are decided again in the create's transaction).
        if let s = try await quotaTTL(catalog, user: c.user, asked: ttl) { expires = Date().addingTimeInterval(s) }
        try await catalog.checkQuota(owner: c.user, adding: QuotaChange(databases: 1, awake: 1))
        AuditNote.name(name)
        var sleep: Double?
        if let text = b.hibernateAfter { sleep = try checkHibernateAfter(text) }
        if try await catalog.database(name) != nil {
            throw APIError.conflict("database \"\(name)\" already exists", hint: "choose another name; names are unique in the installation")
        }
        if let origin = source, base == nil {
            // From the state now: an implicit snapshot, taken first.
            let snap = implicitSnapshotName(for: name)
            _ = try await plane.request(origin.name, .snapshot(name: snap))
            base = "\(origin.name)@\(snap)"
        }
        var record = DatabaseRecord(name: name, project: project.name, owner: c.user, user: LocalProvisioner.appUser,
                                    password: TokenSecrets.randomHex(16), database: LocalProvisioner.appDatabase, expiresAt: expires)
        record.base = base
        record.schemaOnly = b.schemaOnly == true ? true : nil
        record.generation = source?.generation
        record.hibernateAfterSeconds = sleep
        do { try await catalog.createDatabase(record) } catch CatalogError.conflict(let m) {
            // Taken since the check above, or the project is being deleted: the catalog tells which.
            let taken = try await catalog.database(name) != nil
            throw APIError.conflict(m, hint: Hints.createConflict(nameTaken: taken))
        } catch CatalogError.notFound(let m) {
            throw APIError(.notFound, "not_found", m, hint: base == nil ? Hints.listProjects : Hints.listSnapshots(of: source?.name ?? ""))
        }
        if let op = record.operation { plane.submit(.database(name, op)) }
        return try jsonResponse(DatabaseView(record, config: config, secrets: true), status: .accepted)
    }

    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> Response {
        let c = try context.requireCaller()
        let q = request.uri.queryParameters
        // A filter that can match nothing is a mistake to say, not an empty list to show.
        if let s = q.get("state"), DatabaseRecord.State(rawValue: s) == nil {
            throw APIError.badRequest("unknown state \"\(s)\"", hint: "one of: " + DatabaseRecord.State.allCases.map(\.rawValue).joined(separator: ", "))
        }
        if let p = q.get("project"), try await catalog.project(p) == nil {
            throw APIError.notFound("project \"\(p)\"", hint: "run \"devdb project list\"")
        }
        let limit = try q.get("limit").map { text in
            guard let n = Int(text), (1...ItemList<DatabaseView>.maximumLimit).contains(n) else {
                throw APIError.badRequest("limit must be a number from 1 to \(ItemList<DatabaseView>.maximumLimit), not \"\(text)\"",
                                          hint: "ask for the next page with after=<the next field of this one>")
            }
            return n
        }
        // Non-admins see their own databases: their owner set is the index read, whatever the
        // owner filter says (someone else's name then finds nothing, as before).
        let owner = c.admin ? q.get("owner") : c.user
        let ownerFilter = c.admin ? nil : q.get("owner")
        let project = q.get("project"), state = q.get("state"), after = q.get("after")
        let page = try await catalog.databasePage(owner: owner, project: project, after: after, limit: limit) { d in
            (ownerFilter.map { d.owner == $0 } ?? true) && (state.map { d.state.rawValue == $0 } ?? true)
        }
        var newest: [String: Int] = [:]
        for p in Set(page.records.map(\.project)) { newest[p] = try await newestReady(p) }
        var list = ItemList(items: page.records.map { d in
            var view = DatabaseView(d, config: config, secrets: false)
            view.noteNewerData(d, newest: newest[d.project])
            return view
        })
        list.next = page.next
        return try jsonResponse(list)
    }

    @Sendable func show(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        var view = DatabaseView(d, config: config, secrets: true)
        view.noteNewerData(d, newest: try await newestReady(d.project))
        return try jsonResponse(view)
    }

    @Sendable func delete(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        // What happens to its snapshots: those branches use stay until the branches go.
        var deleted: [String] = [], kept: [KeptSnapshot] = []
        for s in try await catalog.snapshots(of: d.name) {
            let users = try await catalog.snapshotUsers(d.name, s.name)
            if users.isEmpty { deleted.append(s.name) } else { kept.append(KeptSnapshot(name: s.name, branches: users)) }
        }
        // Accepted now or after the create or reset that runs (deleteQueued); never dropped.
        guard let updated = try await plane.request(d.name, .delete)?.record else { throw APIError.notFound("database \"\(d.name)\"") }
        var view = DatabaseView(updated, config: config, secrets: false)
        view.snapshotsDeleted = deleted
        view.snapshotsKept = kept
        return try jsonResponse(view, status: .accepted)
    }

    @Sendable func reset(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        let b = try await decodeBody(ResetRequest.self, request, empty: ResetRequest())
        var conditions: [CatalogCondition] = []
        var to: String?
        if let snap = b.to {
            guard b.latest != true else { throw APIError.badRequest("reset goes either --to a snapshot or to the --latest generation, not both") }
            let read = try await catalog.snapshotAsRead(d.name, snap)
            guard let s = read.value, let raw = read.raw else {
                throw APIError.notFound("snapshot \"\(snap)\" of \(d.name)", hint: "run \"devdb db snapshots \(d.name)\"")
            }
            guard s.state == .ready else {
                throw APIError.conflict("snapshot \(s.reference) is \(s.state.rawValue)", hint: s.state == .taking ? "wait until it is ready" : "reset to another snapshot")
            }
            // The snapshot must still be there when the reset is accepted.
            conditions = [.snapshotUnchanged(database: d.name, snapshot: snap, raw: raw)]
            to = s.reference
        }
        if b.latest == true, d.generation != nil,
           let latest = try await catalog.generations(d.project).filter({ $0.state == .ready }).max(by: { $0.number < $1.number }),
           latest.major != (d.postgresMajor ?? 15) {
            throw APIError.conflict(DatabaseWorker.crossMajorReset(d, from: d.postgresMajor ?? 15, to: latest), hint: "devdb db create NEW --project \(d.project)")
        }
        guard let updated = try await plane.request(d.name, .reset(latest: b.latest ?? false, to: to), conditions: conditions)?.record else {
            throw APIError.notFound("database \"\(d.name)\"")
        }
        return try jsonResponse(DatabaseView(updated, config: config, secrets: true), status: .accepted)
    }

    @Sendable func update(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        let b = try await decodeBody(UpdateDatabaseRequest.self, request)
        guard b.ttl != nil || b.hibernateAfter != nil else {
            throw APIError.badRequest("nothing to change: give ttl or hibernate_after", hint: "e.g. {\"ttl\": \"8h\"}")
        }
        let ttl = try b.ttl.map { try checkTTL($0, max: config.maxTTLSeconds) }
        if let ttl { _ = try await quotaTTL(catalog, user: d.owner, asked: ttl) }  // #27
        let sleep = try b.hibernateAfter.map(checkHibernateAfter)
        guard let updated = try await catalog.updateDatabase(d.name, { r in
            if let ttl { r.expiresAt = Date().addingTimeInterval(ttl) }
            if let sleep { r.hibernateAfterSeconds = sleep }
        }) else { throw APIError.notFound("database \"\(d.name)\"") }
        return try jsonResponse(DatabaseView(updated, config: config, secrets: false))
    }

    @Sendable func stop(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        guard let updated = try await plane.request(d.name, .hibernate(now: Date()))?.record else { throw APIError.notFound("database \"\(d.name)\"") }
        return try jsonResponse(DatabaseView(updated, config: config, secrets: false), status: .accepted)
    }

    @Sendable func start(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        guard let updated = try await plane.request(d.name, .wake)?.record else { throw APIError.notFound("database \"\(d.name)\"") }
        return try jsonResponse(DatabaseView(updated, config: config, secrets: false), status: .accepted)
    }

    /// The project's newest ready generation.
    func newestReady(_ project: String) async throws -> Int? {
        try await catalog.generations(project).filter { $0.state == .ready }.map(\.number).max()
    }
}

/// /v1/databases/{name}/snapshots: a database's snapshots (its owner or admins).
struct SnapshotsController {
    let plane: LifecycleRequests
    var catalog: any CatalogStore { plane.catalog }

    func addRoutes(to group: RouterGroup<APIRequestContext>) {
        group.get(use: list)
        group.post(use: take)
        group.get(":snap", use: show)
        group.delete(":snap", use: delete)
    }

    @Sendable func take(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        let b = try await decodeBody(CreateSnapshotRequest.self, request, empty: CreateSnapshotRequest())
        let snap = b.name ?? timestampSnapshotName()
        try checkName(snap, what: "snapshot")
        AuditNote.name(snap)  // #27
        _ = try await plane.request(d.name, .snapshot(name: snap))
        guard let s = try await catalog.snapshot(d.name, snap) else { throw APIError.notFound("snapshot \"\(snap)\"") }
        return try jsonResponse(SnapshotView(s, branches: []), status: .accepted)
    }

    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        var items: [SnapshotView] = []
        for s in try await catalog.snapshots(of: d.name) { items.append(SnapshotView(s, branches: try await catalog.snapshotUsers(d.name, s.name))) }
        return try jsonResponse(ItemList(items: items))
    }

    @Sendable func show(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        let snap = try context.parameters.require("snap")
        guard let s = try await catalog.snapshot(d.name, snap) else {
            throw APIError.notFound("snapshot \"\(snap)\" of \(d.name)", hint: "run \"devdb db snapshots \(d.name)\"")
        }
        return try jsonResponse(SnapshotView(s, branches: try await catalog.snapshotUsers(d.name, snap)))
    }

    @Sendable func delete(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        let snap = try context.parameters.require("snap")
        guard let removed = try await catalog.deleteSnapshot(d.name, snap) else {
            throw APIError.notFound("snapshot \"\(snap)\" of \(d.name)", hint: "run \"devdb db snapshots \(d.name)\"")
        }
        await plane.removeSnapshotFiles([removed])
        return Response(status: .noContent)
    }
}

/// A database the caller may see: their own, or any for admins. Others' are "not found".
func visibleDatabase(_ catalog: any CatalogStore, _ name: String, _ c: Caller) async throws -> DatabaseRecord {
    guard let d = try await catalog.database(name), c.admin || d.owner == c.user else {
        throw APIError.notFound("database \"\(name)\"", hint: "run \"devdb db list\" to see your databases")
    }
    return d
}

func checkHibernateAfter(_ text: String) throws -> Double {
    guard let s = hibernateAfterSeconds(text) else {
        throw APIError.badRequest("invalid hibernate_after \"\(text)\"", hint: "use a duration such as 30m or 2h, or never")
    }
    return s
}
