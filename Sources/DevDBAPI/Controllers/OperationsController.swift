import DevDBCatalog
import Foundation
import Hummingbird

/// Health, readiness, metrics and the OpenAPI document: no token needed.
struct OperationsController {
    let plane: LifecycleRequests

    func addRoutes(to router: Router<APIRequestContext>) {
        router.get("/healthz") { _, _ in "ok\n" }
        router.get("/readyz", use: ready)
        router.get("/openapi.yaml", use: document)
        router.get("/metrics", use: metrics)
    }

    @Sendable func ready(_ request: Request, context: APIRequestContext) async throws -> Response {
        do {
            try await plane.catalog.ping()
            return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: "ready\n")))
        } catch {
            return Response(status: .serviceUnavailable, body: .init(byteBuffer: ByteBuffer(string: "redis unavailable\n")))
        }
    }

    @Sendable func document(_ request: Request, context: APIRequestContext) async throws -> Response {
        let url = Bundle.module.url(forResource: "openapi", withExtension: "yaml")!
        var headers = HTTPFields()
        headers[.contentType] = "application/yaml"
        // `servers` names the address the document was fetched from (behind a proxy: its host and scheme).
        var text = try String(contentsOf: url, encoding: .utf8)
        if let host = request.head.authority {
            let scheme = request.headers.first { $0.name.canonicalName == "x-forwarded-proto" }?.value ?? "http"
            text = text.replacingOccurrences(of: "  - url: \(openAPIDefaultServer)\n", with: "  - url: \(scheme)://\(host)\n")
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    @Sendable func metrics(_ request: Request, context: APIRequestContext) async throws -> Response {
        var text = "# HELP devdb_api_databases Databases by state.\n# TYPE devdb_api_databases gauge\n"
        let counts = (try? await plane.catalog.databaseStateCounts()) ?? [:]  // one read, not every record
        for state in DatabaseRecord.State.allCases {
            text += "devdb_api_databases{state=\"\(state.rawValue)\"} \(counts[state] ?? 0)\n"
        }
        text += "# HELP devdb_api_jobs_total Background jobs by outcome.\n# TYPE devdb_api_jobs_total counter\n"
        for (k, v) in plane.context.counters.withLock({ $0 }).sorted(by: { $0.key < $1.key }) { text += "devdb_api_jobs_total{job=\"\(k)\"} \(v)\n" }
        let passes = plane.context.passes.withLock { $0 }.sorted { $0.key < $1.key }
        text += "# HELP devdb_api_pass_seconds The last pass of the reaper (hibernator, expiry) and of reconcile.\n# TYPE devdb_api_pass_seconds gauge\n"
        for (k, v) in passes { text += "devdb_api_pass_seconds{pass=\"\(k)\"} \(v.seconds)\n" }
        text += "# HELP devdb_api_pass_redis_round_trips Redis round trips of the process during the last pass.\n# TYPE devdb_api_pass_redis_round_trips gauge\n"
        for (k, v) in passes { text += "devdb_api_pass_redis_round_trips{pass=\"\(k)\"} \(v.roundTrips)\n" }
        text += "# HELP devdb_api_foreign_installations Other installations whose objects the last reconcile found in the namespace (kept, never deleted).\n# TYPE devdb_api_foreign_installations gauge\n"
        text += "devdb_api_foreign_installations \(plane.context.foreignObjects.withLock { $0.count })\n"
        return Response(status: .ok, body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
