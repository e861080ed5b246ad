import DevDBAPIContract
import Foundation
import Testing

/// /v1/projects: admins create, change, refresh and delete; every caller may look.
@Suite struct ProjectsTests {
    @Test func adminCreatesAProjectAndItsFirstGenerationIsSeeded() async throws {
        try await withAPI { api in
            let p = try await api.readyProject("shop")
            #expect(p.postgres == 15, "the dump's own major")
            #expect(p.generations.map(\.number) == [1])
            #expect(api.fake.calls(.seed) == ["shop"])
            let list = try await api.get("/v1/projects", token: try await api.token(for: "ann")).decode(ItemList<ProjectView>.self)
            #expect(list.items.map(\.name) == ["shop"])
            #expect(list.items[0].dumpUrl == nil, "only admins see where dumps live")
        }
    }

    @Test func aFailedSeedFailsTheGenerationWithTheProvisionersWords() async throws {
        try await withAPI { api in
            api.fake.set(.seed, .fail("the dump is corrupt"))
            #expect(try await api.post("/v1/projects", token: api.admin, json: #"{"name": "shop", "dump_url": "\#(try api.dumpURL())"}"#).status == .accepted)
            let g = try await waitFor("generation failed") {
                try await api.get("/v1/projects/{name}", "shop", token: api.admin).decode(ProjectView.self).generations.first { $0.state == "failed" }
            }
            #expect(g.reason?.contains("the dump is corrupt") == true)
        }
    }

    @Test func createRefusals() async throws {
        try await withAPI { api in
            let ann = try await api.token(for: "ann")
            let body = #"{"name": "shop", "dump_url": "\#(try api.dumpURL())"}"#
            #expect(try await api.post("/v1/projects", token: nil, json: body).status == .unauthorized)
            #expect(try await api.post("/v1/projects", token: ann, json: body).status == .forbidden)
            for bad in [#"{"name": "Shop!", "dump_url": "file:///x.sql"}"#, #"{"name": "shop", "dump_url": "ftp://host/x"}"#,
                        #"{"name": "shop"}"#, #"{"name": "shop", "dump_url": "file:///x.sql", "postgres": 12}"#,
                        #"{"name": "shop", "dump_url": "file:///x.sql", "keep_generations": 0}"#,
                        #"{"name": "shop", "dump_url": "file:///x.sql", "refresh_schedule": "every day"}"#] {
                let r = try await api.post("/v1/projects", token: api.admin, json: bad)
                #expect(r.status == .badRequest, "\(bad): \(r.text)")
            }
            try await api.readyProject("shop")
            let again = try await api.post("/v1/projects", token: api.admin, json: body)
            #expect(again.status == .conflict, "\(again.text)")
        }
    }

    @Test func showAndItsRefusals() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            let p = try await api.get("/v1/projects/{name}", "shop", token: ann)
            #expect(p.status == .ok)
            #expect(try p.decode(ProjectView.self).name == "shop")
            #expect(try await api.get("/v1/projects/{name}", "nope", token: ann).status == .notFound)
            #expect(try await api.get("/v1/projects/{name}", "shop", token: nil).status == .unauthorized)
            #expect(try await api.get("/v1/projects", token: "ddb_bad").status == .unauthorized)
        }
    }

    @Test func updateChangesSettingsForAdminsOnly() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let r = try await api.patch("/v1/projects/{name}", "shop", token: api.admin,
                                        json: #"{"keep_generations": 3, "refresh_schedule": "0 3 * * *", "after_restore_sql": "UPDATE users SET email = 'x'"}"#)
            #expect(r.status == .ok, "\(r.text)")
            let p = try r.decode(ProjectView.self)
            #expect(p.keepGenerations == 3 && p.refreshSchedule == "0 3 * * *" && p.masks)
            let ann = try await api.token(for: "ann")
            #expect(try await api.patch("/v1/projects/{name}", "shop", token: ann, json: #"{"keep_generations": 2}"#).status == .forbidden)
            #expect(try await api.patch("/v1/projects/{name}", "shop", token: nil, json: #"{"keep_generations": 2}"#).status == .unauthorized)
            #expect(try await api.patch("/v1/projects/{name}", "nope", token: api.admin, json: #"{"keep_generations": 2}"#).status == .notFound)
            #expect(try await api.patch("/v1/projects/{name}", "shop", token: api.admin, json: #"{"keep_generations": 0}"#).status == .badRequest)
            let long = String(repeating: "x", count: 300_000)
            #expect(try await api.patch("/v1/projects/{name}", "shop", token: api.admin, json: #"{"after_restore_sql": "\#(long)"}"#).status == .badRequest)
        }
    }

    @Test func refreshMakesANewGeneration() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let r = try await api.post("/v1/projects/{name}/refresh", "shop", token: api.admin)
            #expect(r.status == .accepted, "\(r.text)")
            #expect(try r.decode(GenerationView.self).number == 2)
            _ = try await waitFor("generation 2 ready") {
                try await api.get("/v1/projects/{name}", "shop", token: api.admin).decode(ProjectView.self)
                    .generations.first { $0.number == 2 && $0.state == "ready" }
            }
            let ann = try await api.token(for: "ann")
            #expect(try await api.post("/v1/projects/{name}/refresh", "shop", token: ann).status == .forbidden)
            #expect(try await api.post("/v1/projects/{name}/refresh", "shop", token: nil).status == .unauthorized)
            #expect(try await api.post("/v1/projects/{name}/refresh", "nope", token: api.admin).status == .notFound)
        }
    }

    @Test func deleteRemovesTheProjectButNotWhileDatabasesUseIt() async throws {
        try await withAPI { api in
            try await api.readyProject("shop")
            let ann = try await api.token(for: "ann")
            try await api.readyDatabase("ann-shop", project: "shop", token: ann)
            #expect(try await api.delete("/v1/projects/{name}", "shop", token: ann).status == .forbidden)
            #expect(try await api.delete("/v1/projects/{name}", "shop", token: nil).status == .unauthorized)
            let busy = try await api.delete("/v1/projects/{name}", "shop", token: api.admin)
            #expect(busy.status == .conflict, "\(busy.text)")

            #expect(try await api.delete("/v1/databases/{name}", "ann-shop", token: ann).status == .accepted)
            _ = try await waitFor("database gone") {
                try await api.get("/v1/databases/{name}", "ann-shop", token: ann).status == .notFound ? true : nil
            }
            #expect(try await api.delete("/v1/projects/{name}", "shop", token: api.admin).status == .noContent)
            #expect(try await api.get("/v1/projects/{name}", "shop", token: api.admin).status == .notFound)
            #expect(try await api.delete("/v1/projects/{name}", "shop", token: api.admin).status == .notFound)
        }
    }
}
