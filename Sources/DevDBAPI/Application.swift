import DevDBAPIContract
import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import DevDBRedis
import Foundation
import Hummingbird
import Logging

/// `devdb-api --uninstall`: deletes everything the Kubernetes provisioner made for this
/// installation (no Redis needed) and returns it, as `kind/name`.
public func uninstallKubernetes(_ config: APIConfiguration, logger: Logger) async throws -> [String] {
    guard config.provisioner == "kubernetes" else {
        throw APIError.badRequest("--uninstall removes what the Kubernetes provisioner made; with --provisioner local, stop the API and delete --data-dir instead")
    }
    let connection = try KubeConnection.resolve(kubeconfig: config.kubeconfig, context: config.kubeContext, namespace: config.namespace)
    logger.info("removing every object of this installation", metadata: ["devdb.k8s.namespace": "\(connection.namespace)",
                                                                        "devdb.k8s.instance": "\(config.kubernetes.instance)"])
    let kubernetes = KubernetesProvisioner(client: KubeClient(connection: connection), settings: config.kubernetes) { _ in nil }
    return try await kubernetes.removeEverything()
}

/// Builds the API application; the `devdb-api` executable runs it: the catalog in Redis and
/// the provisioner `config` names.
public func buildApplication(_ config: APIConfiguration, logger: Logger) async throws -> some ApplicationProtocol {
    let store = RedisCatalogStore(redis: RedisPool(url: config.redis), maxSnapshotsPerDatabase: config.maxSnapshotsPerDatabase)
    let provisioner = try await makeProvisioner(config, store: store, logger: logger)
    return try await buildApplication(config, store: store, provisioner: provisioner, logger: logger)
}

/// The provisioner `config` names, over `store`.
public func makeProvisioner(_ config: APIConfiguration, store: any CatalogStore, logger: Logger) async throws -> any Provisioner {
    let catalog = store
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
        // Every object carries this catalog's installation id: a reinstall over a lost catalog
        // (a new, empty one) deletes nothing an earlier installation made.
        let identity = try await catalog.installationIdentity()
        settings.installation = identity.id
        settings.adoptUnlabelled = identity.adoptsUnlabelled
        logger.info("installation", metadata: ["devdb.installation": "\(identity.id)", "devdb.adopts_unlabelled": "\(identity.adoptsUnlabelled)"])
        let kubernetes = KubernetesProvisioner(client: KubeClient(connection: connection), settings: settings) { name in
            try await catalog.project(name)
        }
        provisioner = kubernetes
        Task {
            if let warning = await kubernetes.checkSnapshotClass() { logger.warning("\(warning)") }
        }
    case "stand-in":
        logger.warning("stand-in provisioner: no PostgreSQL runs; for bench/scale only")
        provisioner = StandInProvisioner(host: config.standInBackend.host, port: config.standInBackend.port)
    default:
        throw APIError.badRequest("unknown provisioner \"\(config.provisioner)\"", hint: "use --provisioner local or kubernetes")
    }
    return provisioner
}

/// Builds the API application over a given catalog store and provisioner (tests pass a
/// `MemoryCatalogStore` and a fake provisioner and run it in process with `app.test(.router)`).
public func buildApplication(_ config: APIConfiguration, store: any CatalogStore, provisioner: any Provisioner,
                             logger: Logger) async throws -> some ApplicationProtocol {
    let catalog = store
    // Routers ask for wakes on a Redis channel; without Redis (an in-process test) the
    // hibernator still drains the set of wake requests.
    let controlPlane = ControlPlane(config: config, catalog: catalog, provisioner: provisioner, logger: logger,
                                    redis: (store as? RedisCatalogStore)?.redis.url)
    let plane = controlPlane.requests
    try await installAdminToken(config: config, catalog: catalog, logger: logger)

    let router = Router(context: APIRequestContext.self)
    router.addMiddleware { ErrorMappingMiddleware(logger: logger) }
    OperationsController(plane: plane).addRoutes(to: router)
    // Everything under /v1 needs a token; the authenticator puts its caller in the context.
    let oidc = config.oidc.map { OIDCVerifier(settings: $0, logger: logger) }
    if let o = config.oidc {
        logger.info("single sign-on", metadata: ["devdb.oidc.issuer": "\(o.issuer)", "devdb.oidc.client_id": "\(o.clientID)",
                                                 "devdb.oidc.user_claim": "\(o.userClaim.rawValue)", "devdb.oidc.admin_group": "\(o.adminGroup ?? "(none)")",
                                                 "devdb.console_url": "\(o.consoleURL ?? "(from each request's Host)")"])
    }
    let v1 = router.group("v1").add(middleware: TokenAuthenticator(catalog: catalog, oidc: oidc)).add(middleware: AuditMiddleware(plane: plane))
    addTeamRoutes(to: v1, plane: plane)  // #27: /v1/quotas, /v1/audit, /v1/usage
    ProjectsController(plane: plane).addRoutes(to: v1.group("projects"))
    DatabasesController(plane: plane).addRoutes(to: v1.group("databases"))
    SnapshotsController(plane: plane).addRoutes(to: v1.group("databases/:name/snapshots"))
    DatabaseHistoryController(plane: plane).addRoutes(to: v1.group("databases/:name/operations"))
    TokensController(catalog: catalog).addRoutes(to: v1.group("tokens"))
    v1.get("admin/foreign-objects") { _, context -> Response in
        try context.requireAdmin()
        return try jsonResponse(ForeignObjectsView(items: plane.context.foreignObjects.withLock { $0 }))
    }
    DiffController(plane: plane).addRoutes(to: v1.group("diff"))
    v1.get("whoami") { _, context -> Response in
        let c = try context.requireCaller()
        var me = WhoAmIView()
        me.user = c.user; me.admin = c.admin
        me.auth = c.auth; me.issuer = c.issuer
        return try jsonResponse(me)
    }
    // The web console (docs/console.md): pages at /, signed-in sessions, the same controllers.
    try WebConsole(plane: plane, oidc: oidc).addRoutes(to: router)
    return Application(
        router: router,
        configuration: .init(address: .hostname(config.host, port: config.port), serverName: "devdb-api"),
        services: controlPlane.services,
        logger: logger)
}

/// The admin token: the configured one, or a generated one written to `<data-dir>/admin-token`
/// (mode 0600). Only its hash goes to Redis; it is never logged.
func installAdminToken(config: APIConfiguration, catalog: any CatalogStore, logger: Logger) async throws {
    var token = config.adminToken
    let file = config.dataDirectory.appendingPathComponent("admin-token")
    if token == nil {
        if let existing = try? String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !existing.isEmpty {
            token = existing
        } else {
            let generated = "ddb_" + TokenSecrets.randomHex(24)
            FileManager.default.createFile(atPath: file.path, contents: Data((generated + "\n").utf8), attributes: [.posixPermissions: 0o600])
            token = generated
            logger.notice("generated an admin token", metadata: ["devdb.file": "\(file.path)"])
        }
    }
    // A changed admin token replaces the old one: the old hash must stop working.
    try? await catalog.revokeToken(id: "admin")
    try await catalog.storeToken(hash: TokenSecrets.sha256Hex(token!), TokenRecord(id: "admin", user: "admin", admin: true))
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
        } catch let q as QuotaRefusal {
            throw QuotaHTTPError(refusal: q)
        } catch let r as DatabaseLifecycle.Refusal {
            throw APIError.conflict(r.message, hint: r.hint)
        } catch let r as CatalogRefusal {
            throw APIError(refusal: r)
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
    return String(String(base).prefix(57)) + "-" + TokenSecrets.randomHex(2)
}
