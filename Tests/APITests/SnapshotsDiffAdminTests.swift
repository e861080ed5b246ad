import DevDBAPIContract
import Foundation
import Testing

/// /v1/databases/{name}/snapshots: a database's snapshots (its owner or admins).
@Suite struct SnapshotsTests {
    @Test func takeListShowAndDelete() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            let r = try await api.post("/v1/databases/{name}/snapshots", "db1", token: ann, json: #"{"name": "before"}"#)
            #expect(r.status == .accepted, "\(r.text)")
            let s = try await api.snapshot("db1", "before", reaches: "ready", token: ann)
            #expect(s.method == "fake" && s.sizeBytes == 1024)
            let list = try await api.get("/v1/databases/{name}/snapshots", "db1", token: ann).decode(ItemList<SnapshotView>.self)
            #expect(list.items.map(\.name) == ["before"])
            #expect(try await api.delete("/v1/databases/{name}/snapshots/{snap}", "db1", "before", token: ann).status == .noContent)
            #expect(try await api.get("/v1/databases/{name}/snapshots/{snap}", "db1", "before", token: ann).status == .notFound)
            #expect(api.fake.calls(.deleteSnapshot) == ["db1@before"])
        }
    }

    @Test func aFailedSnapshotSaysWhy() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            api.fake.set(.snapshot, .fail("disk full"))
            #expect(try await api.post("/v1/databases/{name}/snapshots", "db1", token: ann, json: #"{"name": "s1"}"#).status == .accepted)
            let s = try await api.snapshot("db1", "s1", reaches: "failed", token: ann)
            #expect(s.reason?.contains("disk full") == true)
        }
    }

    @Test func refusals() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann"), bob = try await api.token(for: "bob")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            #expect(try await api.post("/v1/databases/{name}/snapshots", "db1", token: ann, json: #"{"name": "s1"}"#).status == .accepted)
            try await api.snapshot("db1", "s1", reaches: "ready", token: ann)
            try await api.database("db1", reaches: "ready", token: ann)

            // Another user: the database does not exist for them.
            #expect(try await api.get("/v1/databases/{name}/snapshots/{snap}", "db1", "s1", token: bob).status == .notFound)
            #expect(try await api.delete("/v1/databases/{name}/snapshots/{snap}", "db1", "s1", token: bob).status == .notFound)
            // No token.
            #expect(try await api.get("/v1/databases/{name}/snapshots", "db1", token: nil).status == .unauthorized)
            #expect(try await api.post("/v1/databases/{name}/snapshots", "db1", token: nil).status == .unauthorized)
            #expect(try await api.get("/v1/databases/{name}/snapshots/{snap}", "db1", "s1", token: nil).status == .unauthorized)
            #expect(try await api.delete("/v1/databases/{name}/snapshots/{snap}", "db1", "s1", token: nil).status == .unauthorized)
            // Unknown database or snapshot.
            #expect(try await api.get("/v1/databases/{name}/snapshots", "nope", token: ann).status == .notFound)
            #expect(try await api.get("/v1/databases/{name}/snapshots/{snap}", "db1", "nope", token: ann).status == .notFound)
            #expect(try await api.delete("/v1/databases/{name}/snapshots/{snap}", "db1", "nope", token: ann).status == .notFound)
            // Bad input and a name taken.
            #expect(try await api.post("/v1/databases/{name}/snapshots", "db1", token: ann, json: #"{"name": "Not OK"}"#).status == .badRequest)
            let again = try await api.post("/v1/databases/{name}/snapshots", "db1", token: ann, json: #"{"name": "s1"}"#)
            #expect(again.status == .conflict, "\(again.text)")
            // Admins reach everyone's snapshots.
            #expect(try await api.get("/v1/databases/{name}/snapshots/{snap}", "db1", "s1", token: api.admin).status == .ok)
        }
    }
}

/// /v1/diff: in process the fake answers the schema query with canned catalogs, so the route's
/// resolution, refusals and diffing run here; reading real catalogs (psql on running and
/// temporary instances) is the end-to-end suite's (Tests/ControlPlaneTests).
@Suite struct DiffTests {
    @Test func diffOfADatabaseAndAGeneration() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            api.fake.setSchema(#"[{"kind": "table", "identity": "public.users", "properties": {"columns": "id int"}}]"#, for: "db1")
            let r = try await api.get("/v1/diff", query: "a=shop@latest&b=db1", token: ann)
            #expect(r.status == .ok, "\(r.text)")
            let view = try r.decode(SchemaDiffView.self)
            #expect(view.a == "generation shop@1" && view.b == "database db1")
            #expect(!view.identical && view.changes.map(\.change) == ["added"])
            let same = try await api.get("/v1/diff", query: "a=shop@1&b=shop@latest", token: ann).decode(SchemaDiffView.self)
            #expect(same.identical)
        }
    }

    @Test func refusals() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann"), bob = try await api.token(for: "bob")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            #expect(try await api.get("/v1/diff", query: "a=db1&b=shop@latest", token: nil).status == .unauthorized)
            #expect(try await api.get("/v1/diff", query: "a=db1", token: ann).status == .badRequest)
            #expect(try await api.get("/v1/diff", query: "a=@x&b=db1", token: ann).status == .badRequest)
            #expect(try await api.get("/v1/diff", query: "a=db1&b=shop@7", token: ann).status == .notFound)
            #expect(try await api.get("/v1/diff", query: "a=db1&b=nothing@1", token: ann).status == .notFound)
            // Another user's database does not exist for bob.
            #expect(try await api.get("/v1/diff", query: "a=db1&b=shop@latest", token: bob).status == .notFound)
            // A schema that cannot be read is a conflict that says why.
            api.fake.set(.query, .fail("instance not answering"))
            let r = try await api.get("/v1/diff", query: "a=db1&b=shop@latest", token: ann)
            #expect(r.status == .conflict && r.text.contains("instance not answering"), "\(r.text)")
        }
    }
}

/// /v1/admin/foreign-objects: what the last reconcile found of other installations (admins only).
@Suite struct AdminTests {
    @Test func foreignObjectsFromReconcile() async throws {
        try await withAPI({ $0.reconcileIntervalSeconds = 0; $0.reapIntervalSeconds = 0.02 }) { api in
            #expect(try await api.get("/v1/admin/foreign-objects", token: api.admin).status == .ok)
            api.fake.setForeign(["installation old: pod/devdb-db1"])
            let items = try await waitFor("reconcile reports it") {
                let r = try await api.get("/v1/admin/foreign-objects", token: api.admin)
                struct Items: Decodable { var items: [String] }
                let items = try JSONDecoder().decode(Items.self, from: r.body).items
                return items.isEmpty ? nil : items
            }
            #expect(items == ["installation old: pod/devdb-db1"])
            #expect(try await api.get("/v1/admin/foreign-objects", token: try await api.token(for: "ann")).status == .forbidden)
            #expect(try await api.get("/v1/admin/foreign-objects", token: nil).status == .unauthorized)
        }
    }
}
