import Foundation
import Testing

/// Every route is exercised: the routes are the OpenAPI document's (as the app serves it), checked
/// against what the router answers and against the registrations in Sources/DevDBAPI; each must be
/// called by at least one of these suites (through `API.call`, which names routes by template).
@Suite struct RouteCoverageTests {
    /// A documented operation: method and path template, as in the document.
    struct Route: Hashable, CustomStringConvertible {
        var method: String
        var path: String
        var description: String { "\(method.uppercased()) \(path)" }
    }

    static let testsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let sourcesDirectory = testsDirectory.deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Sources/DevDBAPI")

    /// The `paths` of an OpenAPI document: `  /path:` then `    method:` lines.
    static func documentedRoutes(_ yaml: String) -> Set<Route> {
        var routes = Set<Route>()
        var path: String?
        var inPaths = false
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if !line.hasPrefix(" "), !line.isEmpty { inPaths = line == "paths:"; path = nil; continue }
            guard inPaths else { continue }
            if line.hasPrefix("  /"), line.hasSuffix(":") { path = String(line.dropFirst(2).dropLast()); continue }
            if line.hasPrefix("  "), !line.hasPrefix("   ") { path = nil; continue }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if let path, line.hasPrefix("    "), !line.hasPrefix("     "),
               let method = ["get", "post", "put", "patch", "delete", "head"].first(where: { trimmed == "\($0):" }) {
                routes.insert(Route(method: method, path: path))
            }
        }
        return routes
    }

    /// The routes these suites call: `get("/…"`, `post("/…"`, … and `call(.method, "/…"`.
    static func exercisedRoutes() throws -> Set<Route> {
        let pattern = try NSRegularExpression(pattern: #"\b(?:call\(\.)?(get|post|put|patch|delete|head)(?:\(|, )"(/[^"]*)""#)
        var routes = Set<Route>()
        for file in try FileManager.default.contentsOfDirectory(atPath: testsDirectory.path)
        where file.hasSuffix(".swift") && file != "RouteCoverageTests.swift" {
            let text = try String(contentsOf: testsDirectory.appendingPathComponent(file), encoding: .utf8)
            for m in pattern.matches(in: text, range: NSRange(text.startIndex..., in: text)) {
                routes.insert(Route(method: String(text[Range(m.range(at: 1), in: text)!]), path: String(text[Range(m.range(at: 2), in: text)!])))
            }
        }
        return routes
    }

    @Test func everyDocumentedRouteIsExercised() async throws {
        try await withAPI { api in
            let document = try await api.get("/openapi.yaml", token: nil)
            let documented = Self.documentedRoutes(document.text)
            #expect(documented.count >= 25, "the document's paths were not read: \(documented)")
            let exercised = try Self.exercisedRoutes()
            let missing = documented.subtracting(exercised).map(\.description).sorted()
            #expect(missing.isEmpty, "routes no test in Tests/APITests calls: \(missing)")
            let unknown = exercised.subtracting(documented).map(\.description).sorted()
            #expect(unknown.isEmpty, "routes the tests call that the document does not have: \(unknown)")
        }
    }

    /// The router serves each documented route (a route the router lacks answers Hummingbird's
    /// bare 404; /v1 routes answer 401 without a token, the others 200).
    @Test func theRouterServesEveryDocumentedRoute() async throws {
        try await withAPI { api in
            let documented = Self.documentedRoutes(try await api.get("/openapi.yaml", token: nil).text)
            for route in documented {
                let params = Array(repeating: "x", count: route.path.filter { $0 == "{" }.count)
                let r = try await api.call(.init(rawValue: route.method.uppercased())!, route.path, params, token: nil)
                #expect(r.status == (route.path.hasPrefix("/v1/") ? .unauthorized : .ok), "\(route): \(r.status) \(r.text)")
            }
        }
    }

    /// No route registered without being documented: the registrations in Sources/DevDBAPI
    /// (`router.get(`, `group.post(`, `v1.get(` …) are as many as the document's operations.
    @Test func everyRegisteredRouteIsDocumented() async throws {
        let pattern = try NSRegularExpression(pattern: #"\b(?:router|group|v1)\.(?:get|post|put|patch|delete|head)\("#)
        var registrations = 0
        let enumerator = FileManager.default.enumerator(atPath: Self.sourcesDirectory.path)
        while let file = enumerator?.nextObject() as? String {
            guard file.hasSuffix(".swift") else { continue }
            let text = try String(contentsOf: Self.sourcesDirectory.appendingPathComponent(file), encoding: .utf8)
            registrations += pattern.numberOfMatches(in: text, range: NSRange(text.startIndex..., in: text))
        }
        let yaml = try String(contentsOf: Self.sourcesDirectory.appendingPathComponent("openapi.yaml"), encoding: .utf8)
        #expect(registrations == Self.documentedRoutes(yaml).count, "routes registered in Sources/DevDBAPI: \(registrations)")
    }
}
