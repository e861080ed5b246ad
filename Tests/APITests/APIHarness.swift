import DevDBAPI
import DevDBAPIContract
import DevDBCatalog
import DevDBRedis
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

/// Runs the API in process for one test: `buildApplication` over a fresh `MemoryCatalogStore` and
/// a `FakeProvisioner`, through Hummingbird's router test framework (no sockets; the control
/// plane's services, the database and seed workers included, run beside the test as in `devdb-api`).
func withAPI(_ configure: (inout APIConfiguration) -> Void = { _ in },
             _ body: @Sendable (API) async throws -> Void) async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("devdb-apitests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    var config = APIConfiguration()
    config.dataDirectory = directory
    // The token the app installs at start, as `--admin-token-file` gives it.
    config.adminToken = API.adminToken
    // No Redis in these suites: the wake listener's subscriber finds nothing here and retries.
    config.redis = RedisURL(host: "127.0.0.1", port: 1)
    configure(&config)
    let store = MemoryCatalogStore(maxSnapshotsPerDatabase: config.maxSnapshotsPerDatabase)
    let fake = FakeProvisioner()
    var logger = Logger(label: "apitests")
    logger.logLevel = .critical
    let app = try await buildApplication(config, store: store, provisioner: fake, logger: logger)
    let dumps = directory
    try await app.test(.router) { client in
        try await body(API(client: client, fake: fake, store: store, dumps: dumps))
    }
}

/// One call's answer.
struct Reply: Sendable {
    let status: HTTPResponse.Status
    let body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try APIJSON.decoder.decode(T.self, from: body) }
    /// The error body's `error` code, when this is an error.
    var code: String? { (try? decode(ErrorBody.self))?.error.code }
}

/// The API under test, as a client sees it. Every request names its route as the OpenAPI
/// document does (`/v1/databases/{name}`, parameters in order): `RouteCoverageTests` reads those
/// templates from these suites' sources and checks every documented route has one.
struct API: Sendable {
    static let adminToken = "ddb_" + String(repeating: "a", count: 48)
    let client: any TestClientProtocol
    let fake: FakeProvisioner
    let store: MemoryCatalogStore
    let dumps: URL
    var admin: String { Self.adminToken }

    func call(_ method: HTTPRequest.Method, _ template: String, _ params: [String] = [], query: String? = nil,
              token: String?, json: String? = nil, headers extra: HTTPFields = [:]) async throws -> Reply {
        var path = template
        for p in params {
            guard let open = path.firstIndex(of: "{"), let close = path[open...].firstIndex(of: "}") else {
                Issue.record("more parameters than \(template) has"); break
            }
            path.replaceSubrange(open...close, with: p.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? p)
        }
        #expect(!path.contains("{"), "unfilled parameter in \(template)")
        if let query { path += "?" + query }
        var headers = extra
        if let token { headers[.authorization] = "Bearer \(token)" }
        if json != nil { headers[.contentType] = "application/json" }
        let response = try await client.execute(uri: path, method: method, headers: headers, body: json.map { ByteBuffer(string: $0) })
        return Reply(status: response.status, body: Data(buffer: response.body))
    }

    func get(_ t: String, _ p: String..., query: String? = nil, token: String?) async throws -> Reply {
        try await call(.get, t, p, query: query, token: token)
    }
    func post(_ t: String, _ p: String..., token: String?, json: String? = nil) async throws -> Reply {
        try await call(.post, t, p, token: token, json: json)
    }
    func patch(_ t: String, _ p: String..., token: String?, json: String? = nil) async throws -> Reply {
        try await call(.patch, t, p, token: token, json: json)
    }
    func delete(_ t: String, _ p: String..., token: String?) async throws -> Reply {
        try await call(.delete, t, p, token: token)
    }

    // MARK: set-ups through the routes

    /// A user token, made as an admin makes one (POST /v1/tokens).
    func token(for user: String, admin: Bool = false) async throws -> String {
        let r = try await post("/v1/tokens", token: self.admin, json: #"{"user": "\#(user)", "admin": \#(admin)}"#)
        try #require(r.status == .created, "token for \(user): \(r.text)")
        return try #require(try r.decode(TokenView.self).token)
    }

    /// A plain-SQL dump file the API can inspect (PostgreSQL 15); its URL.
    func dumpURL(_ name: String = "shop") throws -> String {
        let file = dumps.appendingPathComponent("\(name).sql")
        try Data("--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 15.4\n-- Dumped by pg_dump version 15.4\n".utf8).write(to: file)
        return "file://" + file.path
    }

    /// A project whose first generation is ready (seeded by the fake).
    @discardableResult
    func readyProject(_ name: String) async throws -> ProjectView {
        let r = try await post("/v1/projects", token: admin, json: #"{"name": "\#(name)", "dump_url": "\#(try dumpURL(name))"}"#)
        try #require(r.status == .accepted, "create project \(name): \(r.text)")
        return try await waitFor("project \(name) ready") {
            let p = try await get("/v1/projects/{name}", name, token: admin).decode(ProjectView.self)
            return p.generations.contains { $0.state == "ready" } ? p : nil
        }
    }

    /// A database of `token`'s user, ready.
    @discardableResult
    func readyDatabase(_ name: String, project: String, token: String) async throws -> DatabaseView {
        let r = try await post("/v1/databases", token: token, json: #"{"name": "\#(name)", "project": "\#(project)"}"#)
        try #require(r.status == .accepted, "create database \(name): \(r.text)")
        return try await database(name, reaches: "ready", token: token)
    }

    /// Polls the show route until the database is in `state`.
    @discardableResult
    func database(_ name: String, reaches state: String, token: String? = nil) async throws -> DatabaseView {
        try await waitFor("database \(name) \(state)") {
            let d = try await get("/v1/databases/{name}", name, token: token ?? admin).decode(DatabaseView.self)
            return d.state == state ? d : nil
        }
    }

    /// Polls the show route until the snapshot is in `state`.
    @discardableResult
    func snapshot(_ database: String, _ snap: String, reaches state: String, token: String) async throws -> SnapshotView {
        try await waitFor("snapshot \(database)@\(snap) \(state)") {
            let s = try await get("/v1/databases/{name}/snapshots/{snap}", database, snap, token: token).decode(SnapshotView.self)
            return s.state == state ? s : nil
        }
    }
}

/// Polls `check` every 10 ms until it returns a value; fails after 5 s (everything here is in memory).
func waitFor<T>(_ what: String, _ check: () async throws -> T?) async throws -> T {
    // Generous: a deadline, not a timing (a busy machine delays the workers' tasks).
    let deadline = ContinuousClock.now + .seconds(120)
    while ContinuousClock.now < deadline {
        if let v = try await check() { return v }
        try await Task.sleep(for: .milliseconds(10))
    }
    throw WaitTimeout(what: what)
}

struct WaitTimeout: Error, CustomStringConvertible {
    let what: String
    var description: String { "timed out waiting for \(what)" }
}
