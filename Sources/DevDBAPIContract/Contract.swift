import Foundation

// The HTTP API's contract: what the API encodes and the CLI decodes, one type per schema of
// docs/openapi.yaml (named in `schema`). The API builds these from catalog records; the CLI reads
// them. `Tests/UnitTests/ContractTests.swift` checks every property, its type and whether it is
// required against the document, so a renamed or retyped field fails a test, not a user.
// No I/O and nothing but Foundation: the CLI links this and nothing of the server.

/// The JSON coding both sides use: snake_case keys, ISO 8601 dates.
public enum APIJSON {
    public static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.dateEncodingStrategy = .iso8601
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return e
    }()
    public static let decoder: JSONDecoder = {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        d.dateDecodingStrategy = .iso8601
        return d
    }()
}

/// A type of the contract and the schema of docs/openapi.yaml it is.
public protocol APIContractType: Codable, Sendable {
    static var schema: String { get }
}

/// Every error: `{"error": {"code", "message", "hint"}}`.
public struct ErrorBody: APIContractType {
    public static let schema = "Error"
    public struct Detail: Codable, Sendable {
        public var code: String
        public var message: String
        public var hint: String?
        public init(code: String, message: String, hint: String?) { self.code = code; self.message = message; self.hint = hint }
    }
    public var error: Detail
    public init(error: Detail) { self.error = error }
}

// MARK: states

// The `state` values of the views, as the document lists them. The views keep `state` a String,
// so the JSON stays byte for byte what the API sends and a state added by a newer API still
// decodes and prints; `knownState` reads it as one of these (nil for a state this build does not
// know). Tests/UnitTests/ContractTests checks them against docs/openapi.yaml and the catalog.

/// A database's state. Declared in the order `devdb db list --state` lists them.
public enum DatabaseState: String, Codable, Sendable, CaseIterable {
    case ready, provisioning, restoring, cloning, starting, failed, deleting, unavailable, snapshotting, hibernating, hibernated, waking
}

/// A project's state.
public enum ProjectState: String, Codable, Sendable, CaseIterable { case seeding, ready, failed, deleting }

/// A generation's state (a restore of the project's dump).
public enum GenerationState: String, Codable, Sendable, CaseIterable { case fetching, restoring, ready, failed }

/// A snapshot's state.
public enum SnapshotState: String, Codable, Sendable, CaseIterable { case taking, ready, failed }

/// A list answer: `{"items": [...]}`.
public struct ItemList<Item: Codable & Sendable>: Codable, Sendable {
    public var items: [Item]
    /// Paginated lists (`limit`): pass this as `after` for the next page; absent on the last page.
    public var next: String?
    public init(items: [Item], next: String? = nil) { self.items = items; self.next = next }
    /// The largest page a paginated list returns.
    public static var maximumLimit: Int { 1000 }
}

public struct GenerationView: APIContractType {
    public static let schema = "Generation"
    public var number = 0
    public var state = ""
    public var reason: String?
    /// What the restore does now, with its progress (e.g. "restoring: 812 of 1,204 items").
    public var phase: String?
    public var bytesFetched: Int64 = 0
    /// When the current step began (for elapsed times).
    public var phaseStartedAt: Date?
    public var restoreSeconds: Double?
    /// The PostgreSQL major it restores into (decided when its seed starts).
    public var postgres: Int?
    /// The dump's format, read from its bytes.
    public var dumpFormat: String?
    public var createdAt = Date(timeIntervalSince1970: 0)
    public init() {}

    public var knownState: GenerationState? { GenerationState(rawValue: state) }
}

public struct ProjectView: APIContractType {
    public static let schema = "Project"
    public var name = ""
    public var postgres = 0
    /// Where the dump lives (server paths, bucket names): admins only.
    public var dumpUrl: String?
    public var state = ""
    public var reason: String?
    public var createdAt = Date(timeIntervalSince1970: 0)
    public var generations: [GenerationView] = []
    /// Whether generations are masked by after-restore SQL; the SQL itself only for admins.
    public var masks = false
    public var afterRestoreSql: String?
    public var refreshOnChange = false
    public var refreshSchedule: String?
    public var nextScheduledRefresh: Date?
    public var keepGenerations = 0
    public init() {}

    public var knownState: ProjectState? { ProjectState(rawValue: state) }
}

public struct KeptSnapshot: Codable, Sendable {
    public var name: String
    public var branches: [String]
    public init(name: String, branches: [String]) { self.name = name; self.branches = branches }
}

/// A database as the API shows it. `password`, `uri` and `psql` only appear on show, create and reset.
public struct DatabaseView: APIContractType {
    public static let schema = "Database"
    public var name = ""
    public var project = ""
    public var owner = ""
    public var state = ""
    /// `delete` when a delete was accepted while other work runs (it runs after), `wake` likewise.
    public var pending: String?
    /// For a branch: the snapshot it was made from, `DB@SNAP`.
    public var base: String?
    /// True for a database made with `schema_only`: its generation's schema, no rows.
    public var schemaOnly: Bool?
    /// Seconds without a session before it sleeps (nil: never), and since when it sleeps.
    public var hibernateAfterSeconds: Double?
    public var hibernatedAt: Date?
    /// The project has a newer ready generation than the one this database holds.
    public var newerGeneration: Int?
    /// What to do next, when there is something (newer data, a failure).
    public var hint: String?
    /// On delete: the database's snapshots that go with it, and those kept for branches.
    public var snapshotsDeleted: [String]?
    public var snapshotsKept: [KeptSnapshot]?
    public var reason: String?
    public var phase: String?
    /// When the current state (or phase) began, for elapsed times.
    public var phaseStartedAt: Date?
    public var generation: Int?
    /// The PostgreSQL major it runs (its generation's); nil until it is made.
    public var postgres: Int?
    public var host = ""
    /// Where the router is when the name does not resolve (one machine); nil with wildcard DNS.
    public var hostaddr: String?
    public var port = 0
    public var user = ""
    public var password: String?
    public var database = ""
    public var uri: String?
    public var psql: String?
    public var cloneMethod: String?
    public var note: String?
    public var createdAt = Date(timeIntervalSince1970: 0)
    public var expiresAt: Date?
    public init() {}

    public var knownState: DatabaseState? { DatabaseState(rawValue: state) }

    /// States in which it serves or wakes on a connection.
    public var isConnectable: Bool { [.ready, .hibernated, .hibernating, .waking].contains(knownState) }
}

public struct SnapshotView: APIContractType {
    public static let schema = "Snapshot"
    public var database = ""
    public var name = ""
    public var state = ""
    public var reason: String?
    public var generation: Int?
    public var createdAt = Date(timeIntervalSince1970: 0)
    public var sizeBytes: Int64?
    public var method: String?
    public var unavailableSeconds: Double?
    /// Branches made from it (they keep it when its database is deleted).
    public var branches: [String] = []
    public init() {}

    public var knownState: SnapshotState? { SnapshotState(rawValue: state) }
}

/// One finished operation of a database (`GET /v1/databases/{name}/operations`).
public struct OperationView: APIContractType {
    public static let schema = "Operation"
    public var id = ""
    /// create, reset, snapshot, stop, start or delete.
    public var kind = ""
    /// The snapshot taken, or the one a reset went back to.
    public var target: String?
    public var startedAt = Date(timeIntervalSince1970: 0)
    public var finishedAt = Date(timeIntervalSince1970: 0)
    public var seconds = 0.0
    /// succeeded, failed or cancelled.
    public var outcome = ""
    /// Why it failed or was cancelled.
    public var reason: String?
    public init() {}
}

public struct TokenView: APIContractType {
    public static let schema = "Token"
    public var id = ""
    public var user = ""
    public var admin = false
    public var createdAt = Date(timeIntervalSince1970: 0)
    /// Only in the answer to its creation.
    public var token: String?
    public init() {}
}

public struct WhoAmIView: APIContractType {
    public static let schema = "WhoAmI"
    public var user = ""
    public var admin = false
    /// How the caller signed in: "token" (an API token) or "oidc" (an ID token, single sign-on).
    public var auth = "token"
    /// The OpenID issuer of the caller's ID token (auth "oidc" only).
    public var issuer: String?
    public init() {}
}

/// `GET /v1/diff?a=&b=`: what differs in the schema from side `a` to side `b`, object by object.
public struct SchemaDiffView: APIContractType {
    public static let schema = "SchemaDiff"
    /// Each side as the API understood it: `database kate-pg`, `snapshot kate-pg@before`, `generation shop@3`.
    public var a = ""
    public var b = ""
    public var identical = true
    public var changes: [SchemaChange] = []
    public init() {}
}

/// One object that is only in a (`removed`), only in b (`added`), or in both with other
/// properties (`changed`: only the properties that differ are listed).
public struct SchemaChange: Codable, Sendable, Equatable {
    public struct Property: Codable, Sendable, Equatable {
        public var name: String
        /// The value in a and in b; absent where the object or the property is not there.
        public var a: String?
        public var b: String?
        public init(name: String, a: String?, b: String?) { self.name = name; self.a = a; self.b = b }
    }
    /// `added`, `removed` or `changed`.
    public var change: String
    /// `table`, `column`, `constraint`, `index`, `view`, `materialized view`, `function`,
    /// `procedure`, `aggregate`, `trigger`, `type`, `domain`, `sequence`, `schema` or `extension`.
    public var kind: String
    /// Its qualified name: `public.orders`, `public.orders.total_cents`, `public.add(integer, integer)`.
    public var object: String
    public var properties: [Property]
    public init(change: String, kind: String, object: String, properties: [Property]) {
        self.change = change; self.kind = kind; self.object = object; self.properties = properties
    }
}

// MARK: request bodies

public struct CreateProjectRequest: APIContractType {
    public static let schema = "CreateProjectRequest"
    public var name = ""
    public var postgres: Int?
    public var dumpUrl = ""
    public var afterRestoreSql: String?
    public var refreshOnChange: Bool?
    public var refreshSchedule: String?
    public var keepGenerations: Int?
    public init() {}
}

/// Absent fields stay as they are; an empty `after_restore_sql` or `refresh_schedule` removes it.
public struct UpdateProjectRequest: APIContractType {
    public static let schema = "UpdateProjectRequest"
    public var afterRestoreSql: String?
    public var refreshOnChange: Bool?
    public var refreshSchedule: String?
    public var keepGenerations: Int?
    public init() {}
    public var isEmpty: Bool { afterRestoreSql == nil && refreshOnChange == nil && refreshSchedule == nil && keepGenerations == nil }
}

public struct CreateDatabaseRequest: APIContractType {
    public static let schema = "CreateDatabaseRequest"
    public var name: String?
    /// Required unless `from` names the database to branch from.
    public var project: String?
    public var ttl: String?
    /// `NAME@SNAP` (a branch from that snapshot) or `NAME` (from NAME's state now).
    public var from: String?
    /// "30m", "never" (or "0"); absent: the API's --hibernate-after.
    public var hibernateAfter: String?
    /// The project's schema with no rows (made once per generation, then cloned); not with `from`.
    public var schemaOnly: Bool?
    public init() {}
}

public struct UpdateDatabaseRequest: APIContractType {
    public static let schema = "UpdateDatabaseRequest"
    public var ttl: String?
    public var hibernateAfter: String?
    public init() {}
}

public struct ResetRequest: APIContractType {
    public static let schema = "ResetRequest"
    public var latest: Bool?
    public var to: String?
    public init() {}
}

public struct CreateSnapshotRequest: APIContractType {
    public static let schema = "CreateSnapshotRequest"
    public var name: String?
    public init() {}
}

public struct CreateTokenRequest: APIContractType {
    public static let schema = "CreateTokenRequest"
    public var user = ""
    public var admin: Bool?
    public init() {}
}
