import DevDBAPIContract
import DevDBCatalog
import Foundation
import Hummingbird

/// /v1/databases/{name}/operations: a database's finished operations, newest first, from the
/// catalog's bounded history (its owner or admins, as `show`).
struct DatabaseHistoryController {
    let plane: LifecycleRequests
    var catalog: any CatalogStore { plane.catalog }

    func addRoutes(to group: RouterGroup<APIRequestContext>) {
        group.get(use: list)
    }

    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> Response {
        let d = try await visibleDatabase(catalog, try context.parameters.require("name"), try context.requireCaller())
        var limit = OperationHistory.maxEntries
        if let text = request.uri.queryParameters.get("limit") {
            guard let n = Int(text), (1...OperationHistory.maxEntries).contains(n) else {
                throw APIError.badRequest("limit must be a number from 1 to \(OperationHistory.maxEntries)", hint: "leave it out for all that are kept")
            }
            limit = n
        }
        let items = try await catalog.operations(of: d.name, limit: limit).map(OperationView.init)
        return try jsonResponse(ItemList(items: items))
    }
}

extension OperationView {
    init(_ o: OperationRecord) {
        self.init()
        id = o.id; kind = o.kind.rawValue; target = o.target; startedAt = o.startedAt; finishedAt = o.finishedAt
        seconds = (o.seconds * 1000).rounded() / 1000; outcome = o.outcome.rawValue; reason = o.reason
    }
}
