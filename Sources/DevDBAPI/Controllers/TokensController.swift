import DevDBAPIContract
import DevDBCatalog
import Foundation
import Hummingbird

/// /v1/tokens: admins only.
struct TokensController {
    let catalog: any CatalogStore

    func addRoutes(to group: RouterGroup<APIRequestContext>) {
        group.get(use: list)
        group.post(use: create)
        group.delete(":id", use: revoke)
    }

    @Sendable func create(_ request: Request, context: APIRequestContext) async throws -> Response {
        try context.requireAdmin()
        let b = try await decodeBody(CreateTokenRequest.self, request)
        try checkName(b.user, what: "user")
        // "admin" names the configured admin token; a plain user of that name would be confused with it.
        guard b.user != "admin" else {
            throw APIError.badRequest("\"admin\" is reserved for the configured admin token", hint: "choose another user name")
        }
        let (token, record) = try await catalog.createToken(user: b.user, admin: b.admin ?? false)
        return try jsonResponse(TokenView(record, token: token), status: .created)
    }

    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> Response {
        try context.requireAdmin()
        return try jsonResponse(ItemList(items: try await catalog.tokens().map { TokenView($0) }))
    }

    @Sendable func revoke(_ request: Request, context: APIRequestContext) async throws -> Response {
        try context.requireAdmin()
        let id = try context.parameters.require("id")
        guard id != "admin" else { throw APIError.badRequest("the admin token is configured, not revoked", hint: "change --admin-token-file and restart") }
        try await catalog.revokeToken(id: id)
        return Response(status: .noContent)
    }
}
