import DevDBAPIContract
import DevDBCatalog
import Foundation
import Testing
import Yams

/// docs/openapi.yaml against the Codable contract the API encodes and the CLI decodes (issue #16):
/// every property of every contract type is in its schema with the same JSON type, what Swift
/// requires the schema requires, and the schema names nothing the type lacks. A renamed, retyped,
/// added or dropped field fails here, not at a user.
@Suite struct ContractTests {
    nonisolated(unsafe) static let document: [String: Any] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/openapi.yaml").standardized
        let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
        return ((try? Yams.load(yaml: text)) as? [String: Any]) ?? [:]
    }()

    static var schemas: [String: Any] { ((document["components"] as? [String: Any])?["schemas"] as? [String: Any]) ?? [:] }

    /// One value of each contract type with every optional set, so every key is encoded.
    static let samples: [any APIContractType] = {
        let date = Date(timeIntervalSince1970: 1_800_000_000)
        var g = GenerationView()
        g.number = 2; g.state = "restoring"; g.reason = "r"; g.phase = "restoring: 1 of 2 items"; g.bytesFetched = 59122
        g.phaseStartedAt = date; g.restoreSeconds = 9.02; g.postgres = 17; g.dumpFormat = "custom"; g.createdAt = date
        var p = ProjectView()
        p.name = "shop"; p.postgres = 17; p.dumpUrl = "s3://b/k"; p.state = "ready"; p.reason = "r"; p.createdAt = date; p.generations = [g]
        p.masks = true; p.afterRestoreSql = "select 1"; p.refreshOnChange = true; p.refreshSchedule = "0 3 * * *"
        p.nextScheduledRefresh = date; p.keepGenerations = 2
        var d = DatabaseView()
        d.name = "kate-pg"; d.project = "shop"; d.owner = "kate"; d.state = "ready"; d.pending = "delete"; d.base = "a@b"; d.schemaOnly = true
        d.hibernateAfterSeconds = 1800; d.hibernatedAt = date; d.newerGeneration = 3; d.hint = "h"; d.snapshotsDeleted = ["s1"]
        d.snapshotsKept = [KeptSnapshot(name: "s2", branches: ["b"])]; d.reason = "r"; d.phase = "cloning"; d.phaseStartedAt = date
        d.generation = 2; d.postgres = 17; d.host = "kate-pg.db.example.com"; d.hostaddr = "127.0.0.1"; d.port = 5432; d.user = "app"
        d.password = "pw"; d.database = "app"; d.uri = "postgresql://"; d.psql = "psql"; d.cloneMethod = "copy"; d.note = "n"
        d.createdAt = date; d.expiresAt = date
        var s = SnapshotView()
        s.database = "kate-pg"; s.name = "s1"; s.state = "ready"; s.reason = "r"; s.generation = 2; s.createdAt = date; s.sizeBytes = 1
        s.method = "copy"; s.unavailableSeconds = 0.5; s.branches = ["b"]
        var t = TokenView()
        t.id = "abc"; t.user = "kate"; t.admin = false; t.createdAt = date; t.token = "ddb_x"
        var w = WhoAmIView()
        w.user = "kate"; w.admin = true; w.auth = "oidc"; w.issuer = "https://idp.example.com"
        var cp = CreateProjectRequest()
        cp.name = "shop"; cp.postgres = 17; cp.dumpUrl = "file:///x"; cp.afterRestoreSql = "select 1"; cp.refreshOnChange = true
        cp.refreshSchedule = "0 3 * * *"; cp.keepGenerations = 2
        var up = UpdateProjectRequest()
        up.afterRestoreSql = ""; up.refreshOnChange = false; up.refreshSchedule = ""; up.keepGenerations = 1
        var cd = CreateDatabaseRequest()
        cd.name = "x"; cd.project = "shop"; cd.ttl = "8h"; cd.from = "a@b"; cd.hibernateAfter = "never"; cd.schemaOnly = true
        var ud = UpdateDatabaseRequest()
        ud.ttl = "1h"; ud.hibernateAfter = "30m"
        var r = ResetRequest()
        r.latest = true; r.to = "s1"
        var cs = CreateSnapshotRequest()
        cs.name = "s1"
        var ct = CreateTokenRequest()
        ct.user = "kate"; ct.admin = true
        let e = ErrorBody(error: .init(code: "not_found", message: "m", hint: "h"))
        var sd = SchemaDiffView()
        sd.a = "generation shop@1"; sd.b = "database kate-pg"; sd.identical = false
        sd.changes = [SchemaChange(change: "changed", kind: "column", object: "public.orders.total", properties: [.init(name: "type", a: "integer", b: "bigint")])]
        // #27: quotas, the audit log, usage.
        var ql = QuotaLimitsView()
        ql.databases = 5; ql.snapshots = 10; ql.storageBytes = 1 << 30; ql.awake = 2; ql.maxTtlSeconds = 86400
        var qu = QuotaUseView()
        qu.databases = 1; qu.snapshots = 2; qu.storageBytes = 3; qu.awake = 1
        var q = QuotaView()
        q.user = "kate"; q.limits = ql; q.own = ql; q.use = qu
        var sq = SetQuotaRequest()
        sq.databases = 5; sq.snapshots = -1; sq.storage = "20GiB"; sq.awake = 2; sq.maxTtl = "7d"
        var qe = QuotaErrorBody()
        qe.error.message = "m"; qe.error.hint = "h"; qe.error.quota.resource = "databases"; qe.error.quota.delete = ["devdb db delete a"]
        var ae = AuditEntryView()
        ae.id = "1-0"; ae.time = date; ae.user = "kate"; ae.how = "token"; ae.action = "database.create"; ae.object = "a"; ae.outcome = "ok"
        ae.status = 202; ae.requestId = "r"; ae.client = "127.0.0.1:1"; ae.detail = "d"
        var ui = UsageItemView()
        ui.key = "kate"; ui.awakeHours = 1; ui.asleepHours = 2; ui.storageGibHours = 3; ui.snapshots = 1; ui.wakes = 1
        var uv = UsageView()
        uv.since = date; uv.until = date; uv.items = [ui]; uv.total = ui
        var op = OperationView()
        op.id = "ab12"; op.kind = "snapshot"; op.target = "s1"; op.startedAt = date; op.finishedAt = date; op.seconds = 1.5
        op.outcome = "failed"; op.reason = "r"
        return [g, p, d, s, t, w, cp, up, cd, ud, r, cs, ct, e, sd, ql, qu, q, sq, qe, ae, ui, uv, op]
    }()

    /// Each sample sets every optional: a new field needs a sample value (and so a schema entry).
    @Test func samplesSetEveryOptional() {
        for sample in Self.samples {
            for child in Mirror(reflecting: sample).children {
                let isNil = Mirror(reflecting: child.value).displayStyle == .optional && Mirror(reflecting: child.value).children.isEmpty
                #expect(!isNil, "\(type(of: sample)).\(child.label ?? "?") is nil in the sample: give it a value")
            }
        }
    }

    @Test func everyContractTypeMatchesItsSchema() throws {
        #expect(!Self.schemas.isEmpty, "docs/openapi.yaml was read")
        for sample in Self.samples {
            let name = type(of: sample).schema
            let schema = try #require(Self.schemas[name] as? [String: Any], "docs/openapi.yaml has no schema \(name)")
            // JSON read as YAML: Bool, Int, Double and String stay apart (quoted strings stay strings).
            let json = try #require(try Yams.load(yaml: String(decoding: APIJSON.encoder.encode(sample), as: UTF8.self)))
            for problem in Self.problems(json, schema, at: name) { Issue.record("\(problem)") }
            // What Swift requires (non-optional properties), the schema requires, and nothing else.
            let required = Set(Mirror(reflecting: sample).children.compactMap { child -> String? in
                Mirror(reflecting: child.value).displayStyle == .optional ? nil : child.label.map(Self.snakeCase)
            })
            #expect(Set(schema["required"] as? [String] ?? []) == required, "\(name): required in the document vs non-optional in Swift")
        }
    }

    /// The states the catalog can be in are the ones the document lists.
    @Test func stateEnumsAreTheCatalogs() {
        func enumeration(_ schema: String, _ property: String) -> Set<String> {
            Set((((Self.schemas[schema] as? [String: Any])?["properties"] as? [String: Any])?[property] as? [String: Any])?["enum"] as? [String] ?? [])
        }
        #expect(enumeration("Database", "state") == Set(DatabaseRecord.State.allCases.map(\.rawValue)))
        #expect(enumeration("Generation", "state") == ["fetching", "restoring", "ready", "failed"])
        #expect(enumeration("Project", "state") == ["seeding", "ready", "failed", "deleting"])
    }

    /// The contract's state enums, which the CLI checks states against, are the document's and
    /// the catalog's.
    @Test func contractStateEnumsAreTheDocuments() {
        func enumeration(_ schema: String) -> Set<String> {
            Set((((Self.schemas[schema] as? [String: Any])?["properties"] as? [String: Any])?["state"] as? [String: Any])?["enum"] as? [String] ?? [])
        }
        #expect(Set(DatabaseState.allCases.map(\.rawValue)) == enumeration("Database"))
        #expect(Set(DatabaseState.allCases.map(\.rawValue)) == Set(DatabaseRecord.State.allCases.map(\.rawValue)))
        #expect(Set(GenerationState.allCases.map(\.rawValue)) == enumeration("Generation"))
        #expect(Set(ProjectState.allCases.map(\.rawValue)) == enumeration("Project"))
        #expect(Set(SnapshotState.allCases.map(\.rawValue)) == enumeration("Snapshot"))
        var d = DatabaseView()
        d.state = "waking"
        #expect(d.knownState == .waking && d.isConnectable)
        d.state = "a-state-of-a-newer-api"
        #expect(d.knownState == nil && !d.isConnectable)
    }

    /// The checker itself: a renamed field, a retyped one and a dropped one are each found.
    @Test func theCheckerFindsRenamedRetypedAndMissingFields() throws {
        let schema = try #require(Self.schemas["Token"] as? [String: Any])
        let good: [String: Any] = ["id": "a", "user": "u", "admin": true, "created_at": "2027-01-15T08:00:00Z", "token": "t"]
        #expect(Self.problems(good, schema, at: "Token").isEmpty)
        var renamed = good
        renamed["user_name"] = renamed.removeValue(forKey: "user")
        #expect(Self.problems(renamed, schema, at: "Token").contains { $0.contains("user_name") })
        var retyped = good
        retyped["admin"] = 1
        #expect(Self.problems(retyped, schema, at: "Token").contains { $0.contains("admin") })
        var dropped = good
        dropped["token"] = nil
        #expect(Self.problems(dropped, schema, at: "Token").contains { $0.contains("token") })
    }

    /// Differences between an encoded value and a schema (properties both ways, JSON types, nested
    /// objects, arrays and $refs).
    static func problems(_ value: Any, _ schema: [String: Any], at path: String) -> [String] {
        if let ref = schema["$ref"] as? String {
            guard let target = schemas[String(ref.split(separator: "/").last ?? "")] as? [String: Any] else { return ["\(path): unknown \(ref)"] }
            return problems(value, target, at: path)
        }
        let type = schema["type"] as? String
        switch value {
        case let object as [String: Any]:
            guard type == "object" else { return ["\(path): an object where the document says \(type ?? "nothing")"] }
            let properties = schema["properties"] as? [String: Any] ?? [:]
            var found: [String] = []
            for key in Set(object.keys).subtracting(properties.keys) { found.append("\(path).\(key): encoded but not in the document") }
            for key in Set(properties.keys).subtracting(object.keys) { found.append("\(path).\(key): in the document but not encoded by the contract type") }
            for (key, v) in object {
                if let p = properties[key] as? [String: Any] { found += problems(v, p, at: "\(path).\(key)") }
            }
            return found
        case let array as [Any]:
            guard type == "array" else { return ["\(path): an array where the document says \(type ?? "nothing")"] }
            let items = schema["items"] as? [String: Any] ?? [:]
            return array.enumerated().flatMap { problems($0.element, items, at: "\(path)[\($0.offset)]") }
        case is Bool:
            return type == "boolean" ? [] : ["\(path): a boolean where the document says \(type ?? "nothing")"]
        case is Int:
            return type == "integer" || type == "number" ? [] : ["\(path): an integer where the document says \(type ?? "nothing")"]
        case is Double:
            return type == "number" ? [] : ["\(path): a number where the document says \(type ?? "nothing")"]
        case let string as String:
            guard type == "string" else { return ["\(path): a string where the document says \(type ?? "nothing")"] }
            if schema["format"] as? String == "date-time", ISO8601DateFormatter().date(from: string) == nil { return ["\(path): not a date-time: \(string)"] }
            if let allowed = schema["enum"] as? [String], !allowed.contains(string) { return ["\(path): \(string) is not one of \(allowed)"] }
            return []
        default:
            return ["\(path): unexpected \(value)"]
        }
    }

    static func snakeCase(_ name: String) -> String {
        name.reduce(into: "") { out, c in
            if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) }
        }
    }
}
