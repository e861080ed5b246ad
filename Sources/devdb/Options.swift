import ArgumentParser
import DevDBCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How answers are printed (`-o`): tables for people, the API's own JSON for scripts, and for
/// `db create` / `db show` the connection as variables for CI (`env`, `dotenv`, `github`).
enum OutputFormat: String, ExpressibleByArgument, CaseIterable {
    case table, json, env, dotenv, github

    /// The formats that hand a database's connection to the next step (ConnectionOutput.swift).
    var isConnection: Bool { self == .env || self == .dotenv || self == .github }
}

/// Options every command that talks to the API takes: where the API is, the token, and the
/// output mode.
struct GlobalOptions: ParsableArguments {
    @Option(help: ArgumentHelp("API address (default: DEVDB_SERVER, then the saved config).", valueName: "url")) var server: String?
    @Option(help: ArgumentHelp("API token (default: DEVDB_TOKEN, then the saved config; visible in ps, prefer devdb login --with-token).", valueName: "token")) var token: String?
    @Option(name: [.short, .long], help: ArgumentHelp("table for people, json for scripts; env, dotenv or github (db create and db show: DATABASE_URL and PG* for CI, see docs/ci.md).", valueName: "table|json|env|dotenv|github")) var output: OutputFormat = .table

    /// The server and token in effect and where each came from: the flag, the environment
    /// (DEVDB_SERVER, DEVDB_TOKEN) or the saved config.
    func settings() -> (server: String?, serverSource: String, token: String?, tokenSource: String) {
        let env = ProcessInfo.processInfo.environment
        let saved = CLIConfig.load()
        func pick(_ flag: String?, _ name: String, _ config: String?, _ option: String) -> (String?, String) {
            if let flag { return (flag, "--\(option)") }
            if let value = env[name], !value.isEmpty { return (value, name) }
            if let config { return (config, CLIConfig.path.path) }
            return (nil, "nowhere")
        }
        let (s, ss) = pick(server, "DEVDB_SERVER", saved.server, "server")
        var (t, ts) = pick(token, "DEVDB_TOKEN", saved.token, "token")
        if t == nil, let session = saved.session { (t, ts) = (session.idToken, "the single sign-on session in \(CLIConfig.path.path)") }
        return (s, ss, t, ts)
    }

    /// The client with the token in effect; a single sign-on session's ID token is renewed first
    /// when it expires (and the config file updated).
    func client() async throws -> APIClient {
        let found = settings()
        guard let server = found.server else {
            throw CLIError(description: "no DevDB server configured: run \"devdb config set-server http://HOST:5000\" or pass --server", code: Exit.failure)
        }
        var saved = CLIConfig.load()
        if found.token != nil, found.token == saved.session?.idToken, var session = saved.session {
            let fresh = try await session.freshIDToken()
            if fresh != found.token {
                saved.session = session
                try saved.save()
            }
            return APIClient(server: server, token: fresh)
        }
        return APIClient(server: server, token: found.token)
    }
}

/// The database a command is about, its help written once.
struct DatabaseArgument: ParsableArguments {
    @Argument(help: "Your database (devdb db list).") var name: String
}

/// The project a command is about, its help written once.
struct ProjectArgument: ParsableArguments {
    @Argument(help: "The project (devdb project list).") var name: String
}

/// `--wait` and `--timeout`, for every command that can follow its work to the end.
struct WaitOptions: ParsableArguments {
    @Flag(help: "Follow the work until it is done; rides out short API or Redis outages.") var wait = false
    @Option(help: ArgumentHelp("With --wait: give up after this long (90s, 10m, 2h) and exit 8; the work goes on.", valueName: "duration"))
    var timeout: String?

    func validate() throws {
        if let timeout, DurationText.seconds(timeout) == nil { throw ValidationError("invalid --timeout \"\(timeout)\": use a number and s, m or h, e.g. 10m") }
        if timeout != nil && !wait { throw ValidationError("--timeout goes with --wait") }
    }

    var deadline: Date? { timeout.flatMap(DurationText.seconds).map { Date().addingTimeInterval($0) } }
}

/// `--yes`, for the commands that end sessions or lose data.
struct ConfirmOptions: ParsableArguments {
    @Flag(name: .customLong("yes"), help: "Do not ask for confirmation on a terminal.") var yes = false

    /// On a terminal, asks `question` (`--yes` skips it); scripts (no terminal) are not asked.
    func ask(_ question: String) throws {
        guard !yes, isatty(0) == 1, isatty(2) == 1 else { return }
        standardError("\(question) [y/N] ", newline: false)
        let answer = (readLine() ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        guard answer == "y" || answer == "yes" else { throw CLIError(description: "cancelled", code: Exit.failure) }
    }
}
