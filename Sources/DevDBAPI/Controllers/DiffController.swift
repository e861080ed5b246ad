import DevDBAPIContract
import DevDBCatalog
import DevDBProvisioning
import DevDBSchema
import Foundation
import Hummingbird

/// /v1/diff?a=&b=: the schema difference of two sides, each a database of the caller (`NAME`),
/// one of its snapshots (`NAME@SNAP`) or a project's generation (`PROJECT@N`, `PROJECT@latest`).
/// Each side's catalog is read with one query (DevDBSchema/SchemaCatalog.swift) by the
/// provisioner: a database on its running instance; a snapshot or generation on a temporary
/// instance cloned from it (removed afterwards). The two sides are read at the same time.
struct DiffController {
    let plane: LifecycleRequests
    var catalog: any CatalogStore { plane.catalog }

    func addRoutes(to group: RouterGroup<APIRequestContext>) {
        group.get(use: diff)
    }

    @Sendable func diff(_ request: Request, context: APIRequestContext) async throws -> Response {
        let c = try context.requireCaller()
        let q = request.uri.queryParameters
        guard let a = q.get("a"), !a.isEmpty, let b = q.get("b"), !b.isEmpty else {
            throw APIError.badRequest("say which two sides to compare: ?a=...&b=...", hint: "each is a database (NAME), a snapshot (NAME@SNAP) or a generation (PROJECT@N or PROJECT@latest)")
        }
        let (targetA, labelA) = try await resolve(a, c)
        let (targetB, labelB) = try await resolve(b, c)
        async let readA = read(targetA, labelA)
        async let readB = read(targetB, labelB)
        let (modelA, modelB) = try await (readA, readB)
        var view = SchemaDiffView()
        view.a = labelA
        view.b = labelB
        view.changes = modelA.diff(to: modelB)
        view.identical = view.changes.isEmpty
        return try jsonResponse(view)
    }

    func read(_ target: QueryTarget, _ label: String) async throws -> SchemaModel {
        let out: String
        do { out = try await plane.provisioner.query(SchemaCatalog.query, on: target) } catch {
            throw APIError.conflict("cannot read the schema of \(label): \(ProvisioningError(error).userMessage)", hint: "try again when it is ready")
        }
        guard let start = out.firstIndex(of: "["), let model = try? SchemaModel.parse(Data(out[start...].utf8)) else {
            throw APIError(.internalServerError, "internal", "the schema of \(label) could not be read")
        }
        return model
    }

    func resolve(_ text: String, _ c: Caller) async throws -> (QueryTarget, String) {
        let parts = text.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard !parts[0].isEmpty, parts.count == 1 || !parts[1].isEmpty else {
            throw APIError.badRequest("invalid side \"\(text)\"", hint: "use NAME (a database), NAME@SNAP (a snapshot) or PROJECT@N / PROJECT@latest (a generation)")
        }
        if parts.count == 1 {
            let d = try await visibleDatabase(catalog, parts[0], c)
            guard d.state == .ready else {
                throw APIError.conflict("database \(d.name) is \(d.state.rawValue)", hint: d.state == .hibernated ? "wake it first: devdb db start \(d.name) --wait" : "try again when it is ready")
            }
            return (.database(d), "database \(d.name)")
        }
        let (left, right) = (parts[0], parts[1])
        // A snapshot of one of the caller's databases, else a generation of a project.
        if let d = try await catalog.database(left), c.admin || d.owner == c.user,
           let s = try await catalog.snapshot(left, right) {
            guard s.state == .ready else { throw APIError.conflict("snapshot \(s.reference) is \(s.state.rawValue)", hint: "wait until it is ready, or use another") }
            return (.source(.snapshot(s)), "snapshot \(s.reference)")
        }
        if let p = try await catalog.project(left) {
            let ready = try await catalog.generations(p.name).filter { $0.state == .ready }
            let g: Generation?
            if right == "latest" { g = ready.max { $0.number < $1.number } } else if let n = Int(right) { g = ready.first { $0.number == n } } else { g = nil }
            guard let g else {
                throw APIError.notFound("generation \(right) of project \(p.name) (ready: \(ready.map { String($0.number) }.joined(separator: ", ")))",
                                        hint: "use PROJECT@latest or a generation devdb project show \(p.name) lists as ready")
            }
            return (.source(.generation(g)), "generation \(p.name)@\(g.number)")
        }
        throw APIError.notFound("\"\(text)\": no snapshot \(right) of a database \(left) of yours and no project \(left)",
                                hint: "devdb db snapshots NAME lists snapshots, devdb project list the projects")
    }
}
