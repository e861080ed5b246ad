import DevDBAPIContract
import Foundation
import Testing

/// /v1/databases: each caller's own databases (admins: everyone's); create → ready runs through
/// the control plane's worker and the fake provisioner.
@Suite struct DatabasesTests {
    @Test func createBecomesReadyAndShowsItsConnection() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            let r = try await api.post("/v1/databases", token: ann, json: #"{"name": "ann-shop", "project": "shop", "ttl": "8h"}"#)
            #expect(r.status == .accepted, "\(r.text)")
            let accepted = try r.decode(DatabaseView.self)
            #expect(accepted.owner == "ann" && accepted.password != nil)
            let d = try await api.database("ann-shop", reaches: "ready", token: ann)
            #expect(d.generation == 1 && d.cloneMethod == "fake" && d.expiresAt != nil)
            #expect(api.fake.calls(.create) == ["ann-shop"])
        }
    }

    @Test func aFailedCreateSaysWhy() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            api.fake.set(.create, .fail("no space left on device"))
            #expect(try await api.post("/v1/databases", token: api.admin, json: #"{"name": "db1", "project": "shop"}"#).status == .accepted)
            let d = try await api.database("db1", reaches: "failed")
            #expect(d.reason?.contains("no space left on device") == true)
        }
    }

    @Test func generatedNameWhenNoneIsGiven() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            let d = try await api.post("/v1/databases", token: ann, json: #"{"project": "shop"}"#).decode(DatabaseView.self)
            #expect(d.name.hasPrefix("ann-shop-"))
        }
    }

    @Test func createRefusals() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            let body = #"{"name": "db1", "project": "shop"}"#
            #expect(try await api.post("/v1/databases", token: nil, json: body).status == .unauthorized)
            let cases: [(String, Int)] = [
                (#"{"name": "db1", "project": "nope"}"#, 404),
                (#"{"name": "DB 1", "project": "shop"}"#, 400),
                (#"{"name": "db1"}"#, 400),
                (#"{"name": "db1", "project": "shop", "ttl": "forever"}"#, 400),
                (#"{"name": "db1", "project": "shop", "ttl": "1000d"}"#, 400),
                (#"{"name": "db1", "project": "shop", "hibernate_after": "soon"}"#, 400),
                (#"{"name": "db1", "from": "@x"}"#, 400),
                (#"{"name": "db1", "from": "other"}"#, 404),
                // Schema-only needs the local provisioner (real Postgres): the end-to-end suite runs it.
                (#"{"name": "db1", "project": "shop", "schema_only": true}"#, 409),
                ("[]", 400),
            ]
            for (json, status) in cases {
                let r = try await api.post("/v1/databases", token: ann, json: json)
                #expect(r.status.code == status, "\(json): \(r.text)")
            }
            try await api.readyDatabase("db1", project: "shop", token: ann)
            // Names are unique in the installation, whoever asks.
            let bob = try await api.token(for: "bob")
            #expect(try await api.post("/v1/databases", token: bob, json: body).status == .conflict)
            // Another user's database is not a branch origin: it does not exist for them.
            #expect(try await api.post("/v1/databases", token: bob, json: #"{"name": "db2", "from": "db1"}"#).status == .notFound)
            #expect(try await api.post("/v1/databases", token: ann, json: #"{"name": "db2", "from": "db1@nosnap"}"#).status == .notFound)
            #expect(try await api.post("/v1/databases", token: ann, json: #"{"name": "db2", "from": "db1", "schema_only": true}"#).status == .badRequest)
        }
    }

    @Test func branchFromTheStateNowTakesASnapshotFirst() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            let r = try await api.post("/v1/databases", token: ann, json: #"{"name": "db2", "from": "db1"}"#)
            #expect(r.status == .accepted, "\(r.text)")
            let d = try await api.database("db2", reaches: "ready", token: ann)
            #expect(d.base?.hasPrefix("db1@") == true)
            #expect(api.fake.calls(.snapshot).count == 1)
        }
    }

    @Test func listShowsOwnDatabasesAndAdminsSeeAll() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann"), bob = try await api.token(for: "bob")
            try await api.readyDatabase("ann-db", project: "shop", token: ann)
            try await api.readyDatabase("bob-db", project: "shop", token: bob)
            #expect(try await api.get("/v1/databases", token: ann).decode(ItemList<DatabaseView>.self).items.map(\.name) == ["ann-db"])
            let all = try await api.get("/v1/databases", token: api.admin).decode(ItemList<DatabaseView>.self).items
            #expect(Set(all.map(\.name)) == ["ann-db", "bob-db"])
            #expect(all.allSatisfy { $0.password == nil }, "a list never shows passwords")
            let byOwner = try await api.get("/v1/databases", query: "owner=bob&state=ready&project=shop", token: api.admin)
            #expect(try byOwner.decode(ItemList<DatabaseView>.self).items.map(\.name) == ["bob-db"])
            #expect(try await api.get("/v1/databases", query: "state=sleepy", token: ann).status == .badRequest)
            #expect(try await api.get("/v1/databases", query: "project=nope", token: ann).status == .notFound)
            #expect(try await api.get("/v1/databases", token: nil).status == .unauthorized)
        }
    }

    @Test func anotherUsersDatabaseIsNotFoundOnEveryRoute() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann"), bob = try await api.token(for: "bob")
            try await api.readyDatabase("ann-db", project: "shop", token: ann)
            let replies = [
                try await api.get("/v1/databases/{name}", "ann-db", token: bob),
                try await api.patch("/v1/databases/{name}", "ann-db", token: bob, json: #"{"ttl": "1h"}"#),
                try await api.delete("/v1/databases/{name}", "ann-db", token: bob),
                try await api.post("/v1/databases/{name}/reset", "ann-db", token: bob),
                try await api.post("/v1/databases/{name}/stop", "ann-db", token: bob),
                try await api.post("/v1/databases/{name}/start", "ann-db", token: bob),
                try await api.get("/v1/databases/{name}/snapshots", "ann-db", token: bob),
                try await api.post("/v1/databases/{name}/snapshots", "ann-db", token: bob),
            ]
            for r in replies { #expect(r.status == .notFound, "\(r.text)") }
            // Admins reach everyone's; the owner's database is untouched by bob's calls.
            #expect(try await api.get("/v1/databases/{name}", "ann-db", token: api.admin).status == .ok)
            #expect(try await api.get("/v1/databases/{name}", "ann-db", token: ann).decode(DatabaseView.self).state == "ready")
            #expect(api.fake.calls(.delete).isEmpty && api.fake.calls(.stop).isEmpty && api.fake.calls(.reset).isEmpty)
        }
    }

    @Test func unknownDatabaseAndNoTokenOnEveryRoute() async throws {
        try await withAPI { api in
            let ann = try await api.token(for: "ann")
            for token in [ann, nil] as [String?] {
                let want: Int = token == nil ? 401 : 404
                let replies = [
                    try await api.get("/v1/databases/{name}", "nope", token: token),
                    try await api.patch("/v1/databases/{name}", "nope", token: token, json: #"{"ttl": "1h"}"#),
                    try await api.delete("/v1/databases/{name}", "nope", token: token),
                    try await api.post("/v1/databases/{name}/reset", "nope", token: token),
                    try await api.post("/v1/databases/{name}/stop", "nope", token: token),
                    try await api.post("/v1/databases/{name}/start", "nope", token: token),
                ]
                for r in replies { #expect(r.status.code == want, "\(r.text)") }
            }
        }
    }

    @Test func updateChangesTTLAndHibernation() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            let r = try await api.patch("/v1/databases/{name}", "db1", token: ann, json: #"{"ttl": "2h", "hibernate_after": "never"}"#)
            #expect(r.status == .ok, "\(r.text)")
            let d = try r.decode(DatabaseView.self)
            let left = try #require(d.expiresAt).timeIntervalSinceNow
            #expect(left > 7000 && left <= 7200)
            for bad in [#"{}"#, #"{"ttl": "0s"}"#, #"{"ttl": "1000d"}"#, #"{"hibernate_after": "later"}"#, #"{"ttl": 5}"#] {
                #expect(try await api.patch("/v1/databases/{name}", "db1", token: ann, json: bad).status == .badRequest, "\(bad)")
            }
        }
    }

    @Test func deleteRemovesTheInstance() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            let r = try await api.delete("/v1/databases/{name}", "db1", token: ann)
            #expect(r.status == .accepted, "\(r.text)")
            _ = try await waitFor("db1 gone") { try await api.get("/v1/databases/{name}", "db1", token: ann).status == .notFound ? true : nil }
            #expect(api.fake.calls(.delete) == ["db1"])
        }
    }

    @Test func resetToTheLatestGenerationOrASnapshot() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            let r = try await api.post("/v1/databases/{name}/reset", "db1", token: ann, json: #"{"latest": true}"#)
            #expect(r.status == .accepted, "\(r.text)")
            try await waitFor("reset done") { api.fake.calls(.reset) == ["db1"] ? true : nil }
            try await api.database("db1", reaches: "ready", token: ann)

            #expect(try await api.post("/v1/databases/{name}/snapshots", "db1", token: ann, json: #"{"name": "s1"}"#).status == .accepted)
            try await api.snapshot("db1", "s1", reaches: "ready", token: ann)
            try await api.database("db1", reaches: "ready", token: ann)
            #expect(try await api.post("/v1/databases/{name}/reset", "db1", token: ann, json: #"{"to": "s1"}"#).status == .accepted)
            try await waitFor("second reset") { api.fake.calls(.reset).count == 2 ? true : nil }

            #expect(try await api.post("/v1/databases/{name}/reset", "db1", token: ann, json: #"{"to": "nope"}"#).status == .notFound)
            #expect(try await api.post("/v1/databases/{name}/reset", "db1", token: ann, json: #"{"to": "s1", "latest": true}"#).status == .badRequest)
        }
    }

    @Test func stopAndStartHibernateAndWake() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("db1", project: "shop", token: ann)
            #expect(try await api.post("/v1/databases/{name}/stop", "db1", token: ann).status == .accepted)
            try await api.database("db1", reaches: "hibernated", token: ann)
            #expect(api.fake.calls(.stop) == ["db1"])
            #expect(try await api.post("/v1/databases/{name}/start", "db1", token: ann).status == .accepted)
            try await api.database("db1", reaches: "ready", token: ann)
            #expect(api.fake.calls(.start) == ["db1"])
        }
    }

    @Test func lifecycleConflictsWhileACreateRuns() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            api.fake.set(.create, .hang)
            #expect(try await api.post("/v1/databases", token: ann, json: #"{"name": "db1", "project": "shop"}"#).status == .accepted)
            try await waitFor("create started") { api.fake.calls(.create).isEmpty ? nil : true }
            // A database being made cannot be stopped, snapshotted or diffed yet.
            let stop = try await api.post("/v1/databases/{name}/stop", "db1", token: ann)
            #expect(stop.status == .conflict, "\(stop.text)")
            let snap = try await api.post("/v1/databases/{name}/snapshots", "db1", token: ann)
            #expect(snap.status == .conflict, "\(snap.text)")
            let diff = try await api.get("/v1/diff", query: "a=db1&b=shop@latest", token: ann)
            #expect(diff.status == .conflict, "\(diff.text)")
            api.fake.release(.create)
            try await api.database("db1", reaches: "ready", token: ann)
        }
    }
}
