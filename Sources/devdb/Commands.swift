import ArgumentParser
import DevDBCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

@main
struct DevDB: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devdb",
        abstract: "Your own data-filled PostgreSQL databases, made from a project's pg_dump.",
        discussion: """
            Start with "devdb config set-server URL" and "devdb login --token TOKEN", then
            "devdb db create --project NAME --wait". Exit codes: 0 ok, 1 error, 2 usage, 3 API unreachable,
            4 not authorized, 5 not found, 6 conflict, 7 ended in state failed (--wait), 8 --timeout passed.
            """,
        version: DevDB.version,
        subcommands: [ConfigCommand.self, Login.self, Logout.self, WhoAmI.self, ProjectCommand.self, DBCommand.self, TokenCommand.self])

    static let version = "0.2.0"

    /// Whether the command line asked for JSON (errors then go to stderr as JSON too).
    static var wantsJSON: Bool {
        let args = CommandLine.arguments
        return zip(args, args.dropFirst()).contains { ($0.0 == "-o" || $0.0 == "--output") && $0.1 == "json" }
            || args.contains("--output=json") || args.contains("-ojson")
    }

    /// For a mistyped subcommand ("devdb db craete"): what was meant, or the list of what exists.
    static func unknownSubcommand(_ args: [String]) -> String? {
        var command: any ParsableCommand.Type = DevDB.self
        var path = "devdb"
        for arg in args {
            let subcommands = command.configuration.subcommands
            guard !arg.hasPrefix("-"), arg != "help", !subcommands.isEmpty else { return nil }
            // With a default subcommand ("devdb db snapshot NAME"), other words are its arguments.
            if command.configuration.defaultSubcommand != nil, !subcommands.contains(where: { $0._commandName == arg }) { return nil }
            if let next = subcommands.first(where: { $0._commandName == arg }) {
                command = next
                path += " " + arg
                continue
            }
            let names = subcommands.map { $0._commandName }
            let scored = names.map { ($0, editDistance($0, arg)) }.sorted { $0.1 < $1.1 }
            if let best = scored.first, best.1 <= 2 {
                return "error: unknown command \"\(arg)\" for \"\(path)\"; did you mean \"\(path) \(best.0)\"?"
            }
            return "error: unknown command \"\(arg)\" for \"\(path)\"; its commands are \(names.joined(separator: ", ")) (\(path) --help)"
        }
        return nil
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }

    static func main() async {
        if let problem = unknownSubcommand(Array(CommandLine.arguments.dropFirst())) {
            standardError(problem)
            Glibc.exit(Exit.usage)
        }
        do {
            var command = try parseAsRoot()
            if var async = command as? AsyncParsableCommand { try await async.run() } else { try command.run() }
        } catch let e as CLIError {
            if wantsJSON {
                var object: [String: Any] = ["error": e.description, "exit_code": Int(e.code)]
                if let status = e.status { object["status"] = status }
                let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
                standardError(String(decoding: data, as: UTF8.self))
            } else {
                standardError("error: \(e.description)")
            }
            Glibc.exit(e.code)
        } catch {
            // Usage errors exit 2, as documented (ArgumentParser's own code would be 64).
            if exitCode(for: error) == .validationFailure {
                standardError(fullMessage(for: error))
                Glibc.exit(Exit.usage)
            }
            exit(withError: error)
        }
    }
}

// MARK: config and login

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Show or change the saved settings.",
                                                    subcommands: [SetServer.self, Show.self])

    struct SetServer: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-server", abstract: "Save the API address, e.g. http://127.0.0.1:5000.")
        @Argument var url: String
        func validate() throws {
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else { throw ValidationError("the server must be an http:// or https:// URL") }
        }
        func run() throws {
            var c = CLIConfig.load()
            c.server = url
            try c.save()
            print("server set to \(url) in \(CLIConfig.path.path)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the saved settings (the token is masked).")
        func run() throws {
            let c = CLIConfig.load()
            print("config  \(CLIConfig.path.path)")
            print("server  \(c.server ?? "-")")
            print("token   \(c.token.map { String($0.prefix(8)) + "…" } ?? "-")")
        }
    }
}

struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a token against the API and save it.",
        discussion: "Prefer --with-token (the token read from standard input, e.g. devdb login --with-token < token.txt): a --token on the command line is visible to every user of the machine in ps.")
    @Option(help: "An API token from your DevDB admin (visible in ps; prefer --with-token).") var token: String?
    @Flag(name: .customLong("with-token"), help: "Read the token from standard input.") var withToken = false
    @Option(help: "API address to save as well.") var server: String?

    func validate() throws {
        if withToken == (token != nil) { throw ValidationError("give the token either with --with-token (from standard input) or --token, exactly one") }
    }

    func run() async throws {
        var token = self.token ?? ""
        if withToken {
            token = (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw CLIError(description: "no token on standard input", code: Exit.usage) }
        }
        var c = CLIConfig.load()
        guard let srv = server ?? ProcessInfo.processInfo.environment["DEVDB_SERVER"] ?? c.server else {
            throw CLIError(description: "no DevDB server configured: pass --server or run \"devdb config set-server URL\"", code: Exit.failure)
        }
        _ = try await APIClient(server: srv, token: token).call("GET", "/v1/databases")
        c.server = srv
        c.token = token
        try c.save()
        print("logged in to \(srv); token saved in \(CLIConfig.path.path)")
    }
}

/// On a terminal, asks before something that ends sessions or loses data (`--yes` skips it);
/// scripts (no terminal) are not asked.
func confirm(_ question: String, yes: Bool) throws {
    guard !yes, isatty(0) == 1, isatty(2) == 1 else { return }
    standardError("\(question) [y/N] ", newline: false)
    let answer = (readLine() ?? "").trimmingCharacters(in: .whitespaces).lowercased()
    guard answer == "y" || answer == "yes" else { throw CLIError(description: "cancelled", code: Exit.failure) }
}

struct Logout: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forget the saved token (the server stays saved).")
    func run() throws {
        var c = CLIConfig.load()
        let had = c.token != nil
        c.token = nil
        try c.save()
        print(had ? "logged out: the token is removed from \(CLIConfig.path.path)" : "no token was saved")
    }
}

struct WhoAmI: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "whoami", abstract: "Show which user the token belongs to, and on which server.")
    @OptionGroup var global: GlobalOptions
    func run() async throws {
        let api = try global.client()
        let (data, object) = try await api.call("GET", "/v1/whoami")
        if global.output == .json { return printJSON(data) }
        print("\(describe(object["user"]))\(object["admin"] as? Bool == true ? " (admin)" : "") on \(api.server)")
    }
}

// MARK: projects

let projectColumns: [(title: String, key: String)] = [("name", "name"), ("postgres", "postgres"), ("state", "state"), ("dump", "dump_url")]

struct ProjectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "project", abstract: "Projects: a dump and the generations restored from it.",
                                                    subcommands: [Create.self, List.self, Show.self, Update.self, Delete.self, Refresh.self])

    /// How a project's data is prepared and kept fresh (create and update).
    struct DataOptions: ParsableArguments {
        @Option(name: .customLong("after-restore"),
                help: ArgumentHelp("SQL run after each restore, before the snapshot, as the database owner (e.g. masking); \"none\" removes it.", valueName: "file.sql"))
        var afterRestore: String?
        @Flag(name: .customLong("refresh-on-change"), inversion: .prefixedNo,
              help: "Start a new generation when the dump changes (checked every --refresh-check-interval of the API).")
        var refreshOnChange: Bool?
        @Option(name: .customLong("refresh-schedule"),
                help: ArgumentHelp("Refresh on a five-field cron schedule in UTC, e.g. \"0 3 * * *\"; \"none\" removes it.", valueName: "cron"))
        var refreshSchedule: String?
        @Option(name: .customLong("keep-generations"), help: ArgumentHelp("Ready generations to keep besides those in use (default 2).", valueName: "k"))
        var keepGenerations: Int?

        func validate() throws {
            if let k = keepGenerations, k < 1 { throw ValidationError("--keep-generations must be at least 1") }
        }

        /// The body fields these options set.
        func body() throws -> JSONObject {
            var b: JSONObject = [:]
            if let file = afterRestore {
                if file == "none" { b["after_restore_sql"] = "" } else {
                    guard let sql = try? String(contentsOfFile: file, encoding: .utf8) else {
                        throw CLIError(description: "cannot read \(file): give a file of SQL, or none", code: Exit.failure)
                    }
                    b["after_restore_sql"] = sql
                }
            }
            if let refreshOnChange { b["refresh_on_change"] = refreshOnChange }
            if let refreshSchedule { b["refresh_schedule"] = refreshSchedule == "none" ? "" : refreshSchedule }
            if let keepGenerations { b["keep_generations"] = keepGenerations }
            return b
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a project from a dump (admins): pg_dump -Fc, -Ft, -Fd packed as tar, or plain SQL (.sql, .sql.gz, .sql.zst).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Project name (a-z, 0-9, -).") var name: String
        @Option(help: ArgumentHelp("file://, http(s):// or s3://bucket/key of the dump.", valueName: "url")) var dump: String
        @Option(help: ArgumentHelp("PostgreSQL major of its databases (default: the one the dump was made from; not older than that).", valueName: "major"))
        var postgres: Int?
        @OptionGroup var data: DataOptions
        @OptionGroup var waiting: WaitOptions

        func run() async throws {
            let api = try global.client()
            var body = try data.body().merging(["name": name, "dump_url": dump]) { $1 }
            if let postgres { body["postgres"] = postgres }
            let (data, object) = try await api.call("POST", "/v1/projects", body: body)
            if waiting.wait { try await waitForProject(api, name, waiting); return try await show(api, name, global.output) }
            if global.output == .json { printJSON(data) } else { print("project \(object["name"] ?? name) created; restoring its dump (devdb project show \(name))") }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change how a project's data is prepared and refreshed (admins).",
            discussion: "Changes apply from the next generation on; run \"devdb project refresh NAME\" to make one now.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The project.") var name: String
        @OptionGroup var data: DataOptions

        func run() async throws {
            let body = try data.body()
            guard !body.isEmpty else {
                throw CLIError(description: "nothing to change: give --after-restore, --[no-]refresh-on-change, --refresh-schedule or --keep-generations", code: Exit.failure)
            }
            let api = try global.client()
            _ = try await api.call("PATCH", "/v1/projects/\(name)", body: body)
            try await show(api, name, global.output)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List projects.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let (data, object) = try await global.client().call("GET", "/v1/projects")
            if global.output == .json { return printJSON(data) }
            printTable(object["items"] as? [JSONObject] ?? [], columns: projectColumns)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a project and its generations.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws { try await show(try global.client(), name, global.output) }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a project that has no databases (admins).")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws {
            _ = try await global.client().call("DELETE", "/v1/projects/\(name)")
            if global.output == .table { print("project \(name) deleted") } else { print("{}") }
        }
    }

    struct Refresh: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Restore the dump again into a new generation; existing databases stay as they are (admins).")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            let api = try global.client()
            let (data, object) = try await api.call("POST", "/v1/projects/\(name)/refresh")
            let number = object["number"] as? Int ?? 0
            if waiting.wait {
                try await waitForGeneration(api, name, number, waiting)
                return try await show(api, name, global.output)
            }
            if global.output == .json { printJSON(data) } else { print("generation \(number) of \(name) is being restored") }
        }
    }

    static func show(_ api: APIClient, _ name: String, _ output: OutputFormat) async throws {
        let (data, object) = try await api.call("GET", "/v1/projects/\(name)")
        if output == .json { return printJSON(data) }
        var fields = object
        fields["masks"] = (object["masks"] as? Bool) == true ? "yes (after-restore SQL runs before each snapshot)" : "no"
        fields["refresh"] = [(object["refresh_on_change"] as? Bool) == true ? "on change" : nil,
                             (object["refresh_schedule"] as? String).map { "on schedule \($0) UTC" }].compactMap { $0 }.joined(separator: ", ")
        if (fields["refresh"] as? String)?.isEmpty == true { fields["refresh"] = "by hand (devdb project refresh)" }
        printFields(fields, ["name", "postgres", "dump_url", "state", "reason", "masks", "refresh", "next_scheduled_refresh", "keep_generations"])
        print("")
        printTable(object["generations"] as? [JSONObject] ?? [],
                   columns: [("generation", "number"), ("state", "state"), ("postgres", "postgres"), ("format", "dump_format"), ("phase", "phase"), ("bytes", "bytes_fetched"), ("restore_s", "restore_seconds"), ("reason", "reason")])
    }
}

func show(_ api: APIClient, _ name: String, _ output: OutputFormat) async throws { try await ProjectCommand.show(api, name, output) }

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


/// Runs `step` every `milliseconds` until it reports done (or throws). Transient failures (the
/// API unreachable or answering 502/503/504, e.g. while it or Redis restarts) are retried with
/// backoff and said on stderr; past the `--timeout` it exits 8.
func poll(_ waiting: WaitOptions = WaitOptions(), _ what: String = "the work", milliseconds: Int = 300,
          _ step: () async throws -> Bool) async throws {
    let deadline = waiting.deadline
    var backoff = 0.5
    while true {
        if let deadline, Date() >= deadline {
            throw CLIError(description: "timed out after \(waiting.timeout ?? "") waiting for \(what); it goes on in the background", code: Exit.timeout)
        }
        do {
            if try await step() { return }
            backoff = 0.5
            try await Task.sleep(for: .milliseconds(milliseconds))
        } catch let e as CLIError where e.isTransient {
            standardError("warning: \(e.description.split(separator: "\n").first ?? ""); retrying in \(String(format: "%.1f", backoff)) s")
            try await Task.sleep(for: .seconds(backoff))
            backoff = min(backoff * 2, 5)
        }
    }
}

func waitForProject(_ api: APIClient, _ name: String, _ waiting: WaitOptions) async throws {
    var last = ""
    try await poll(waiting, "the restore of \(name)", milliseconds: 500) {
        let (_, p) = try await api.call("GET", "/v1/projects/\(name)")
        let g = (p["generations"] as? [JSONObject] ?? []).last ?? [:]
        let line = "\(describe(p["state"])): \(describe(g["phase"])) \(formatBytes(g["bytes_fetched"]))"
        if line != last { standardError(line); last = line }
        if p["state"] as? String == "failed" { throw CLIError(description: "project \(name) failed: \(describe(p["reason"]))", code: Exit.failedState) }
        return p["state"] as? String == "ready"
    }
}

func waitForGeneration(_ api: APIClient, _ name: String, _ number: Int, _ waiting: WaitOptions) async throws {
    try await poll(waiting, "generation \(number) of \(name)", milliseconds: 500) {
        let (_, p) = try await api.call("GET", "/v1/projects/\(name)")
        guard let g = (p["generations"] as? [JSONObject] ?? []).first(where: { $0["number"] as? Int == number }) else {
            throw CLIError(description: "generation \(number) of \(name) disappeared", code: Exit.failure)
        }
        if g["state"] as? String == "failed" { throw CLIError(description: "generation \(number) failed: \(describe(g["reason"]))", code: Exit.failedState) }
        return g["state"] as? String == "ready"
    }
}

func formatBytes(_ value: Any?) -> String {
    guard let n = (value as? NSNumber)?.doubleValue, n > 0 else { return "" }
    return n >= 1048576 ? String(format: "%.1f MiB", n / 1048576) : String(format: "%.0f KiB", n / 1024)
}

// MARK: databases

struct DBCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "db", abstract: "Your databases.",
                                                    subcommands: [Create.self, List.self, Show.self, Delete.self, Reset.self, Connect.self,
                                                                  Snapshot.self, Snapshots.self, Stop.self, Start.self, Update.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a database from a project's newest generation, or a branch of another database.",
            discussion: "A branch (--from) has its own credentials and route; the project is the origin's. Without @SNAP it is made from the origin's state now (a snapshot is taken first, the origin is unavailable for a moment).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Name (a DNS label: a-z, 0-9, -); generated when left out.") var name: String?
        @Option(help: "The project to copy (not with --from).") var project: String?
        @Option(help: ArgumentHelp("Branch from another of your databases: NAME@SNAP (a snapshot) or NAME (its state now).", valueName: "name[@snap]"))
        var from: String?
        @Option(name: .customLong("hibernate-after"),
                help: ArgumentHelp("Stop it after this long without a session (30m, 2h) or never; the next connection wakes it. Default: the API's.", valueName: "duration|never"))
        var hibernateAfter: String?

        func validate() throws {
            if project == nil && from == nil { throw ValidationError("say which project to copy (--project) or which database to branch from (--from)") }
        }
        @Option(help: ArgumentHelp("Delete it after this long: 90m, 8h, 2d.", valueName: "duration")) var ttl: String?
        @OptionGroup var waiting: WaitOptions

        func run() async throws {
            let api = try global.client()
            var body: JSONObject = [:]
            if let project { body["project"] = project }
            if let from { body["from"] = from }
            if let name { body["name"] = name }
            if let hibernateAfter { body["hibernate_after"] = hibernateAfter }
            if let ttl { body["ttl"] = ttl }
            let (data, object) = try await api.call("POST", "/v1/databases", body: body)
            let created = object["name"] as? String ?? name ?? ""
            if waiting.wait {
                try await waitForDatabase(api, created, until: "ready", waiting)
                return try await DBCommand.show(api, created, global.output)
            }
            if global.output == .json { return printJSON(data) }
            print("database \(created) is being created; \"devdb db show \(created)\" shows its state")
            print("when it is ready, connect with:")
            print("  \(describe(object["psql"]))")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List your databases (admins see everyone's).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only databases of this project.") var project: String?
        @Option(help: "Only databases of this user (admins).") var owner: String?
        @Option(help: "Only databases in this state: ready, provisioning, restoring, cloning, starting, failed, deleting, unavailable, snapshotting, hibernating, hibernated, waking.")
        var state: String?
        func run() async throws {
            var q: [String: String] = [:]
            if let project { q["project"] = project }
            if let owner { q["owner"] = owner }
            if let state { q["state"] = state }
            let (data, object) = try await global.client().call("GET", "/v1/databases", query: q)
            if global.output == .json { return printJSON(data) }
            printTable(object["items"] as? [JSONObject] ?? [],
                       columns: [("name", "name"), ("project", "project"), ("owner", "owner"), ("state", "state"), ("since", "hibernated_at"),
                                 ("host", "host"), ("expires", "expires_at"), ("newer", "newer_generation")])
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a database and how to connect to it.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        func run() async throws { try await DBCommand.show(try global.client(), name, global.output) }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a database and everything it used.",
            discussion: "Its snapshots go too, except those a branch was made from: they stay until their branches are deleted.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database.") var name: String
        @Flag(name: .customLong("yes"), help: "Do not ask for confirmation on a terminal.") var yes = false
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            try confirm("Delete \(name)? Its open sessions end and its data is gone.", yes: yes)
            let api = try global.client()
            let (data, object) = try await api.call("DELETE", "/v1/databases/\(name)")
            if global.output == .table {
                if let gone = object["snapshots_deleted"] as? [String], !gone.isEmpty { print("its snapshots \(gone.joined(separator: ", ")) are deleted with it") }
                for kept in object["snapshots_kept"] as? [JSONObject] ?? [] {
                    print("snapshot \(describe(kept["name"])) stays while branch(es) \((kept["branches"] as? [String] ?? []).joined(separator: ", ")) use it")
                }
            }
            if waiting.wait {
                try await poll(waiting, "the delete of \(name)") {
                    do { _ = try await api.call("GET", "/v1/databases/\(name)") } catch let e as CLIError where e.code == Exit.notFound { return true }
                    return false
                }
            }
            if global.output == .json { printJSON(data) } else { print(waiting.wait ? "database \(name) deleted" : "database \(name) is being deleted") }
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put a database back to its generation's data; name, port and password stay.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database.") var name: String
        @Flag(name: .customLong("yes"), help: "Do not ask for confirmation on a terminal.") var yes = false
        @Flag(help: "Move to the project's newest generation instead.") var latest = false
        @Option(help: ArgumentHelp("Back to one of its snapshots (devdb db snapshots NAME).", valueName: "snap")) var to: String?
        @OptionGroup var waiting: WaitOptions

        func validate() throws {
            if latest && to != nil { throw ValidationError("--latest and --to go to different places: choose one") }
        }

        func run() async throws {
            try confirm("Reset \(name)? Its open sessions end and its changes are replaced.", yes: yes)
            let api = try global.client()
            var body: JSONObject = ["latest": latest]
            if let to { body["to"] = to }
            let (data, _) = try await api.call("POST", "/v1/databases/\(name)/reset", body: body)
            standardError("note: a reset ends every open session of \(name); clients reconnect with the same connection line")
            if waiting.wait {
                try await waitForDatabase(api, name, until: "ready", waiting)
                return try await DBCommand.show(api, name, global.output)
            }
            if global.output == .json { printJSON(data) } else { print("database \(name) is being reset") }
        }
    }

    struct Connect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run psql connected to a database.")
        @OptionGroup var global: GlobalOptions
        @Argument var name: String
        @Argument(parsing: .captureForPassthrough, help: "Extra psql arguments, e.g. -c 'SELECT 1'.") var psqlArguments: [String] = []
        func run() async throws {
            let (_, d) = try await global.client().call("GET", "/v1/databases/\(name)")
            guard ["ready", "hibernated", "hibernating", "waking"].contains(d["state"] as? String ?? "") else {
                throw CLIError(description: "database \(name) is \(describe(d["state"])); wait for it (devdb db show \(name))", code: Exit.failure)
            }
            let hostaddr = (d["hostaddr"] as? String).map { " hostaddr=\($0)" } ?? ""
            let conninfo = "host=\(describe(d["host"]))\(hostaddr) port=\(describe(d["port"])) user=\(describe(d["user"])) dbname=\(describe(d["database"])) sslmode=require"
            setenv("PGPASSWORD", describe(d["password"]), 1)
            // `devdb db connect NAME -- -c 'SELECT 1'`: the `--` ends devdb's options; psql gets what follows.
            let extra = psqlArguments.first == "--" ? Array(psqlArguments.dropFirst()) : psqlArguments
            let args = ["psql", conninfo] + extra
            var cargs = args.map { strdup($0) } + [nil]
            execvp("psql", &cargs)
            throw CLIError(description: "cannot run psql: \(String(cString: strerror(errno))) (install postgresql-client)", code: Exit.failure)
        }
    }

    struct Stop: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Put a database to sleep now (its Postgres stops; the next connection, or devdb db start, wakes it).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database.") var name: String
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            let api = try global.client()
            let (data, _) = try await api.call("POST", "/v1/databases/\(name)/stop")
            if waiting.wait { try await waitForDatabase(api, name, until: "hibernated", waiting) }
            if global.output == .json { return printJSON(data) }
            print(waiting.wait ? "database \(name) is asleep; connecting to it wakes it" : "database \(name) is going to sleep")
        }
    }

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Wake a sleeping database.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database.") var name: String
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            let api = try global.client()
            let (data, _) = try await api.call("POST", "/v1/databases/\(name)/start")
            if waiting.wait {
                try await waitForDatabase(api, name, until: "ready", waiting)
                return try await DBCommand.show(api, name, global.output)
            }
            if global.output == .json { return printJSON(data) }
            print("database \(name) is waking up")
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a database's TTL or when it goes to sleep.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database.") var name: String
        @Option(help: ArgumentHelp("Delete it this long from now: 90m, 8h, 2d.", valueName: "duration")) var ttl: String?
        @Option(name: .customLong("hibernate-after"), help: ArgumentHelp("Sleep after this long without a session, or never.", valueName: "duration|never"))
        var hibernateAfter: String?
        func validate() throws {
            if ttl == nil && hibernateAfter == nil { throw ValidationError("nothing to change: give --ttl or --hibernate-after") }
        }
        func run() async throws {
            var body: JSONObject = [:]
            if let ttl { body["ttl"] = ttl }
            if let hibernateAfter { body["hibernate_after"] = hibernateAfter }
            let api = try global.client()
            _ = try await api.call("PATCH", "/v1/databases/\(name)", body: body)
            try await DBCommand.show(api, name, global.output)
        }
    }

    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save a database's state as a snapshot, or delete one.",
            discussion: "devdb db snapshot NAME [--as SNAP] [--wait] saves; devdb db snapshot delete NAME SNAP deletes.",
            subcommands: [Take.self, DeleteSnapshot.self], defaultSubcommand: Take.self)
    }

    struct Take: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "take",
            abstract: "Save NAME's state now as a snapshot (the database stops for a moment, then serves again).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database.") var name: String
        @Option(name: .customLong("as"), help: ArgumentHelp("The snapshot's name (a DNS label; default: the UTC time, YYYYMMDD-HHMMSS).", valueName: "snap"))
        var snapshot: String?
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            let api = try global.client()
            var body: JSONObject = [:]
            if let snapshot { body["name"] = snapshot }
            let (data, object) = try await api.call("POST", "/v1/databases/\(name)/snapshots", body: body)
            let snap = object["name"] as? String ?? snapshot ?? ""
            if waiting.wait {
                var final: JSONObject = [:]
                var finalData = Data()
                try await poll(waiting, "snapshot \(snap) of \(name)") {
                    let (d, s) = try await api.call("GET", "/v1/databases/\(name)/snapshots/\(snap)")
                    (final, finalData) = (s, d)
                    if s["state"] as? String == "failed" {
                        throw CLIError(description: "snapshot \(snap) of \(name) failed: \(describe(s["reason"]))", code: Exit.failedState)
                    }
                    return s["state"] as? String == "ready"
                }
                if global.output == .json { return printJSON(finalData) }
                let seconds = (final["unavailable_seconds"] as? NSNumber).map { String(format: "%.1f", $0.doubleValue) } ?? "?"
                print("snapshot \(snap) of \(name) taken (\(describe(final["method"]))); \(name) was unavailable for \(seconds) s")
                return
            }
            if global.output == .json { return printJSON(data) }
            print("snapshot \(snap) of \(name) is being taken (devdb db snapshots \(name))")
        }
    }

    struct DeleteSnapshot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a snapshot no branch uses.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database.") var name: String
        @Argument(help: "The snapshot.") var snapshot: String
        func run() async throws {
            _ = try await global.client().call("DELETE", "/v1/databases/\(name)/snapshots/\(snapshot)")
            if global.output == .table { print("snapshot \(snapshot) of \(name) deleted") } else { print("{}") }
        }
    }

    struct Snapshots: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a database's snapshots.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database.") var name: String
        func run() async throws {
            let (data, object) = try await global.client().call("GET", "/v1/databases/\(name)/snapshots")
            if global.output == .json { return printJSON(data) }
            let rows = (object["items"] as? [JSONObject] ?? []).map { row -> JSONObject in
                var r = row
                r["size"] = formatBytes(row["size_bytes"])
                r["branches"] = (row["branches"] as? [String] ?? []).joined(separator: ",")
                return r
            }
            printTable(rows, columns: [("name", "name"), ("created", "created_at"), ("size", "size"), ("state", "state"), ("method", "method"),
                                       ("branches", "branches"), ("reason", "reason")])
        }
    }

    static func show(_ api: APIClient, _ name: String, _ output: OutputFormat) async throws {
        let (data, object) = try await api.call("GET", "/v1/databases/\(name)")
        if output == .json { return printJSON(data) }
        printFields(object, ["name", "project", "owner", "state", "hibernated_at", "pending", "phase", "reason", "generation", "postgres", "base", "host", "hostaddr", "port", "user",
                             "password", "database", "clone_method", "note", "hibernate_after_seconds", "expires_at", "uri"])
        if let hint = object["hint"] as? String { print("\n\(hint)") }
        if ["ready", "hibernated", "hibernating", "waking"].contains(object["state"] as? String ?? "") {
            if object["state"] as? String != "ready" { print("\nasleep: connecting wakes it (a few seconds)") }
            print("\nconnect with:\n  \(describe(object["psql"]))")
        }
    }
}

/// Polls until the database reaches `state`, printing each change of state or phase.
func waitForDatabase(_ api: APIClient, _ name: String, until state: String, _ waiting: WaitOptions) async throws {
    var last = ""
    try await poll(waiting, "\(name) to be \(state)") {
        let (_, d) = try await api.call("GET", "/v1/databases/\(name)")
        let now = describe(d["state"]) + (d["phase"] is String ? " (\(describe(d["phase"])))" : "")
        if now != last { standardError("\(name): \(now)"); last = now }
        if d["state"] as? String == "failed" {
            throw CLIError(description: "database \(name) failed: \(describe(d["reason"]))", code: Exit.failedState)
        }
        return d["state"] as? String == state
    }
}

// MARK: tokens

struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "API tokens (admins).",
                                                    subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a token for a user; it is shown once.")
        @OptionGroup var global: GlobalOptions
        @Option var user: String
        @Flag(help: "Give the token admin rights.") var admin = false
        func run() async throws {
            let (data, object) = try await global.client().call("POST", "/v1/tokens", body: ["user": user, "admin": admin])
            if global.output == .json { return printJSON(data) }
            print("token for \(user) (id \(describe(object["id"]))); it is shown only now:")
            print(describe(object["token"]))
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tokens (never their values).")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let (data, object) = try await global.client().call("GET", "/v1/tokens")
            if global.output == .json { return printJSON(data) }
            printTable(object["items"] as? [JSONObject] ?? [], columns: [("id", "id"), ("user", "user"), ("admin", "admin"), ("created", "created_at")])
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by id.")
        @OptionGroup var global: GlobalOptions
        @Argument var id: String
        func run() async throws {
            _ = try await global.client().call("DELETE", "/v1/tokens/\(id)")
            print("token \(id) revoked")
        }
    }
}
