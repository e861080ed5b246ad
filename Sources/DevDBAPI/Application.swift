import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import DevDBRedis
import Foundation
import Hummingbird
import Logging

/// Builds the API application; the `devdb-api` executable runs it.
public func buildApplication(_ config: APIConfiguration, logger: Logger) throws -> some ApplicationProtocol {
    let catalog = Catalog(redis: RedisPool(url: config.redis), maxSnapshotsPerDatabase: config.maxSnapshotsPerDatabase)
    let provisioner: any Provisioner
    switch config.provisioner {
    case "local":
        provisioner = try LocalProvisioner(dataDirectory: config.dataDirectory, catalog: catalog, fetcher: DumpFetcher(s3: config.s3, allowPrivateHosts: config.allowPrivateDumpHosts),
                                           portRange: config.portRange,
                                           postgres: try PostgresInstallations.discover(configured: config.postgresBinDirectories))
    case "kubernetes":
        let connection = try KubeConnection.resolve(kubeconfig: config.kubeconfig, context: config.kubeContext, namespace: config.namespace)
        logger.info("kubernetes provisioner", metadata: ["devdb.k8s.server": "\(connection.server)", "devdb.k8s.namespace": "\(connection.namespace)",
                                                         "devdb.k8s.credentials": "\(connection.source)",
                                                         "devdb.k8s.snapshot_class": "\(config.kubernetes.snapshotClass ?? "(none: restore per database)")"])
        var settings = config.kubernetes
        settings.allowPrivateDumpHosts = config.allowPrivateDumpHosts
        let kubernetes = KubernetesProvisioner(client: KubeClient(connection: connection), settings: settings) { name in
            try await catalog.run { try $0.project(name) }
        }
        provisioner = kubernetes
        Task {
            if let warning = await kubernetes.checkSnapshotClass() { logger.warning("\(warning)") }
        }
    default:
        throw APIError.badRequest("unknown provisioner \"\(config.provisioner)\"", hint: "use --provisioner local or kubernetes")
    }
    let plane = ControlPlane(config: config, catalog: catalog, provisioner: provisioner, logger: logger)
    try installAdminToken(config: config, catalog: catalog, logger: logger)

    let router = Router(context: BasicRequestContext.self)
    router.addMiddleware { ErrorMappingMiddleware(logger: logger) }
    addRoutes(router, plane: plane)
    return Application(
        router: router,
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "devdb-api"),
        services: [ProvisioningWorker(plane: plane), Reaper(plane: plane), Refresher(plane: plane), WakeListener(plane: plane)],
        logger: logger)
}

/// The admin token: the configured one, or a generated one written to `<data-dir>/admin-token`
/// (mode 0600). Only its hash goes to Redis; it is never logged.
func installAdminToken(config: APIConfiguration, catalog: Catalog, logger: Logger) throws {
    var token = config.adminToken
    let file = config.dataDirectory.appendingPathComponent("admin-token")
    if token == nil {
        if let existing = try? String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !existing.isEmpty {
            token = existing
        } else {
            let generated = "ddb_" + Catalog.randomHex(24)
            FileManager.default.createFile(atPath: file.path, contents: Data((generated + "\n").utf8), attributes: [.posixPermissions: 0o600])
            token = generated
            logger.notice("generated an admin token", metadata: ["devdb.file": "\(file.path)"])
        }
    }
    // A changed admin token replaces the old one: the old hash must stop working.
    try? catalog.revokeToken(id: "admin")
    try catalog.storeToken(hash: Catalog.sha256Hex(token!), TokenRecord(id: "admin", user: "admin", admin: true))
}

/// Turns catalog and unexpected errors into the API's JSON errors at one boundary.
struct ErrorMappingMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let e as APIError {
            throw e
        } catch let e as HTTPError {
            throw APIError(e.status, "http_error", e.body ?? "request failed")
        } catch let r as DatabaseLifecycle.Refusal {
            throw APIError.conflict(r.message, hint: r.hint)
        } catch let e as CatalogError {
            switch e {
            case .conflict(let m): throw APIError.conflict(m)
            case .notFound(let m): throw APIError(.notFound, "not_found", m)
            case .unavailable(let m): throw APIError.unavailable(m)
            case .corrupt(let m):
                logger.error("catalog corrupt", metadata: ["devdb.error": "\(m)"])
                throw APIError(.internalServerError, "internal", "the catalog has an unreadable entry", hint: "see the API log")
            }
        } catch {
            logger.error("request failed", metadata: ["devdb.path": "\(request.uri.path)", "devdb.error": "\(error)"])
            throw APIError(.internalServerError, "internal", "the request failed inside DevDB", hint: "see the API log")
        }
    }
}

struct Caller: Sendable {
    let user: String
    let admin: Bool
}

func addRoutes(_ router: Router<BasicRequestContext>, plane: ControlPlane) {
    let catalog = plane.catalog
    let config = plane.config

    @Sendable func caller(_ request: Request) async throws -> Caller {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else { throw APIError.unauthorized }
        let token = String(header.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces)
        guard let record = try await catalog.run({ try $0.token(plaintext: token) }) else { throw APIError.unauthorized }
        return Caller(user: record.user, admin: record.admin)
    }
    @Sendable func admin(_ request: Request) async throws -> Caller {
        let c = try await caller(request)
        guard c.admin else { throw APIError.forbidden }
        return c
    }
    @Sendable func body<T: Decodable>(_ type: T.Type, _ request: Request) async throws -> T {
        let buffer = try await request.body.collect(upTo: 1 << 20)
        let data = Data(buffer.readableBytesView)
        guard !data.isEmpty else {
            throw APIError.badRequest("the request has no body: this call takes a JSON object", hint: "see /openapi.yaml for its fields")
        }
        do { return try APIJSON.decoder.decode(T.self, from: data) } catch {
            throw APIError.badRequest(describeDecodingError(error), hint: "see /openapi.yaml for this call's fields")
        }
    }
    @Sendable func checkName(_ name: String, what: String) throws {
        if let problem = DatabaseName.problem(with: name) { throw APIError.badRequest("invalid \(what) name \"\(name)\": \(problem)") }
    }
    /// A database the caller may see: their own, or any for admins. Others' are "not found".
    @Sendable func visibleDatabase(_ name: String, _ c: Caller) async throws -> DatabaseRecord {
        guard let d = try await catalog.run({ try $0.database(name) }), c.admin || d.owner == c.user else {
            throw APIError.notFound("database \"\(name)\"", hint: "run \"devdb db list\" to see your databases")
        }
        return d
    }

    /// The project's newest ready generation.
    @Sendable func newestReady(_ project: String) async throws -> Int? {
        try await catalog.run { try $0.generations(project) }.filter { $0.state == .ready }.map(\.number).max()
    }

    router.get("/healthz") { _, _ in "ok\n" }
    router.get("/readyz") { _, _ -> Response in
        do {
            try await catalog.run { try $0.ping() }
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
        } catch {
            return Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "redis unavailable\n")))
        }
    }
    router.get("/openapi.yaml") { request, _ -> Response in
        let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml")!
        var headers = HTTPFields()
        headers[.contentType] = "application/yaml"
        // `servers` names the address the document was fetched from (behind a proxy: its host and scheme).
        var text = try String(contentsOf: url, encoding: .utf8)
        if let host = request.head.authority {
            let scheme = request.headers.first { $0.name.canonicalName == "x-forwarded-proto" }?.value ?? "http"
            text = text.replacingOccurrences(of: "  - url: \(openAPIDefaultServer)\n", with: "  - url: \(scheme)://\(host)\n")
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
    router.get("/metrics") { _, _ -> Response in
        var text = "# HELP devdb_api_databases Databases by state.\n# TYPE devdb_api_databases gauge\n"
        let dbs = (try? await catalog.run { try $0.databases() }) ?? []
        for state in DatabaseRecord.State.allCases {
            text += "devdb_api_databases{state=\"\(state.rawValue)\"} \(dbs.filter { $0.state == state }.count)\n"
        }
        text += "# HELP devdb_api_jobs_total Background jobs by outcome.\n# TYPE devdb_api_jobs_total counter\n"
        for (k, v) in plane.counters.withLock({ $0 }).sorted(by: { $0.key < $1.key }) { text += "devdb_api_jobs_total{job=\"\(k)\"} \(v)\n" }
        return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    // Projects (admins create and change; everyone may look).
    router.post("/v1/projects") { request, _ -> Response in
        _ = try await admin(request)
        let b = try await body(CreateProjectBody.self, request)
        try checkName(b.name, what: "project")
        // The major is the dump's own unless --postgres says otherwise (decided by the plane).
        var settings = Project(name: b.name, postgresMajor: b.postgres ?? 0, dumpUrl: b.dumpUrl)
        try applySettings(&settings, afterRestoreSql: b.afterRestoreSql, refreshOnChange: b.refreshOnChange,
                          refreshSchedule: b.refreshSchedule, keepGenerations: b.keepGenerations)
        let p: Project
        do { p = try await plane.createProject(settings, explicitMajor: b.postgres) } catch CatalogError.conflict(let m) {
            throw APIError.conflict(m, hint: "choose another name, or delete the project first")
        }
        return try jsonResponse(ProjectView(p, generations: try await catalog.run { try $0.generations(b.name) }, admin: true), status: .accepted)
    }
    router.patch("/v1/projects/:name") { request, context -> Response in
        _ = try await admin(request)
        let name = try context.parameters.require("name")
        let b = try await body(UpdateProjectBody.self, request)
        guard let p = try await catalog.run({ try $0.updateProject(name) { p in
            try applySettings(&p, afterRestoreSql: b.afterRestoreSql, refreshOnChange: b.refreshOnChange,
                              refreshSchedule: b.refreshSchedule, keepGenerations: b.keepGenerations)
        } }) else { throw APIError.notFound("project \"\(name)\"") }
        return try jsonResponse(ProjectView(p, generations: try await catalog.run { try $0.generations(name) }, admin: true))
    }
    router.get("/v1/projects") { request, _ -> Response in
        let c = try await caller(request)
        let projects = try await catalog.run { c in try c.projects().map { ($0, try c.generations($0.name)) } }
        return try jsonResponse(ListBody(items: projects.map { ProjectView($0.0, generations: $0.1, admin: c.admin) }))
    }
    router.get("/v1/projects/:name") { request, context -> Response in
        let c = try await caller(request)
        let name = try context.parameters.require("name")
        guard let p = try await catalog.run({ try $0.project(name) }) else { throw APIError.notFound("project \"\(name)\"") }
        return try jsonResponse(ProjectView(p, generations: try await catalog.run { try $0.generations(name) }, admin: c.admin))
    }
    router.delete("/v1/projects/:name") { request, context -> Response in
        _ = try await admin(request)
        try await plane.deleteProject(try context.parameters.require("name"))
        return Response(status: .noContent)
    }
    router.post("/v1/projects/:name/refresh") { request, context -> Response in
        _ = try await admin(request)
        let g = try await plane.refreshProject(try context.parameters.require("name"))
        return try jsonResponse(GenerationView(g), status: .accepted)
    }

    // Databases (owned by the token's user).
    router.post("/v1/databases") { request, _ -> Response in
        let c = try await caller(request)
        let b = try await body(CreateDatabaseBody.self, request)
        // A branch: from another database's snapshot, or from its state now.
        var source: DatabaseRecord?
        var base: String?
        if let from = b.from {
            let parts = from.split(separator: "@", omittingEmptySubsequences: false).map(String.init)
            guard parts.count <= 2, !parts[0].isEmpty, parts.count == 1 || !parts[1].isEmpty else {
                throw APIError.badRequest("invalid \"from\" \"\(from)\"", hint: "use NAME (its state now) or NAME@SNAPSHOT")
            }
            let origin = try await visibleDatabase(parts[0], c)
            source = origin
            if parts.count == 2 {
                guard let s = try await catalog.run({ try $0.snapshot(origin.name, parts[1]) }) else {
                    throw APIError.notFound("snapshot \"\(parts[1])\" of \(origin.name)", hint: "run \"devdb db snapshots \(origin.name)\"")
                }
                guard s.state != .failed else { throw APIError.conflict("snapshot \(s.reference) failed: \(s.reason ?? "")", hint: "take another: devdb db snapshot \(origin.name)") }
                base = s.reference
            }
            if let p = b.project, p != origin.project {
                throw APIError.badRequest("a branch of \(origin.name) belongs to its project \(origin.project), not \(p)", hint: "leave out --project")
            }
        }
        guard let projectName = source?.project ?? b.project else {
            throw APIError.badRequest("say which project to copy (\"project\") or which database to branch from (\"from\")")
        }
        guard let project = try await catalog.run({ try $0.project(projectName) }) else {
            throw APIError.notFound("project \"\(projectName)\"", hint: "run \"devdb project list\"")
        }
        let name = b.name ?? generatedName(user: c.user, project: project.name)
        try checkName(name, what: "database")
        var expires: Date?
        if let ttl = b.ttl { expires = Date().addingTimeInterval(try checkTTL(ttl, max: config.maxTTLSeconds)) }
        if try await catalog.run({ try $0.database(name) }) != nil {
            throw APIError.conflict("database \"\(name)\" already exists", hint: "choose another name; names are unique in the installation")
        }
        if let origin = source, base == nil {
            // From the state now: an implicit snapshot, taken first.
            let snap = implicitSnapshotName(for: name)
            _ = try await plane.request(origin.name, .snapshot(name: snap))
            base = "\(origin.name)@\(snap)"
        }
        var record = DatabaseRecord(name: name, project: project.name, owner: c.user, user: LocalProvisioner.appUser,
                                    password: Catalog.randomHex(16), database: LocalProvisioner.appDatabase, expiresAt: expires)
        record.base = base
        record.generation = source?.generation
        if let text = b.hibernateAfter {
            guard let seconds = hibernateAfterSeconds(text) else {
                throw APIError.badRequest("invalid hibernate_after \"\(text)\"", hint: "use a duration such as 30m or 2h, or never")
            }
            record.hibernateAfterSeconds = seconds
        }
        do { try await catalog.run { [record] in try $0.createDatabase(record) } } catch CatalogError.conflict(let m) {
            throw APIError.conflict(m, hint: m.hasPrefix("project") ? "wait until it is gone, then create it again" : "choose another name; names are unique in the installation")
        } catch CatalogError.notFound(let m) {
            throw APIError.notFound(m.replacingOccurrences(of: " does not exist", with: ""), hint: base == nil ? "run \"devdb project list\"" : "run \"devdb db snapshots \(source?.name ?? "")\"")
        }
        if let op = record.operation { plane.submit(.database(name, op)) }
        return try jsonResponse(DatabaseView(record, config: config, secrets: true), status: .accepted)
    }
    router.get("/v1/whoami") { request, _ -> Response in
        let c = try await caller(request)
        struct Me: Encodable { let user: String; let admin: Bool }
        return try jsonResponse(Me(user: c.user, admin: c.admin))
    }
    router.get("/v1/databases") { request, _ -> Response in
        let c = try await caller(request)
        let q = request.uri.queryParameters
        // A filter that can match nothing is a mistake to say, not an empty list to show.
        if let s = q.get("state"), DatabaseRecord.State(rawValue: s) == nil {
            throw APIError.badRequest("unknown state \"\(s)\"", hint: "one of: " + DatabaseRecord.State.allCases.map(\.rawValue).joined(separator: ", "))
        }
        if let p = q.get("project"), try await catalog.run({ try $0.project(p) }) == nil {
            throw APIError.notFound("project \"\(p)\"", hint: "run \"devdb project list\"")
        }
        var dbs = try await catalog.run { try $0.databases(owner: c.admin ? nil : c.user) }
        if let p = q.get("project") { dbs = dbs.filter { $0.project == p } }
        if let o = q.get("owner") { dbs = dbs.filter { $0.owner == o } }
        if let s = q.get("state") { dbs = dbs.filter { $0.state.rawValue == s } }
        var newest: [String: Int] = [:]
        for p in Set(dbs.map(\.project)) { newest[p] = try await newestReady(p) }
        return try jsonResponse(ListBody(items: dbs.map { d in
            var view = DatabaseView(d, config: config, secrets: false)
            view.noteNewerData(d, newest: newest[d.project])
            return view
        }))
    }
    router.get("/v1/databases/:name") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        var view = DatabaseView(d, config: config, secrets: true)
        view.noteNewerData(d, newest: try await newestReady(d.project))
        return try jsonResponse(view)
    }
    router.delete("/v1/databases/:name") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        // What happens to its snapshots: those branches use stay until the branches go.
        var deleted: [String] = [], kept: [KeptSnapshot] = []
        for s in try await catalog.run({ try $0.snapshots(of: d.name) }) {
            let users = try await catalog.run { try $0.snapshotUsers(d.name, s.name) }
            if users.isEmpty { deleted.append(s.name) } else { kept.append(KeptSnapshot(name: s.name, branches: users)) }
        }
        // Accepted now or after the create or reset that runs (deleteQueued); never dropped.
        guard let updated = try await plane.request(d.name, .delete) else { throw APIError.notFound("database \"\(d.name)\"") }
        var view = DatabaseView(updated, config: config, secrets: false)
        view.snapshotsDeleted = deleted
        view.snapshotsKept = kept
        return try jsonResponse(view, status: .accepted)
    }
    router.post("/v1/databases/:name/reset") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        let b = (try? await body(ResetBody.self, request)) ?? ResetBody(latest: false)
        var guards: [Catalog.Guard] = []
        var to: String?
        if let snap = b.to {
            guard b.latest != true else { throw APIError.badRequest("reset goes either --to a snapshot or to the --latest generation, not both") }
            guard let raw = try await catalog.run({ try $0.snapshotRaw(d.name, snap) }),
                  let s = try? CatalogJSON.decoder.decode(SnapshotRecord.self, from: Data(raw.utf8)) else {
                throw APIError.notFound("snapshot \"\(snap)\" of \(d.name)", hint: "run \"devdb db snapshots \(d.name)\"")
            }
            guard s.state == .ready else {
                throw APIError.conflict("snapshot \(s.reference) is \(s.state.rawValue)", hint: s.state == .taking ? "wait until it is ready" : "reset to another snapshot")
            }
            // The snapshot must still be there when the reset is accepted.
            guards = [.value(Catalog.Key.snapshot(d.name, snap), raw)]
            to = s.reference
        }
        if b.latest == true, d.generation != nil,
           let latest = try await catalog.run({ try $0.generations(d.project) }).filter({ $0.state == .ready }).max(by: { $0.number < $1.number }),
           latest.major != (d.postgresMajor ?? 15) {
            throw APIError.conflict(ControlPlane.crossMajorReset(d, from: d.postgresMajor ?? 15, to: latest), hint: "devdb db create NEW --project \(d.project)")
        }
        guard let updated = try await plane.request(d.name, .reset(latest: b.latest ?? false, to: to), guards: guards) else {
            throw APIError.notFound("database \"\(d.name)\"")
        }
        return try jsonResponse(DatabaseView(updated, config: config, secrets: true), status: .accepted)
    }

    router.patch("/v1/databases/:name") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        let b = try await body(UpdateDatabaseBody.self, request)
        var ttl: Double?, sleep: Double?
        if let text = b.ttl {
            ttl = try checkTTL(text, max: config.maxTTLSeconds)
        }
        if let text = b.hibernateAfter {
            guard let s = hibernateAfterSeconds(text) else {
                throw APIError.badRequest("invalid hibernate_after \"\(text)\"", hint: "use a duration such as 30m or 2h, or never")
            }
            sleep = s
        }
        guard let updated = try await catalog.run({ [ttl, sleep] in try $0.updateDatabase(d.name) { r in
            if let ttl { r.expiresAt = Date().addingTimeInterval(ttl) }
            if let sleep { r.hibernateAfterSeconds = sleep }
        } }) else { throw APIError.notFound("database \"\(d.name)\"") }
        return try jsonResponse(DatabaseView(updated, config: config, secrets: false))
    }
    // Scale to zero by hand: stop (hibernate) and start (wake).
    router.post("/v1/databases/:name/stop") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        guard let updated = try await plane.request(d.name, .hibernate(now: Date())) else { throw APIError.notFound("database \"\(d.name)\"") }
        return try jsonResponse(DatabaseView(updated, config: config, secrets: false), status: .accepted)
    }
    router.post("/v1/databases/:name/start") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        guard let updated = try await plane.request(d.name, .wake) else { throw APIError.notFound("database \"\(d.name)\"") }
        return try jsonResponse(DatabaseView(updated, config: config, secrets: false), status: .accepted)
    }

    // Snapshots of a database (its owner or admins).
    router.post("/v1/databases/:name/snapshots") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        let b = (try? await body(CreateSnapshotBody.self, request)) ?? CreateSnapshotBody(name: nil)
        let snap = b.name ?? timestampSnapshotName()
        try checkName(snap, what: "snapshot")
        _ = try await plane.request(d.name, .snapshot(name: snap))
        guard let s = try await catalog.run({ try $0.snapshot(d.name, snap) }) else { throw APIError.notFound("snapshot \"\(snap)\"") }
        return try jsonResponse(SnapshotView(s, branches: []), status: .accepted)
    }
    router.get("/v1/databases/:name/snapshots") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        let items = try await catalog.run { cat in try cat.snapshots(of: d.name).map { SnapshotView($0, branches: try cat.snapshotUsers(d.name, $0.name)) } }
        return try jsonResponse(ListBody(items: items))
    }
    router.get("/v1/databases/:name/snapshots/:snap") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        let snap = try context.parameters.require("snap")
        guard let s = try await catalog.run({ try $0.snapshot(d.name, snap) }) else {
            throw APIError.notFound("snapshot \"\(snap)\" of \(d.name)", hint: "run \"devdb db snapshots \(d.name)\"")
        }
        return try jsonResponse(SnapshotView(s, branches: try await catalog.run { try $0.snapshotUsers(d.name, snap) }))
    }
    router.delete("/v1/databases/:name/snapshots/:snap") { request, context -> Response in
        let c = try await caller(request)
        let d = try await visibleDatabase(try context.parameters.require("name"), c)
        let snap = try context.parameters.require("snap")
        guard let removed = try await catalog.run({ try $0.deleteSnapshot(d.name, snap) }) else {
            throw APIError.notFound("snapshot \"\(snap)\" of \(d.name)", hint: "run \"devdb db snapshots \(d.name)\"")
        }
        await plane.removeSnapshotFiles([removed])
        return Response(status: .noContent)
    }

    // Tokens (admins only).
    router.post("/v1/tokens") { request, _ -> Response in
        _ = try await admin(request)
        let b = try await body(CreateTokenBody.self, request)
        try checkName(b.user, what: "user")
        // "admin" names the configured admin token; a plain user of that name would be confused with it.
        guard b.user != "admin" else {
            throw APIError.badRequest("\"admin\" is reserved for the configured admin token", hint: "choose another user name")
        }
        let (token, record) = try await catalog.run { try $0.createToken(user: b.user, admin: b.admin ?? false) }
        return try jsonResponse(TokenView(record, token: token), status: .created)
    }
    router.get("/v1/tokens") { request, _ -> Response in
        _ = try await admin(request)
        return try jsonResponse(ListBody(items: try await catalog.run { try $0.tokens() }.map { TokenView($0) }))
    }
    router.delete("/v1/tokens/:id") { request, context -> Response in
        _ = try await admin(request)
        let id = try context.parameters.require("id")
        guard id != "admin" else { throw APIError.badRequest("the admin token is configured, not revoked", hint: "change --admin-token-file and restart") }
        try await catalog.run { try $0.revokeToken(id: id) }
        return Response(status: .noContent)
    }
}

/// The `servers` entry of the document as written; served documents name the request's address.
let openAPIDefaultServer = "http://127.0.0.1:5000"

/// A ttl in seconds, within the installation's maximum (--max-ttl).
func checkTTL(_ text: String, max: Double) throws -> Double {
    guard let seconds = DurationText.seconds(text), seconds > 0 else {
        throw APIError.badRequest("invalid ttl \"\(text)\"", hint: "use a number and s, m, h or d, e.g. 8h")
    }
    guard seconds <= max else {
        throw APIError.badRequest("ttl \(text) is longer than this installation allows (\(DurationText.describe(max)))",
                                  hint: "ask for at most \(DurationText.describe(max)); extend it later with devdb db update NAME --ttl D")
    }
    return seconds
}

/// A JSON decoding failure in the client's words (field names as in the API), not Swift's.
func describeDecodingError(_ error: any Error) -> String {
    func path(_ keys: [any CodingKey]) -> String {
        keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
    }
    func snake(_ name: String) -> String {
        name.reduce(into: "") { out, c in
            if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) }
        }
    }
    guard let e = error as? DecodingError else { return "the request body is not valid JSON" }
    switch e {
    case .keyNotFound(let key, _): return "the request body has no field \"\(snake(key.stringValue))\""
    case .typeMismatch(let type, let ctx), .valueNotFound(let type, let ctx):
        let kind = type == String.self ? "a string" : type == Int.self || type == Double.self ? "a number" : type == Bool.self ? "true or false" : "an object"
        return "field \"\(snake(path(ctx.codingPath)))\" must be \(kind)"
    case .dataCorrupted(let ctx):
        return ctx.codingPath.isEmpty ? "the request body is not a JSON object" : "field \"\(snake(path(ctx.codingPath)))\" has an invalid value"
    @unknown default: return "the request body is not valid JSON for this call"
    }
}

/// Checks and applies project settings from a create or update body; empty text removes the
/// after-restore SQL or the schedule.
func applySettings(_ p: inout Project, afterRestoreSql: String?, refreshOnChange: Bool?, refreshSchedule: String?, keepGenerations: Int?) throws {
    if let sql = afterRestoreSql {
        guard sql.utf8.count <= Project.maxAfterRestoreSQLBytes else {
            throw APIError.badRequest("after_restore_sql has \(sql.utf8.count) bytes; at most \(Project.maxAfterRestoreSQLBytes) are allowed",
                                      hint: "keep masking SQL short: UPDATE statements with functions, not data")
        }
        p.afterRestoreSql = sql.isEmpty ? nil : sql
    }
    if let refreshOnChange { p.refreshOnChange = refreshOnChange }
    if let text = refreshSchedule {
        if text.isEmpty || text == "none" {
            p.refreshSchedule = nil
        } else {
            do { p.refreshSchedule = try CronSchedule(parsing: text).description } catch {
                throw APIError.badRequest("invalid refresh schedule: \(error.description)", hint: "five fields in UTC, e.g. \"0 3 * * *\" for 03:00 daily")
            }
            // Counted from now, not from when the project was made.
            p.lastScheduledRefresh = Date()
        }
    }
    if let k = keepGenerations {
        guard k >= 1 else { throw APIError.badRequest("keep_generations must be at least 1", hint: "the newest ready generation is always kept") }
        p.keepGenerations = k
    }
}

/// A snapshot's default name: the UTC time, `YYYYMMDD-HHMMSS`.
func timestampSnapshotName(_ date: Date = Date()) -> String {
    let f = DateFormatter()
    f.locale = Locale(identifier: "en_US_POSIX")
    f.timeZone = TimeZone(identifier: "UTC")
    f.dateFormat = "yyyyMMdd-HHmmss"
    return f.string(from: date)
}

/// The snapshot a branch "from now" is made from: `<time>-<branch>`, cut to a DNS label.
func implicitSnapshotName(for branch: String) -> String {
    var s = String("\(timestampSnapshotName())-\(branch)".prefix(63))
    while s.hasSuffix("-") { s.removeLast() }
    return s
}

/// `<user>-<project>-<4 hex>`, cut to a DNS label.
func generatedName(user: String, project: String) -> String {
    let base = "\(user)-\(project)".lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }
    return String(String(base).prefix(57)) + "-" + Catalog.randomHex(2)
}
