import DevDBAPIContract
import DevDBCatalog
import Foundation
import Testing

/// /v1/databases/{name}/operations: a database's finished operations, newest first, with how
/// long each took and why a failed one failed; its owner's and admins', as `show`.
@Suite struct OperationHistoryTests {
    @Test func finishedOperationsNewestFirstWithTheFailureReason() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann"), bob = try await api.token(for: "bob")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            api.fake.set(.snapshot, .fail("disk full"))
            #expect(try await api.post("/v1/databases/{name}/snapshots", "db1", token: ann, json: #"{"name": "s1"}"#).status == .accepted)
            _ = try await api.snapshot("db1", "s1", reaches: "failed", token: ann)
            let ops = try await waitFor("two finished operations") { () -> [OperationView]? in
                let r = try await api.get("/v1/databases/{name}/operations", "db1", token: ann)
                #expect(r.status == .ok, "\(r.text)")
                let items = try r.decode(ItemList<OperationView>.self).items
                return items.count >= 2 ? items : nil
            }
            #expect(ops.map(\.kind) == ["snapshot", "create"])
            #expect(ops[0].outcome == "failed" && ops[0].reason?.contains("disk full") == true && ops[0].target == "s1", "\(ops[0])")
            #expect(ops[1].outcome == "succeeded" && ops[1].reason == nil)
            #expect(ops.allSatisfy { $0.seconds >= 0 && $0.finishedAt >= $0.startedAt })
            let one = try await api.get("/v1/databases/{name}/operations", "db1", query: "limit=1", token: ann).decode(ItemList<OperationView>.self)
            #expect(one.items.map(\.kind) == ["snapshot"])
            // Owner or admins only; bad limits say what to do.
            #expect(try await api.get("/v1/databases/{name}/operations", "db1", token: bob).status == .notFound)
            #expect(try await api.get("/v1/databases/{name}/operations", "db1", token: nil).status == .unauthorized)
            #expect(try await api.get("/v1/databases/{name}/operations", "db1", token: api.admin).status == .ok)
            #expect(try await api.get("/v1/databases/{name}/operations", "db1", query: "limit=0", token: ann).status == .badRequest)
            #expect(try await api.get("/v1/databases/{name}/operations", "db1", query: "limit=abc", token: ann).status == .badRequest)
            #expect(try await api.get("/v1/databases/{name}/operations", "db1", query: "limit=\(OperationHistory.maxEntries + 1)", token: ann).status == .badRequest)
            #expect(try await api.get("/v1/databases/{name}/operations", "db1", query: "limit=\(OperationHistory.maxEntries)", token: ann).status == .ok)
            #expect(try await api.get("/v1/databases/{name}/operations", "nope", token: ann).status == .notFound)
        }
    }

    @Test func theHistoryGoesWithTheDatabase() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            _ = try await waitFor("the create recorded") { try await api.store.operations(of: "db1", limit: 50).isEmpty ? nil : true }
            #expect(try await api.delete("/v1/databases/{name}", "db1", token: ann).status == .accepted)
            _ = try await waitFor("db1 gone") { try await api.get("/v1/databases/{name}", "db1", token: ann).status == .notFound ? true : nil }
            #expect(try await api.store.operations(of: "db1", limit: 50).isEmpty)
            // A new database of the same name starts with its own history only.
            try await api.readyDatabase("db1", project: "shop", token: ann)
            let ops = try await waitFor("the new create recorded") { () -> [OperationView]? in
                let items = try await api.get("/v1/databases/{name}/operations", "db1", token: ann).decode(ItemList<OperationView>.self).items
                return items.isEmpty ? nil : items
            }
            #expect(ops.map(\.kind) == ["create"])
        }
    }
}
