import DevDBCatalog
import DevDBCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// Settings of the audit log (`--audit-max-entries`, `--audit-max-age`).
public struct AuditSettings: Sendable {
    public var maxEntries = 100_000
    public var maxAgeSeconds: Double = 90 * 86400
    public init() {}
}

/// Writes audit entries: to the catalog's bounded stream and as one structured log line each
/// (metadata keys `devdb.audit.*`, so a log pipeline can ship them). A failed write is logged,
/// never fails what was audited.
struct AuditLog: Sendable {
    let catalog: any TeamsStore
    let settings: AuditSettings
    let logger: Logger

    func record(_ r: AuditRecord) async {
        var meta: Logger.Metadata = ["devdb.audit.user": "\(r.user)", "devdb.audit.how": "\(r.how)", "devdb.audit.action": "\(r.action)",
                                     "devdb.audit.object": "\(r.object)", "devdb.audit.outcome": "\(r.outcome)"]
        if let s = r.status { meta["devdb.audit.status"] = "\(s)" }
        if let id = r.requestId { meta["devdb.audit.request_id"] = "\(id)" }
        if let c = r.client { meta["devdb.audit.client"] = "\(c)" }
        if let d = r.detail { meta["devdb.audit.detail"] = "\(d)" }
        logger.info("audit", metadata: meta)
        let settings = self.settings
        do { try await catalog.appendAudit(r, maxEntries: settings.maxEntries, maxAge: settings.maxAgeSeconds) } catch {
            logger.warning("cannot write an audit entry", metadata: ["devdb.audit.action": "\(r.action)", "devdb.error": "\(error)"])
        }
    }

    /// An automatic action of DevDB itself (hibernate, wake, expiry, refresh, reconcile repair).
    func automatic(_ action: String, _ object: String, outcome: String = "ok", detail: String? = nil) async {
        await record(AuditRecord(user: "devdb", how: "devdb", action: action, object: object, outcome: outcome, detail: detail))
    }

    /// For the web console: a change a signed-in user made there (`how: console`).
    func console(user: String, action: String, object: String, outcome: String, status: Int? = nil,
                 requestID: String? = nil, client: String? = nil, detail: String? = nil) async {
        await record(AuditRecord(user: user, how: "console", action: action, object: object, outcome: outcome,
                                 status: status, requestId: requestID, client: client, detail: detail))
    }
}

extension ControlPlanePart {
    var audit: AuditLog { AuditLog(catalog: catalog, settings: config.audit, logger: logger) }
}

/// The object a controller names when the path does not (a generated database or snapshot name).
/// Set by the audit middleware as a task-local for the request; controllers call `AuditNote.name`.
final class AuditNote: Sendable {
    @TaskLocal static var current: AuditNote?
    private let object = Mutex<String?>(nil)
    var named: String? { object.withLock { $0 } }
    static func name(_ object: String) { current?.object.withLock { $0 = object } }
}

/// What a request does, read from its method and path: `POST /v1/databases/a/snapshots` is
/// `snapshot.create` of `a@<name>`. Pure, so it is unit-tested.
enum AuditAction {
    static func of(method: String, path: String, bodyName: String?, branch: Bool) -> (action: String, object: String) {
        var parts = path.split(separator: "/").map(String.init)
        if parts.first == "v1" { parts.removeFirst() }
        guard let collection = parts.first else { return ("unknown", "") }
        let resource: String = switch collection {
        case "databases": "database"
        case "projects": "project"
        case "tokens": "token"
        case "quotas": "quota"
        default: collection
        }
        // /databases/NAME/snapshots[/SNAP]
        if collection == "databases", parts.count >= 3, parts[2] == "snapshots" {
            let snap = parts.count >= 4 ? parts[3] : bodyName
            let verb = method == "DELETE" ? "delete" : "create"
            return ("snapshot.\(verb)", snap.map { "\(parts[1])@\($0)" } ?? parts[1])
        }
        let object = parts.count >= 2 ? parts[1] : (bodyName ?? "")
        let verb: String
        switch (method, parts.count) {
        case ("POST", 1): verb = branch ? "branch" : "create"
        case ("POST", _): verb = parts.count >= 3 ? parts[2] : "create"
        case ("PATCH", _): verb = "update"
        case ("PUT", _): verb = "set"
        case ("DELETE", _): verb = resource == "token" ? "revoke" : "delete"
        default: verb = method.lowercased()
        }
        return ("\(resource).\(verb)", object)
    }

    /// The status and a short reason of an error as the client will see it.
    static func classify(_ error: any Error) -> (status: Int, detail: String) {
        switch error {
        case let e as APIError: return (Int(e.status.code), e.message)
        case let q as QuotaRefusal: return (403, q.description)
        case let r as DatabaseLifecycle.Refusal: return (409, r.message)
        case let c as CatalogError:
            switch c {
            case .notFound(let m): return (404, m)
            case .conflict(let m): return (409, m)
            default: return (503, "the catalog is unavailable")
            }
        default: return (500, "internal error")
        }
    }
}

/// Records every change made through the API (every request but GET and HEAD) after the
/// authenticator: who (user and how they signed in), what, on which object, the outcome, the
/// request id (`X-Request-Id`, given or made) and the client address. Reads only the body's
/// `name` and `from`, never anything else of it.
struct AuditMiddleware: RouterMiddleware {
    let plane: LifecycleRequests

    func handle(_ request: Request, context: APIRequestContext,
                next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
        guard request.method != .get, request.method != .head, let caller = context.caller else { return try await next(request, context) }
        let idHeader = HTTPField.Name("X-Request-Id")!
        let requestID = request.headers[idHeader].map { String($0.prefix(64)) } ?? TokenSecrets.randomHex(8)
        var request = request
        var bodyName: String?, branch = false
        if request.method == .post || request.method == .put, let buffer = try? await request.collectBody(upTo: 1 << 20),
           let object = try? JSONSerialization.jsonObject(with: Data(buffer.readableBytesView)) as? [String: Any] {
            bodyName = object["name"] as? String ?? object["user"] as? String
            branch = object["from"] is String
        }
        let (action, pathObject) = AuditAction.of(method: request.method.rawValue, path: request.uri.path, bodyName: bodyName, branch: branch)
        let note = AuditNote()
        func entry(_ outcome: String, _ status: Int, _ detail: String?) -> AuditRecord {
            var object = pathObject
            if let named = note.named {
                // A snapshot is named DB@SNAP; the controller names the SNAP.
                let database = pathObject.split(separator: "@").first.map(String.init) ?? pathObject
                object = action.hasPrefix("snapshot.") && !named.contains("@") ? "\(database)@\(named)" : named
            }
            return AuditRecord(user: caller.user, how: caller.auth == "oidc" ? "sso" : "token", action: action, object: object,
                               outcome: outcome, status: status, requestId: requestID, client: context.client, detail: detail)
        }
        do {
            var response = try await AuditNote.$current.withValue(note) { try await next(request, context) }
            response.headers[idHeader] = requestID
            await plane.audit.record(entry("ok", Int(response.status.code), nil))
            return response
        } catch {
            let (status, detail) = AuditAction.classify(error)
            await plane.audit.record(entry(status < 500 ? "refused" : "failed", status, detail))
            throw error
        }
    }
}
