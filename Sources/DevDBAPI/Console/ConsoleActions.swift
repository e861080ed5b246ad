import DevDBAPIContract
import Foundation
import Hummingbird

/// The console's actions: plain form posts (the session middleware has checked the CSRF token),
/// each turned into the JSON API's own request body and handed to its controller function, then
/// a 303 back to a page.
extension WebConsole {
    @Sendable func createDatabase(_ request: Request, context: APIRequestContext) async throws -> Response {
        let form = try await formFields(request)
        var b = CreateDatabaseRequest()
        b.name = nonEmpty(form["name"])
        b.from = nonEmpty(form["from"])
        // A branch belongs to its origin's project: the project field goes with a new copy only.
        b.project = b.from == nil ? nonEmpty(form["project"]) : nil
        b.ttl = nonEmpty(form["ttl"])
        b.hibernateAfter = nonEmpty(form["hibernate_after"])
        let d = try await api.call(DatabaseView.self, api.databases.create, context, method: .post, path: "/v1/databases", body: b)
        return redirect("/databases/\(d.name)?done=created")
    }

    /// wake, sleep, reset, snapshot, settings (TTL, sleep) and delete of the database in the path.
    func act(_ action: String, _ request: Request, _ context: APIRequestContext) async throws -> Response {
        let name = try context.parameters.require("name")
        let form = try await formFields(request)
        let page = "/databases/\(name)"
        switch action {
        case "start": try await api.perform(api.databases.start, context)
        case "stop": try await api.perform(api.databases.stop, context)
        case "reset":
            var b = ResetRequest()
            switch form["to"] ?? "" {
            case "", "current": break
            case "latest": b.latest = true
            case let snap: b.to = snap
            }
            try await api.perform(api.databases.reset, context, body: b)
        case "snapshot":
            var b = CreateSnapshotRequest()
            b.name = nonEmpty(form["snapshot"])
            try await api.perform(api.snapshots.take, context, body: b)
        case "update":
            var b = UpdateDatabaseRequest()
            b.ttl = nonEmpty(form["ttl"])
            b.hibernateAfter = nonEmpty(form["hibernate_after"])
            try await api.perform(api.databases.update, context, method: .patch, body: b)
        case "delete":
            // Typing the name guards against deleting the wrong one; the API decides whether it may.
            guard form["confirm"] == name else {
                _ = try await api.call(DatabaseView.self, api.databases.show, context)  // not visible → 404, as the API says
                throw APIError.badRequest("type the database's name (\(name)) to confirm deleting it", hint: "go back and type it into the confirmation field")
            }
            try await api.perform(api.databases.delete, context, method: .delete)
            return redirect("/?done=deleted")
        default:
            throw APIError.notFound("console action \"\(action)\"")
        }
        return redirect("\(page)?done=\(action)")
    }

    @Sendable func deleteSnapshot(_ request: Request, context: APIRequestContext) async throws -> Response {
        let name = try context.parameters.require("name")
        try await api.perform(api.snapshots.delete, context, method: .delete)
        return redirect("/databases/\(name)?done=snapdeleted")
    }

    @Sendable func refreshProject(_ request: Request, context: APIRequestContext) async throws -> Response {
        try await api.perform(api.projects.refresh, context)
        return redirect("/projects?done=refresh")
    }

    /// A new token is shown once, on the page this post answers (never in a URL).
    @Sendable func createToken(_ request: Request, context: APIRequestContext) async throws -> Response {
        let form = try await formFields(request)
        var b = CreateTokenRequest()
        b.user = form["user"] ?? ""
        b.admin = form["admin"] == "on"
        let t = try await api.call(TokenView.self, api.tokens.create, context, method: .post, path: "/v1/tokens", body: b)
        return try render("token", title: "New token", ["user": t.user, "token": t.token ?? "", "admin": t.admin])
    }

    @Sendable func revokeToken(_ request: Request, context: APIRequestContext) async throws -> Response {
        try await api.perform(api.tokens.revoke, context, method: .delete)
        return redirect("/admin")
    }
}

func nonEmpty(_ s: String?) -> String? {
    guard let t = s?.trimmingCharacters(in: .whitespaces), !t.isEmpty else { return nil }
    return t
}
