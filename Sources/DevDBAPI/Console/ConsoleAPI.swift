import DevDBAPIContract
import DevDBCatalog
import Foundation
import HTTPTypes
import Hummingbird

/// The console's only way into DevDB: it calls the JSON API's own controller functions in
/// process, as the signed-in caller, and decodes their answers. Authorization (visibleDatabase,
/// requireAdmin), validation and every state change therefore run exactly as for the CLI; the
/// console never reads or writes the catalog itself.
struct ConsoleAPI: Sendable {
    let plane: LifecycleRequests

    typealias Handler = @Sendable (Request, APIRequestContext) async throws -> Response

    /// Runs `handler` with a synthetic request (`body` as JSON, `query` on the path) in `context`
    /// (which carries the caller and the route's parameters) and decodes its JSON answer.
    func call<T: Decodable>(_ type: T.Type, _ handler: Handler, _ context: APIRequestContext,
                            method: HTTPRequest.Method = .get, path: String = "/", body: (any Encodable)? = nil) async throws -> T {
        let data = try await raw(handler, context, method: method, path: path, body: body)
        return try APIJSON.decoder.decode(T.self, from: data)
    }

    /// As `call`, for answers without a body the console needs (204s, or views it does not read).
    func perform(_ handler: Handler, _ context: APIRequestContext, method: HTTPRequest.Method = .post,
                 path: String = "/", body: (any Encodable)? = nil) async throws {
        _ = try await raw(handler, context, method: method, path: path, body: body)
    }

    private func raw(_ handler: Handler, _ context: APIRequestContext, method: HTTPRequest.Method, path: String,
                     body: (any Encodable)?) async throws -> Data {
        let bytes = try body.map { try APIJSON.encoder.encode($0) } ?? Data()
        var head = HTTPRequest(method: method, scheme: "http", authority: "console", path: path)
        head.headerFields[.contentType] = "application/json"
        let request = Request(head: head, body: RequestBody(buffer: ByteBuffer(bytes: bytes)))
        let response = try await handler(request, context)
        let sink = BodySink()
        try await response.body.write(BodyCollector(sink: sink))
        return sink.data
    }

    // The controllers, as the JSON routes build them.
    var databases: DatabasesController { DatabasesController(plane: plane) }
    var snapshots: SnapshotsController { SnapshotsController(plane: plane) }
    var projects: ProjectsController { ProjectsController(plane: plane) }
    var tokens: TokensController { TokensController(catalog: plane.catalog) }

    /// The caller's databases as `GET /v1/databases` lists them (admins: everyone's).
    func listDatabases(_ context: APIRequestContext, project: String? = nil, state: String? = nil, owner: String? = nil,
                       after: String? = nil, limit: Int? = nil) async throws -> [DatabaseView] {
        var q: [String] = []
        if let limit { q.append("limit=\(limit)") }
        if let after, !after.isEmpty { q.append("after=" + escapeQuery(after)) }
        if let owner, !owner.isEmpty { q.append("owner=" + escapeQuery(owner)) }
        if let project, !project.isEmpty { q.append("project=" + escapeQuery(project)) }
        if let state, !state.isEmpty { q.append("state=" + escapeQuery(state)) }
        let path = "/v1/databases" + (q.isEmpty ? "" : "?" + q.joined(separator: "&"))
        return try await call(ItemList<DatabaseView>.self, databases.list, context, path: path).items
    }

    func escapeQuery(_ s: String) -> String {
        s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? ""
    }
}

/// Where `BodyCollector` puts a controller's response body (the writer itself is consumed).
final class BodySink {
    var data = Data()
}

/// Gathers a response body written by a controller.
struct BodyCollector: ResponseBodyWriter {
    let sink: BodySink
    mutating func write(_ buffer: ByteBuffer) async throws { sink.data.append(contentsOf: buffer.readableBytesView) }
    consuming func finish(_ trailingHeaders: HTTPFields?) async throws {}
}

/// Checks an API token (or, with single sign-on, an ID token) exactly as every /v1 call does:
/// through `TokenAuthenticator` itself.
func authenticate(token: String, catalog: any CatalogStore, oidc: OIDCVerifier?, context: APIRequestContext) async throws -> Caller {
    var head = HTTPRequest(method: .get, scheme: "http", authority: "console", path: "/v1/whoami")
    head.headerFields[.authorization] = "Bearer " + token
    let request = Request(head: head, body: RequestBody(buffer: ByteBuffer()))
    var found: Caller?
    _ = try await TokenAuthenticator(catalog: catalog, oidc: oidc).handle(request, context: context) { _, ctx in
        found = ctx.caller
        return Response(status: .noContent)
    }
    guard let found else { throw APIError.unauthorized }
    return found
}
