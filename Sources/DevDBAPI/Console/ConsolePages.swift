import DevDBAPIContract
import DevDBCatalog
import DevDBCore
import Foundation
import Hummingbird

/// The console's read pages. Each reads through `ConsoleAPI` (the JSON controllers) and turns
/// the views into template data; nothing here decides who may see what.
extension WebConsole {
    static var states: [String] { DatabaseRecord.State.allCases.map(\.rawValue) }

    @Sendable func databasesPage(_ request: Request, context: APIRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        let project = q.get("project") ?? "", state = q.get("state") ?? ""
        let me = try context.requireCaller()
        let dbs = try await api.listDatabases(context, project: project, state: state, owner: me.user)
        let projects = try await api.call(ItemList<ProjectView>.self, api.projects.list, context, path: "/v1/projects").items
        let known = await stats.stats(for: dbs)
        var data: [String: Any] = [
            "databases": dbs.map { row($0).merging(Self.statsData(known[$0.name])) { a, _ in a } }, "any": !dbs.isEmpty, "filtered": !project.isEmpty || !state.isEmpty,
            "projects": projects.map { ["name": $0.name, "selected": $0.name == project] as [String: Any] },
            "states": Self.states.map { ["name": $0, "selected": $0 == state] as [String: Any] },
            "project": project, "state": state,
        ]
        if q.get("done") == "deleted" { data["notice"] = "Deleting the database." }
        return try render("databases", title: "My databases", data)
    }

    /// The small JSON the pages poll for live states: `ETag` over the body, 304 when unchanged.
    @Sendable func states(_ request: Request, context: APIRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        let me = try context.requireCaller()
        // The admin's table polls one page (`limit`, `after`), as the API pages it.
        let limit = q.get("limit").flatMap { Int($0) }.map { min(max($0, 1), Self.pageSize) }
        var dbs = try await api.listDatabases(context, project: q.get("project"), state: q.get("state"),
                                              owner: q.get("all") != nil || q.get("name") != nil ? nil : me.user,
                                              after: q.get("after"), limit: limit)
        if let name = q.get("name") { dbs = dbs.filter { $0.name == name } }
        let items = dbs.map { d in
            LiveState(name: d.name, state: d.state, label: stateLabel(d), since: iso(d.phaseStartedAt), sinceText: relative(d.phaseStartedAt),
                      reason: d.reason, expires: relative(d.expiresAt))
        }
        let body = try APIJSON.encoder.encode(ItemList(items: items))
        let etag = "\"" + String(DevDBCatalogHash.hex(body).prefix(32)) + "\""
        var headers = HTTPFields()
        headers[.eTag] = etag
        headers[.cacheControl] = "no-cache"
        if request.headers[.ifNoneMatch] == etag { return Response(status: .notModified, headers: headers) }
        headers[.contentType] = "application/json"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    @Sendable func databasePage(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await api.call(DatabaseView.self, api.databases.show, context)
        let snaps = try await api.call(ItemList<SnapshotView>.self, api.snapshots.list, context).items
        let operations = try await api.call(ItemList<OperationView>.self, DatabaseHistoryController(plane: api.plane).list, context).items
        var data = row(d).merging(Self.statsData(await stats.stats(for: [d])[d.name])) { a, _ in a }
        let password = d.password ?? ""
        let mask = String(repeating: "•", count: 12)
        func masked(_ s: String) -> String { password.isEmpty ? s : s.replacingOccurrences(of: password, with: mask) }
        let env = [("PGHOST", d.host), ("PGHOSTADDR", d.hostaddr ?? ""), ("PGPORT", String(d.port)), ("PGUSER", d.user),
                   ("PGPASSWORD", password), ("PGDATABASE", d.database), ("PGSSLMODE", "require")]
            .filter { !$0.1.isEmpty }.map { "export \($0.0)='\($0.1)'" }.joined(separator: "\n")
        let jdbc = "jdbc:postgresql://\(d.host):\(d.port)/\(d.database)?user=\(d.user)&password=\(password)&sslmode=require"
        data["connections"] = [
            ["id": "psql", "label": "psql", "text": d.psql ?? "", "shown": masked(d.psql ?? "")],
            ["id": "uri", "label": "URI", "text": d.uri ?? "", "shown": masked(d.uri ?? "")],
            ["id": "env", "label": "Environment (PG*)", "text": env, "shown": masked(env)],
            ["id": "jdbc", "label": "JDBC URL", "text": jdbc, "shown": masked(jdbc)],
        ]
        data["password"] = password
        data["user"] = d.user; data["database"] = d.database; data["port"] = d.port; data["hostaddr"] = d.hostaddr ?? ""
        data["awake"] = ["ready", "waking"].contains(d.state)
        data["asleep"] = ["hibernated", "hibernating"].contains(d.state)
        data["hint"] = d.hint ?? ""
        data["base"] = d.base ?? ""
        data["sleep"] = d.hibernateAfterSeconds.map { DurationText.describe($0) } ?? "never"
        data["snapshots"] = snaps.map { s in
            ["name": s.name, "state": s.state, "created": relative(s.createdAt), "createdISO": iso(s.createdAt),
             "size": s.sizeBytes.map(bytes) ?? "", "branches": s.branches.joined(separator: ", "),
             "ready": s.state == "ready", "snapReason": s.reason ?? "", "from": "\(d.name)@\(s.name)", "db": d.name] as [String: Any]
        }
        data["anySnapshots"] = !snaps.isEmpty
        data["readySnapshots"] = snaps.filter { $0.state == "ready" }.map { ["name": $0.name] }
        // What the record knows of its history: when it was made, its current step, its sleep.
        var timeline: [[String: Any]] = [["what": "created", "when": relative(d.createdAt), "iso": iso(d.createdAt)]]
        if let h = d.hibernatedAt { timeline.append(["what": "went to sleep", "when": relative(h), "iso": iso(h)]) }
        timeline.append(["what": "\(stateLabel(d)) (current)", "when": relative(d.phaseStartedAt), "iso": iso(d.phaseStartedAt),
                         "tlReason": d.reason ?? ""])
        if let e = d.expiresAt { timeline.append(["what": "expires", "when": relative(e), "iso": iso(e)]) }
        data["timeline"] = timeline
        data["operations"] = operations.map { o in
            ["label": o.target.map { "\(o.kind) \($0)" } ?? o.kind, "started": relative(o.startedAt), "startedISO": iso(o.startedAt),
             "took": Self.duration(o.seconds), "outcome": o.outcome, "opReason": o.reason ?? "", "opFailed": o.outcome != "succeeded"] as [String: Any]
        }
        data["anyOperations"] = !operations.isEmpty
        let notices = ["created": "Creating the database: its state below changes as it goes.", "reset": "Reset requested.",
                       "snapshot": "Snapshot requested.", "update": "Settings saved.", "start": "Waking it up.", "stop": "Putting it to sleep.",
                       "snapdeleted": "Snapshot deleted."]
        if let done = request.uri.queryParameters.get("done"), let n = notices[String(done)] { data["notice"] = n }
        return try render("database", title: d.name, data)
    }

    @Sendable func newDatabasePage(_ request: Request, context: APIRequestContext) async throws -> Response {
        let me = try context.requireCaller()
        let from = request.uri.queryParameters.get("from") ?? ""
        let projects = try await api.call(ItemList<ProjectView>.self, api.projects.list, context, path: "/v1/projects").items
        let dbs = try await api.listDatabases(context, owner: me.user)
        var sources: [[String: Any]] = []
        for d in dbs.prefix(50) {
            sources.append(["value": d.name, "label": "\(d.name) (its data now)", "selected": from == d.name])
            if from.hasPrefix(d.name + "@") {
                sources.append(["value": from, "label": "snapshot \(from)", "selected": true])
            }
        }
        let data: [String: Any] = [
            "projects": projects.filter { $0.state != "deleting" }.map { ["name": $0.name] }, "sources": sources, "from": from,
            "anySources": !sources.isEmpty,
        ]
        return try render("new", title: "New database", data)
    }

    @Sendable func projectsPage(_ request: Request, context: APIRequestContext) async throws -> Response {
        let me = try context.requireCaller()
        let projects = try await api.call(ItemList<ProjectView>.self, api.projects.list, context, path: "/v1/projects").items
        let data: [String: Any] = [
            "admin": me.admin, "any": !projects.isEmpty, "notice": request.uri.queryParameters.get("done") == "refresh" ? "Refresh started." : "",
            "projects": projects.map { p in
                ["name": p.name, "state": p.state, "postgres": p.postgres, "masks": p.masks ? "yes" : "no", "reason": p.reason ?? "",
                 "schedule": p.refreshSchedule ?? "none", "onChange": p.refreshOnChange ? "yes" : "no", "keep": p.keepGenerations,
                 "generations": p.generations.sorted { $0.number > $1.number }.map { g in
                     ["number": g.number, "state": g.state, "postgres": g.postgres.map { String($0) } ?? "", "size": g.bytesFetched > 0 ? bytes(g.bytesFetched) : "",
                      "restore": g.restoreSeconds.map { String(format: "%.1f s", $0) } ?? "", "genReason": g.reason ?? "",
                      "created": relative(g.createdAt), "createdISO": iso(g.createdAt)] as [String: Any]
                 }] as [String: Any]
            },
        ]
        return try render("projects", title: "Projects", data)
    }

    /// Usage over a period, as `GET /v1/usage` reports it (the caller's own; admins everyone's).
    @Sendable func usagePage(_ request: Request, context: APIRequestContext) async throws -> Response {
        let q = request.uri.queryParameters
        let since = ["24h", "7d", "30d"].contains(q.get("since") ?? "") ? q.get("since")! : "30d"
        let by = q.get("by") == "project" ? "project" : "user"
        let usage = try await api.call(UsageView.self, UsageController(plane: api.plane).show, context, path: "/v1/usage?since=\(since)&by=\(by)")
        func row(_ u: UsageItemView) -> [String: Any] {
            ["key": u.key, "awake": String(format: "%.1f", u.awakeHours), "asleep": String(format: "%.1f", u.asleepHours),
             "storage": String(format: "%.2f", u.storageGibHours), "snapshots": u.snapshots, "wakes": u.wakes]
        }
        let data: [String: Any] = [
            "by": by, "caption": "Usage by \(by), last \(since)",
            "periods": [("24h", "last 24 hours"), ("7d", "last 7 days"), ("30d", "last 30 days")].map { ["value": $0.0, "label": $0.1, "selected": $0.0 == since] as [String: Any] },
            "groupings": ["user", "project"].map { ["value": $0, "selected": $0 == by] as [String: Any] },
            "items": usage.items.map(row), "total": row(usage.total),
        ]
        return try render("usage", title: "Usage", data)
    }

    @Sendable func adminPage(_ request: Request, context: APIRequestContext) async throws -> Response {
        // The tokens list is admin-only in the API: the same refusal (403) guards this page.
        let tokens = try await api.call(ItemList<TokenView>.self, api.tokens.list, context, path: "/v1/tokens").items
        let projects = try await api.call(ItemList<ProjectView>.self, api.projects.list, context, path: "/v1/projects").items
        // One page of the list through the API's pagination (`after`): the page reads 100 records
        // however large the installation is. The counts come from the catalog's indexes.
        let q = request.uri.queryParameters
        let after = q.get("after")
        let number = max(1, q.get("page").flatMap { Int($0) } ?? 1)
        let path = "/v1/databases?limit=\(Self.pageSize)" + (after.map { "&after=" + api.escapeQuery($0) } ?? "")
        let list = try await api.call(ItemList<DatabaseView>.self, api.databases.list, context, path: path)
        let counts = try await installationCounts(projects: projects.map(\.name))
        let count = counts.byProject.values.reduce(0, +)
        let first = after == nil ? 1 : (number - 1) * Self.pageSize + 1
        let restores = projects.flatMap { p in p.generations.compactMap { g in g.restoreSeconds.map { ("\(p.name) #\(g.number)", $0) } } }
        let sizes = projects.flatMap { p in p.generations.filter { $0.bytesFetched > 0 }.map { ("\(p.name) #\($0.number)", Double($0.bytesFetched) / 1_048_576) } }
        var data: [String: Any] = [
            "tokens": tokens.map { ["id": $0.id, "user": $0.user, "admin": $0.admin ? "yes" : "no", "created": relative($0.createdAt),
                                    "revocable": $0.id != "admin"] as [String: Any] },
            "databases": list.items.map { row($0) }, "count": count, "page": number, "after": after ?? "",
            "from": list.items.isEmpty ? 0 : first, "to": first + list.items.count - 1,
            "previous": after == nil ? "" : "/admin",
            "next": list.next.map { "/admin?after=\(api.escapeQuery($0))&page=\(number + 1)" } ?? "",
            "chartStates": ConsoleCharts.bars(title: "Databases by state", Self.states.compactMap { s in counts.byState[s].map { (s, Double($0)) } }, unit: ""),
            "chartProjects": ConsoleCharts.bars(title: "Databases by project", counts.byProject.sorted { $0.key < $1.key }.map { ($0.key, Double($0.value)) }, unit: ""),
            "chartRestores": ConsoleCharts.bars(title: "Restore time by generation (seconds)", restores, unit: " s"),
            "chartSizes": ConsoleCharts.bars(title: "Dump size by generation (MiB)", sizes, unit: " MiB"),
        ]
        if let t = request.uri.queryParameters.get("new-token-user") { data["newTokenUser"] = String(t) }
        return try render("admin", title: "Admin", data)
    }

    /// Databases of the installation by state and by project, for the admin's charts: counted
    /// from the catalog's indexes, not by reading every record (the page stays fast at any size).
    /// Admins only: the caller has passed `requireAdmin` (the tokens list) before this runs.
    func installationCounts(projects: [String]) async throws -> (byState: [String: Int], byProject: [String: Int]) {
        var byProject: [String: Int] = [:]
        for p in projects {
            let n = try await catalog.projectDatabases(p).count
            if n > 0 { byProject[p] = n }
        }
        // The counts kept with every transition: one read, whatever the installation's size.
        var byState: [String: Int] = [:]
        for (state, n) in try await catalog.databaseStateCounts() where n > 0 { byState[state.rawValue] = n }
        return (byState, byProject)
    }

    // MARK: view helpers

    /// Size and sessions as template data: the numbers, or "—" and why (`ConsoleInstanceStats`).
    static func statsData(_ s: ConsoleInstanceStats.Stats?) -> [String: Any] {
        guard let s, s.why == nil, let size = s.sizeBytes, let sessions = s.sessions else {
            return ["statWhy": s?.why ?? "not known"]
        }
        return ["statSize": bytes(size), "statSessions": String(sessions)]
    }

    /// "0.4 s", "12 s", "3 min 5 s": how long an operation took.
    static func duration(_ seconds: Double) -> String {
        if seconds < 10 { return String(format: "%.1f s", seconds) }
        if seconds < 120 { return "\(Int(seconds.rounded())) s" }
        let s = Int(seconds.rounded())
        return s < 7200 ? "\(s / 60) min \(s % 60) s" : "\(s / 3600) h \(s % 3600 / 60) min"
    }

    /// Rows of a page of the admin's every-database table: its render time does not grow with
    /// the installation.
    static let pageSize = 100

    /// One database as template data (list rows and the top of its page).
    func row(_ d: DatabaseView) -> [String: Any] {
        ["name": d.name, "project": d.project, "owner": d.owner, "state": d.state, "stateLabel": stateLabel(d),
         "since": relative(d.phaseStartedAt), "sinceISO": iso(d.phaseStartedAt), "postgres": d.postgres.map { String($0) } ?? "",
         "host": d.host, "expires": d.expiresAt.map { relative($0) } ?? "never", "expiresISO": iso(d.expiresAt),
         "reason": d.reason ?? "", "pending": d.pending ?? "", "generation": d.generation.map { String($0) } ?? ""]
    }

    func stateLabel(_ d: DatabaseView) -> String {
        if let phase = d.phase, !phase.isEmpty, phase != d.state, d.state != "ready" { return "\(d.state): \(phase)" }
        return d.state
    }
}

/// One row of the live-state feed.
struct LiveState: Codable, Sendable {
    var name: String
    var state: String
    var label: String
    var since: String
    var sinceText: String
    var reason: String?
    var expires: String
}

/// The live feed's `ETag`: a digest of its body.
enum DevDBCatalogHash {
    static func hex(_ data: Data) -> String { TokenSecrets.sha256Hex(String(decoding: data, as: UTF8.self)) }
}

func iso(_ date: Date?) -> String {
    guard let date else { return "" }
    return date.formatted(.iso8601)
}

/// "3 min ago", "in 2 h": short, for tables (the exact time is in the element's datetime).
func relative(_ date: Date?, now: Date = Date()) -> String {
    guard let date else { return "" }
    let s = date.timeIntervalSince(now)
    let a = abs(s)
    let text = a < 60 ? "\(Int(a)) s" : a < 3600 ? "\(Int(a / 60)) min" : a < 172_800 ? "\(Int(a / 3600)) h" : "\(Int(a / 86400)) d"
    if a < 5 { return "just now" }
    return s < 0 ? "\(text) ago" : "in \(text)"
}

func bytes(_ n: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var v = Double(n), i = 0
    while v >= 1024, i < units.count - 1 { v /= 1024; i += 1 }
    return i == 0 ? "\(n) B" : String(format: "%.1f", v) + " " + units[i]
}
