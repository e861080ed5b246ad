import ArgumentParser
import DevDBAPIContract
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

/// An error for the user: what went wrong (with the API's hint), and the exit code devdb ends with.
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
    /// A single sign-on session (devdb login --sso); used when there is no token.
    var session: SSOSession?

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

/// The HTTP client of the API, typed by the contract module the API encodes with. Errors carry
/// the API's message and hint.
struct APIClient {
    let server: String
    let token: String?

    /// Sends a request; the body of a 2xx answer, or the API's error thrown with an exit code.
    func send<Answer>(_ endpoint: Endpoint<Answer>) async throws -> Data {
        let (method, path, body, query) = (endpoint.method, endpoint.path, endpoint.body, endpoint.query)
        var components = URLComponents(string: server.hasSuffix("/") ? String(server.dropLast()) + path : server + path)
        if !query.isEmpty { components?.queryItems = query.sorted(by: { $0.key < $1.key }).map { URLQueryItem(name: $0.key, value: $0.value) } }
        guard let url = components?.url else { throw CLIError(description: "invalid server address \"\(server)\"", code: Exit.failure) }
        var request = URLRequest(url: url)
        request.httpMethod = method
        request.timeoutInterval = endpoint.timeout
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = try APIJSON.encoder.encode(body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let data: Data, response: URLResponse
        do { (data, response) = try await URLSession.shared.data(for: request) } catch {
            throw CLIError(description: TransportFailure.describe(error, server: server), code: Exit.unreachable)
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        guard (200..<300).contains(status) else {
            let err = (try? APIJSON.decoder.decode(ErrorBody.self, from: data))?.error
            var text = err?.message ?? "the API answered \(status)"
            if let hint = err?.hint { text += "\nhint: \(hint)" }
            let code: Int32
            switch status {
            case 401, 403: code = Exit.unauthorized
            case 404: code = Exit.notFound
            case 409: code = Exit.conflict
            default: code = Exit.failure
            }
            throw CLIError(description: text, code: code, status: status)
        }
        return data
    }

    /// Sends a request and decodes its answer; also returns the raw body for `-o json`.
    func call<Answer>(_ endpoint: Endpoint<Answer>) async throws -> (Answer, Data) {
        let data = try await send(endpoint)
        do { return (try APIJSON.decoder.decode(Answer.self, from: data), data) } catch {
            throw CLIError(description: "the API at \(server) answered \(endpoint.method) \(endpoint.path) with JSON this devdb \(DevDB.version) does not understand (\(Self.explain(error)))\nhint: use the devdb CLI of the API's version",
                           code: Exit.failure)
        }
    }

    static func explain(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): return "no field \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            return "field \"\(c.codingPath.map(\.stringValue).joined(separator: "."))\" has another type"
        default: return "not the expected JSON"
        }
    }
}

// MARK: output

func printJSON(_ data: Data) {
    FileHandle.standardOutput.write(data)
    if data.last != 0x0A { print("") }
}

func standardError(_ text: String, newline: Bool = true) {
    FileHandle.standardError.write(Data((text + (newline ? "\n" : "")).utf8))
}
