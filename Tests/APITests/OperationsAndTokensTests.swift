import DevDBAPIContract
import Foundation
import Testing

/// The routes without a token (health, readiness, metrics, the document) and the token routes.
@Suite struct OperationsTests {
    @Test func healthAndReadiness() async throws {
        try await withAPI { api in
            let health = try await api.get("/healthz", token: nil)
            #expect(health.status == .ok && health.text == "ok\n")
            // The memory store always answers; with Redis down the end-to-end suite sees 503.
            let ready = try await api.get("/readyz", token: nil)
            #expect(ready.status == .ok && ready.text == "ready\n")
        }
    }

    @Test func metricsCountDatabasesByState() async throws {
        try await withAPI { api in
            let user = try await api.token(for: "ann")
            try await api.readyProject("shop")
            try await api.readyDatabase("ann-shop", project: "shop", token: user)
            let m = try await api.get("/metrics", token: nil)
            #expect(m.status == .ok)
            #expect(m.text.contains("devdb_api_databases{state=\"ready\"} 1\n"))
            #expect(m.text.contains("devdb_api_foreign_installations 0\n"))
        }
    }

    @Test func openAPIDocumentNamesTheRequestsAddress() async throws {
        try await withAPI { api in
            let r = try await api.call(.get, "/openapi.yaml", token: nil, headers: [.init("X-Forwarded-Proto")!: "https"])
            #expect(r.status == .ok)
            #expect(r.text.hasPrefix("openapi:"))
            #expect(r.text.contains("  - url: https://localhost\n"))
        }
    }
}

/// Authentication on /v1 (401 without or with a bad token) and /v1/whoami.
@Suite struct AuthenticationTests {
    @Test func v1RefusesMissingAndUnknownTokens() async throws {
        try await withAPI { api in
            for token in [nil, "ddb_not-a-token", ""] as [String?] {
                let r = try await api.get("/v1/whoami", token: token)
                #expect(r.status == .unauthorized, "token \(token ?? "none")")
                #expect(r.code == "unauthorized")
            }
            // Not a Bearer credential at all.
            let basic = try await api.call(.get, "/v1/projects", token: nil, headers: [.authorization: "Basic YWRtaW46eA=="])
            #expect(basic.status == .unauthorized)
        }
    }

    @Test func whoamiNamesTheCaller() async throws {
        try await withAPI { api in
            let me = try await api.get("/v1/whoami", token: api.admin).decode(WhoAmIView.self)
            #expect(me.user == "admin" && me.admin && me.auth == "token")
            let ann = try await api.get("/v1/whoami", token: try await api.token(for: "ann")).decode(WhoAmIView.self)
            #expect(ann.user == "ann" && !ann.admin)
        }
    }

    @Test func adminTokenFromTheDataDirectoryWhenNoneIsConfigured() async throws {
        // With no configured token the app generates one into <data-dir>/admin-token (0600) and uses it.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("devdb-apitests-admin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try await withAPI({ $0.adminToken = nil; $0.dataDirectory = dir }) { api in
            let file = dir.appendingPathComponent("admin-token")
            let token = try String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(token.hasPrefix("ddb_"))
            let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            #expect(try await api.get("/v1/whoami", token: token).decode(WhoAmIView.self).admin)
            #expect(try await api.get("/v1/whoami", token: api.admin).status == .unauthorized)
        }
    }
}

/// /v1/tokens: admins only.
@Suite struct TokensTests {
    @Test func adminCreatesListsAndRevokesTokens() async throws {
        try await withAPI { api in
            let created = try await api.post("/v1/tokens", token: api.admin, json: #"{"user": "ann"}"#)
            #expect(created.status == .created)
            let view = try created.decode(TokenView.self)
            let secret = try #require(view.token)
            #expect(view.user == "ann" && !view.admin)
            #expect(try await api.get("/v1/whoami", token: secret).status == .ok)

            let list = try await api.get("/v1/tokens", token: api.admin).decode(ItemList<TokenView>.self)
            #expect(list.items.contains { $0.id == view.id && $0.token == nil }, "a list never shows secrets")

            #expect(try await api.delete("/v1/tokens/{id}", view.id, token: api.admin).status == .noContent)
            #expect(try await api.get("/v1/whoami", token: secret).status == .unauthorized)
        }
    }

    @Test func nonAdminsAreRefused() async throws {
        try await withAPI { api in
            let ann = try await api.token(for: "ann")
            #expect(try await api.get("/v1/tokens", token: ann).status == .forbidden)
            #expect(try await api.post("/v1/tokens", token: ann, json: #"{"user": "bob"}"#).status == .forbidden)
            #expect(try await api.delete("/v1/tokens/{id}", "whatever", token: ann).status == .forbidden)
            #expect(try await api.get("/v1/tokens", token: nil).status == .unauthorized)
            #expect(try await api.post("/v1/tokens", token: "ddb_bad", json: #"{"user": "bob"}"#).status == .unauthorized)
            #expect(try await api.delete("/v1/tokens/{id}", "whatever", token: nil).status == .unauthorized)
        }
    }

    @Test func badInputIsRefused() async throws {
        try await withAPI { api in
            for body in [#"{"user": "Not A Label"}"#, #"{"user": "admin"}"#, #"{}"#, "not json", #"{"user": 3}"#] {
                let r = try await api.post("/v1/tokens", token: api.admin, json: body)
                #expect(r.status == .badRequest, "\(body): \(r.text)")
            }
            #expect(try await api.call(.post, "/v1/tokens", token: api.admin).status == .badRequest, "no body")
            // The configured admin token is not revoked through the API.
            #expect(try await api.delete("/v1/tokens/{id}", "admin", token: api.admin).status == .badRequest)
        }
    }
}
