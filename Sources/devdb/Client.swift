import ArgumentParser
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Exit codes scripts can rely on (also in docs/cli.md).
enum Exit {
    static let failure: Int32 = 1
    static let usage: Int32 = 2
    static let unreachable: Int32 = 3
    static let unauthorized: Int32 = 4
    static let notFound: Int32 = 5
    static let conflict: Int32 = 6
    static let failedState: Int32 = 7
    static let timeout: Int32 = 8
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    let code: Int32
    /// The API's HTTP status, when it answered.
    var status: Int? = nil

    /// Worth retrying while waiting: the API unreachable, or a gateway/Redis outage.
    var isTransient: Bool { code == Exit.unreachable || [502, 503, 504].contains(status ?? 0) }
}

/// Saved settings: `$XDG_CONFIG_HOME/devdb/config.json` (default `~/.config/devdb/`), mode 0600.
struct CLIConfig: Codable {
    var server: String?
    var token: String?

    static var path: URL {
        let env = ProcessInfo.processInfo.environment
        let base = env["XDG_CONFIG_HOME"].map { URL(fileURLWithPath: $0) }
            ?? URL(fileURLWithPath: env["HOME"] ?? NSHomeDirectory()).appendingPathComponent(".config")
        return base.appendingPathComponent("devdb/config.json")
    }

    static func load() -> CLIConfig {
        guard let data = try? Data(contentsOf: path), let c = try? JSONDecoder().decode(CLIConfig.self, from: data) else { return CLIConfig() }
        return c
    }

    func save() throws {
        try FileManager.default.createDirectory(at: Self.path.deletingLastPathComponent(), withIntermediateDirectories: true)
        let data = try JSONEncoder().encode(self)
        FileManager.default.createFile(atPath: Self.path.path, contents: data, attributes: [.posixPermissions: 0o600])
    }
}

enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case table, json }

/// Options every command that talks to the API takes.
struct GlobalOptions: ParsableArguments {
    @Option(help: ArgumentHelp("API address (default: saved config, then DEVDB_SERVER).", valueName: "url")) var server: String?
    @Option(help: ArgumentHelp("API token (default: saved config, then DEVDB_TOKEN).", valueName: "token")) var token: String?
    @Option(name: [.short, .long], help: "table for people, json for scripts.") var output: OutputFormat = .table

    func client() throws -> APIClient {
        let env = ProcessInfo.processInfo.environment
        let saved = CLIConfig.load()
        guard let server = server ?? env["DEVDB_SERVER"] ?? saved.server else {
            throw CLIError(description: "no DevDB server configured: run \"devdb config set-server http://HOST:5000\" or pass --server", code: Exit.failure)
        }
        return APIClient(server: server, token: token ?? env["DEVDB_TOKEN"] ?? saved.token)
    }
}

typealias JSONObject = [String: Any]

/// The HTTP client of the API. Errors carry the API's message and hint.
struct APIClient {
    let server: String
    let token: String?

    func call(_ method: String, _ path: String, body: JSONObject? = nil, query: [String: String] = [:]) async throws -> (Data, JSONObject) {
        var components = URLComponents(string: server.hasSuffix("/") ? String(server.dropLast()) + path : server + path)
        if !query.isEmpty { components?.queryItems = query.sorted(by: { $0.key < $1.key }).map { URLQueryItem(name: $0.key, value: $0.value) } }
        guard let url = components?.url else { throw CLIError(description: "invalid server address \"\(server)\"", code: Exit.failure) }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = 30
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let data: Data, response: URLResponse
        do { (data, response) = try await URLSession.shared.data(for: request) } catch {
            throw CLIError(description: "cannot reach the DevDB API at \(server): \(error.localizedDescription)\nhint: check --server / \"devdb config set-server\" and that devdb-api is running",
                           code: Exit.unreachable)
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let object = (try? JSONSerialization.jsonObject(with: data)) as? JSONObject ?? [:]
        guard (200..<300).contains(status) else {
            let err = object["error"] as? JSONObject
            var text = (err?["message"] as? String) ?? "the API answered \(status)"
            if let hint = err?["hint"] as? String { text += "\nhint: \(hint)" }
            let code: Int32
            switch status {
            case 401, 403: code = Exit.unauthorized
            case 404: code = Exit.notFound
            case 409: code = Exit.conflict
            default: code = Exit.failure
            }
            throw CLIError(description: text, code: code, status: status)
        }
        return (data, object)
    }
}

// MARK: output

func printJSON(_ data: Data) {
    FileHandle.standardOutput.write(data)
    if data.last != 0x0A { print("") }
}

func printTable(_ rows: [JSONObject], columns: [(title: String, key: String)]) {
    let cells = rows.map { row in columns.map { describe(row[$0.key]) } }
    var widths = columns.map { $0.title.count }
    for r in cells { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
    func line(_ values: [String]) -> String {
        values.enumerated().map { i, v in i == values.count - 1 ? v : v.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }
    print(line(columns.map { $0.title.uppercased() }))
    for r in cells { print(line(r)) }
}

func printFields(_ object: JSONObject, _ keys: [String]) {
    let width = keys.map(\.count).max() ?? 0
    for k in keys where object[k] != nil && !(object[k] is NSNull) {
        print("\(k.padding(toLength: width, withPad: " ", startingAt: 0))  \(describe(object[k]))")
    }
}

func describe(_ value: Any?) -> String {
    switch value {
    case nil, is NSNull: return "-"
    case let s as String: return s
    case let n as NSNumber: return n.stringValue
    default: return "\(value!)"
    }
}

func standardError(_ text: String, newline: Bool = true) {
    FileHandle.standardError.write(Data((text + (newline ? "\n" : "")).utf8))
}
