import DevDBAPIContract
import DevDBCatalog
import Foundation
import Hummingbird

/// /v1/projects: admins create and change projects; every caller may look.
struct ProjectsController {
    let plane: LifecycleRequests
    var catalog: any CatalogStore { plane.catalog }

    func addRoutes(to group: RouterGroup<APIRequestContext>) {
        group.get(use: list)
        group.post(use: create)
        group.get(":name", use: show)
        group.patch(":name", use: update)
        group.delete(":name", use: delete)
        group.post(":name/refresh", use: refresh)
    }

    @Sendable func create(_ request: Request, context: APIRequestContext) async throws -> Response {
        try context.requireAdmin()
        let b = try await decodeBody(CreateProjectRequest.self, request)
        try checkName(b.name, what: "project")
        // The major is the dump's own unless --postgres says otherwise (decided by the plane).
        var settings = Project(name: b.name, postgresMajor: b.postgres ?? 0, dumpUrl: b.dumpUrl)
        try applySettings(&settings, afterRestoreSql: b.afterRestoreSql, refreshOnChange: b.refreshOnChange,
                          refreshSchedule: b.refreshSchedule, keepGenerations: b.keepGenerations)
        let p: Project
        do { p = try await plane.createProject(settings, explicitMajor: b.postgres) } catch CatalogError.conflict(let m) {
            throw APIError.conflict(m, hint: "choose another name, or delete the project first")
        }
        return try jsonResponse(ProjectView(p, generations: try await catalog.generations(b.name), admin: true), status: .accepted)
    }

    @Sendable func update(_ request: Request, context: APIRequestContext) async throws -> Response {
        try context.requireAdmin()
        let name = try context.parameters.require("name")
        let b = try await decodeBody(UpdateProjectRequest.self, request)
        guard let p = try await catalog.updateProject(name, { p in
            try applySettings(&p, afterRestoreSql: b.afterRestoreSql, refreshOnChange: b.refreshOnChange,
                              refreshSchedule: b.refreshSchedule, keepGenerations: b.keepGenerations)
        }) else { throw APIError.notFound("project \"\(name)\"", hint: "run \"devdb project list\"") }
        return try jsonResponse(ProjectView(p, generations: try await catalog.generations(name), admin: true))
    }

    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> Response {
        let c = try context.requireCaller()
        var projects: [(Project, [Generation])] = []
        for p in try await catalog.projects() { projects.append((p, try await catalog.generations(p.name))) }
        return try jsonResponse(ItemList(items: projects.map { ProjectView($0.0, generations: $0.1, admin: c.admin) }))
    }

    @Sendable func show(_ request: Request, context: APIRequestContext) async throws -> Response {
        let c = try context.requireCaller()
        let name = try context.parameters.require("name")
        guard let p = try await catalog.project(name) else { throw APIError.notFound("project \"\(name)\"", hint: "run \"devdb project list\"") }
        return try jsonResponse(ProjectView(p, generations: try await catalog.generations(name), admin: c.admin))
    }

    @Sendable func delete(_ request: Request, context: APIRequestContext) async throws -> Response {
        try context.requireAdmin()
        try await plane.deleteProject(try context.parameters.require("name"))
        return Response(status: .noContent)
    }

    @Sendable func refresh(_ request: Request, context: APIRequestContext) async throws -> Response {
        try context.requireAdmin()
        let g = try await plane.refreshProject(try context.parameters.require("name"))
        return try jsonResponse(GenerationView(g), status: .accepted)
    }
}

/// Checks and applies project settings from a create or update body; empty text removes the
/// after-restore SQL or the schedule.
func applySettings(_ p: inout Project, afterRestoreSql: String?, refreshOnChange: Bool?, refreshSchedule: String?, keepGenerations: Int?) throws {
    if let sql = afterRestoreSql {
        guard sql.utf8.count <= Project.maxAfterRestoreSQLBytes else {
            throw APIError.badRequest("after_restore_sql has \(sql.utf8.count) bytes; at most \(Project.maxAfterRestoreSQLBytes) are allowed",
                                      hint: "keep masking SQL short: UPDATE statements with functions, not data")
        }
        p.afterRestoreSql = sql.isEmpty ? nil : sql
    }
    if let refreshOnChange { p.refreshOnChange = refreshOnChange }
    if let text = refreshSchedule {
        if text.isEmpty || text == "none" {
            p.refreshSchedule = nil
        } else {
            do { p.refreshSchedule = try CronSchedule(parsing: text).description } catch {
                throw APIError.badRequest("invalid refresh schedule: \(error.description)", hint: "five fields in UTC, e.g. \"0 3 * * *\" for 03:00 daily")
            }
            // Counted from now, not from when the project was made.
            p.lastScheduledRefresh = Date()
        }
    }
    if let k = keepGenerations {
        guard k >= 1 else { throw APIError.badRequest("keep_generations must be at least 1", hint: "the newest ready generation is always kept") }
        p.keepGenerations = k
    }
}
