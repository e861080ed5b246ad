import DevDBAPIContract

/// One call of the HTTP API: method, path, body and query, typed by the contract view it answers
/// with. Commands name an endpoint (`.database(name)`), never a path.
struct Endpoint<Answer: Decodable> {
    let method: String
    let path: String
    var body: (any Encodable)? = nil
    var query: [String: String] = [:]
    /// Seconds to wait for the answer (a diff starts temporary instances).
    var timeout: Double = 30
}

/// The answer of a call whose body the CLI does not read (the deletes that answer 204).
struct Unread: Decodable {}

// Every endpoint the CLI calls (docs/openapi.yaml has them all), grouped by what they answer.
// Names go into paths as they are: the API checks them, and its 404 or 400 is what the user sees.

extension Endpoint where Answer == WhoAmIView {
    static var whoAmI: Self { .init(method: "GET", path: "/v1/whoami") }
}

extension Endpoint where Answer == ItemList<ProjectView> {
    static var projects: Self { .init(method: "GET", path: "/v1/projects") }
}

extension Endpoint where Answer == ProjectView {
    static func createProject(_ body: CreateProjectRequest) -> Self { .init(method: "POST", path: "/v1/projects", body: body) }
    static func project(_ name: String) -> Self { .init(method: "GET", path: projectPath(name)) }
    static func updateProject(_ name: String, _ body: UpdateProjectRequest) -> Self { .init(method: "PATCH", path: projectPath(name), body: body) }
}

extension Endpoint where Answer == GenerationView {
    static func refreshProject(_ name: String) -> Self { .init(method: "POST", path: projectPath(name) + "/refresh") }
}

extension Endpoint where Answer == ItemList<DatabaseView> {
    /// Filtered by the query's `project`, `owner` and `state` (absent ones do not filter).
    static func databases(_ query: [String: String]) -> Self { .init(method: "GET", path: "/v1/databases", query: query) }
}

extension Endpoint where Answer == DatabaseView {
    static func createDatabase(_ body: CreateDatabaseRequest) -> Self { .init(method: "POST", path: "/v1/databases", body: body) }
    static func database(_ name: String) -> Self { .init(method: "GET", path: databasePath(name)) }
    static func updateDatabase(_ name: String, _ body: UpdateDatabaseRequest) -> Self { .init(method: "PATCH", path: databasePath(name), body: body) }
    static func deleteDatabase(_ name: String) -> Self { .init(method: "DELETE", path: databasePath(name)) }
    static func resetDatabase(_ name: String, _ body: ResetRequest) -> Self { .init(method: "POST", path: databasePath(name) + "/reset", body: body) }
    static func stopDatabase(_ name: String) -> Self { .init(method: "POST", path: databasePath(name) + "/stop") }
    static func startDatabase(_ name: String) -> Self { .init(method: "POST", path: databasePath(name) + "/start") }
}

extension Endpoint where Answer == ItemList<SnapshotView> {
    static func snapshots(_ database: String) -> Self { .init(method: "GET", path: databasePath(database) + "/snapshots") }
}

extension Endpoint where Answer == SnapshotView {
    static func takeSnapshot(_ database: String, _ body: CreateSnapshotRequest) -> Self {
        .init(method: "POST", path: databasePath(database) + "/snapshots", body: body)
    }
    static func snapshot(_ database: String, _ name: String) -> Self { .init(method: "GET", path: databasePath(database) + "/snapshots/\(name)") }
}

extension Endpoint where Answer == SchemaDiffView {
    static func diff(_ a: String, _ b: String) -> Self { .init(method: "GET", path: "/v1/diff", query: ["a": a, "b": b], timeout: 900) }
}

extension Endpoint where Answer == ItemList<TokenView> {
    static var tokens: Self { .init(method: "GET", path: "/v1/tokens") }
}

extension Endpoint where Answer == TokenView {
    static func createToken(_ body: CreateTokenRequest) -> Self { .init(method: "POST", path: "/v1/tokens", body: body) }
}

extension Endpoint where Answer == Unread {
    static func deleteProject(_ name: String) -> Self { .init(method: "DELETE", path: projectPath(name)) }
    static func deleteSnapshot(_ database: String, _ name: String) -> Self {
        .init(method: "DELETE", path: databasePath(database) + "/snapshots/\(name)")
    }
    static func revokeToken(_ id: String) -> Self { .init(method: "DELETE", path: "/v1/tokens/\(id)") }
}

private func projectPath(_ name: String) -> String { "/v1/projects/\(name)" }
private func databasePath(_ name: String) -> String { "/v1/databases/\(name)" }
