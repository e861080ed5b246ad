import DevDBAPIContract
import Foundation
import HTTPTypes
import Testing

/// /v1/quotas, /v1/audit and /v1/usage (#27) in process: who may read and set what, a create
/// over a limit refused with the limit, the audit trail of a change, usage per user.
@Suite struct TeamsRoutesTests {
    @Test func quotasAreReadByTheirUserSetByAdminsAndHoldOnCreate() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            #expect(try await api.get("/v1/quotas/{user}", "ann", token: ann).status == .ok)
            #expect(try await api.get("/v1/quotas/{user}", "bob", token: ann).status == .forbidden, "another user's quota")
            #expect(try await api.get("/v1/quotas/default", token: ann).status == .ok)
            #expect(try await api.get("/v1/quotas/default", token: nil).status == .unauthorized)
            #expect(try await api.call(.put, "/v1/quotas/default", token: ann, json: #"{"databases": 5}"#).status == .forbidden)
            #expect(try await api.call(.put, "/v1/quotas/{user}", ["ann"], token: ann, json: #"{"databases": 5}"#).status == .forbidden)
            #expect(try await api.call(.put, "/v1/quotas/default", token: api.admin, json: #"{"databases": 5}"#).status == .ok)
            #expect(try await api.call(.put, "/v1/quotas/{user}", ["ann"], token: api.admin, json: #"{"databases": "many"}"#).status == .badRequest)
            let set = try await api.call(.put, "/v1/quotas/{user}", ["ann"], token: api.admin, json: #"{"databases": 1, "max_ttl": "2h"}"#)
            #expect(set.status == .ok, "\(set.text)")
            try await api.readyDatabase("ann-one", project: "shop", token: ann)
            let over = try await api.post("/v1/databases", token: ann, json: #"{"name": "ann-two", "project": "shop"}"#)
            #expect(over.status == .forbidden && over.text.contains("ann-one"), "the limit, the use and what to delete: \(over.text)")
            let tooLong = try await api.post("/v1/databases", token: ann, json: #"{"name": "ann-two", "project": "shop", "ttl": "3h"}"#)
            #expect(tooLong.status == .forbidden || tooLong.status == .badRequest, "\(tooLong.text)")
        }
    }

    @Test func theAuditLogShowsUsersTheirOwnChangesAndAdminsEveryones() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann"), bob = try await api.token(for: "bob")
            try await api.readyDatabase("ann-db", project: "shop", token: ann)
            let mine = try await api.get("/v1/audit", token: ann).decode(ItemList<AuditEntryView>.self)
            #expect(mine.items.contains { $0.action == "database.create" && $0.object == "ann-db" && $0.user == "ann" && $0.how == "token" })
            #expect(mine.items.allSatisfy { $0.user == "ann" })
            let bobs = try await api.get("/v1/audit", token: bob).decode(ItemList<AuditEntryView>.self)
            #expect(!bobs.items.contains { $0.object == "ann-db" }, "another user's entries stay hidden")
            let admins = try await api.get("/v1/audit", query: "user=ann&action=database.", token: api.admin).decode(ItemList<AuditEntryView>.self)
            #expect(admins.items.contains { $0.object == "ann-db" })
            #expect(try await api.get("/v1/audit", query: "since=yesterdayish", token: ann).status == .badRequest)
            #expect(try await api.get("/v1/audit", token: nil).status == .unauthorized)
        }
    }

    @Test func usageIsPerUserAndRefusesAnUnknownGrouping() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("ann-db", project: "shop", token: ann)
            let usage = try await api.get("/v1/usage", query: "since=1h", token: ann)
            #expect(usage.status == .ok, "\(usage.text)")
            let view = try usage.decode(UsageView.self)
            #expect(view.items.allSatisfy { $0.key == "ann" } && view.by == "user")
            #expect(try await api.get("/v1/usage", query: "by=team", token: ann).status == .badRequest)
            #expect(try await api.get("/v1/usage", query: "by=project", token: api.admin).status == .ok)
        }
    }
}
