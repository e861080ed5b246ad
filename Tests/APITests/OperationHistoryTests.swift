import DevDBAPIContract
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
            #expect(try await api.get("/v1/databases/{name}/operations", "nope", token: ann).status == .notFound)
        }
    }
}
