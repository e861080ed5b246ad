import ArgumentParser
import DevDBAPIContract
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
            Getting started:
              devdb config set-server https://devdb.example.com
              devdb login --with-token < token.txt
              devdb db create --project shop --wait
              devdb db connect NAME

            Every command has --help. Tables are for people; -o json gives the API's exact values.
            Shell completions: devdb --generate-completion-script bash (or zsh, fish).

            Exit codes:
              0 ok             4 not authorized
              1 error          5 not found
              2 usage          6 conflict
              3 API unreachable 7 ended in state failed (--wait)
                               8 --timeout passed (the work goes on)
            """,
        version: DevDB.version,
        subcommands: [ConfigCommand.self, Login.self, Logout.self, WhoAmI.self, AuthCommand.self, ProjectCommand.self, DBCommand.self, TokenCommand.self])

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
                struct JSONError: Encodable { var error: String; var exitCode: Int32; var status: Int? }
                let encoder = JSONEncoder()
                encoder.keyEncodingStrategy = .convertToSnakeCase
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                let data = (try? encoder.encode(JSONError(error: e.description, exitCode: e.code, status: e.status))) ?? Data()
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
        @Argument(help: "The API's address, http(s)://HOST:PORT.") var url: String
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
        _ = try await APIClient(server: srv, token: token).call(WhoAmIView.self, "GET", "/v1/whoami")
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
        let (me, data) = try await api.call(WhoAmIView.self, "GET", "/v1/whoami")
        if global.output == .json { return printJSON(data) }
        print("\(me.user)\(me.admin ? " (admin)" : "") on \(api.server)")
    }
}

struct AuthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "auth", abstract: "Where the CLI's server and token come from, and whether the token works.",
                                                    subcommands: [Status.self])

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the server, the token's user and where both were found (flag, environment or saved config).",
            discussion: "Exits 4 when the token is missing or refused, 3 when the API cannot be reached.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let settings = global.settings()
            let api = try global.client()
            guard api.token != nil else {
                throw CLIError(description: "not logged in to \(api.server)\nhint: run \"devdb login --with-token < token.txt\"", code: Exit.unauthorized)
            }
            let (me, data) = try await api.call(WhoAmIView.self, "GET", "/v1/whoami")
            if global.output == .json { return printJSON(data) }
            printFields([("server", "\(api.server) (from \(settings.serverSource))"),
                         ("user", me.user + (me.admin ? " (admin)" : "")),
                         ("token", "\(settings.token.map { String($0.prefix(8)) + "…" } ?? "-") (from \(settings.tokenSource))")])
        }
    }
}

// MARK: projects

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

        /// The settings these options change (absent ones stay as they are).
        func body() throws -> UpdateProjectRequest {
            var b = UpdateProjectRequest()
            if let file = afterRestore {
                if file == "none" { b.afterRestoreSql = "" } else {
                    guard let sql = try? String(contentsOfFile: file, encoding: .utf8) else {
                        throw CLIError(description: "cannot read \(file): give a file of SQL, or none", code: Exit.failure)
                    }
                    b.afterRestoreSql = sql
                }
            }
            b.refreshOnChange = refreshOnChange
            b.refreshSchedule = refreshSchedule.map { $0 == "none" ? "" : $0 }
            b.keepGenerations = keepGenerations
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
            let settings = try data.body()
            var body = CreateProjectRequest()
            body.name = name
            body.dumpUrl = dump
            body.postgres = postgres
            body.afterRestoreSql = settings.afterRestoreSql
            body.refreshOnChange = settings.refreshOnChange
            body.refreshSchedule = settings.refreshSchedule
            body.keepGenerations = settings.keepGenerations
            let (project, data) = try await api.call(ProjectView.self, "POST", "/v1/projects", body: body)
            if waiting.wait {
                try await waitForGeneration(api, name, project.generations.last?.number, waiting)
                return try await show(api, name, global.output)
            }
            if global.output == .json { printJSON(data) } else { print("project \(project.name) created; restoring its dump (devdb project show \(name))") }
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change how a project's data is prepared and refreshed (admins).",
            discussion: "Changes apply from the next generation on; run \"devdb project refresh NAME\" to make one now.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The project (devdb project list).") var name: String
        @OptionGroup var data: DataOptions

        func run() async throws {
            let body = try data.body()
            guard !body.isEmpty else {
                throw CLIError(description: "nothing to change: give --after-restore, --[no-]refresh-on-change, --refresh-schedule or --keep-generations", code: Exit.usage)
            }
            let api = try global.client()
            _ = try await api.call(ProjectView.self, "PATCH", "/v1/projects/\(name)", body: body)
            try await show(api, name, global.output)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List projects.")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let (list, data) = try await global.client().call(ItemList<ProjectView>.self, "GET", "/v1/projects")
            if global.output == .json { return printJSON(data) }
            printTable(["name", "postgres", "state", "generations", "dump"],
                       list.items.map { [$0.name, String($0.postgres), $0.state, String($0.generations.count), $0.dumpUrl ?? "-"] })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a project and its generations.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The project (devdb project list).") var name: String
        func run() async throws { try await show(try global.client(), name, global.output) }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a project that has no databases (admins).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The project (devdb project list).") var name: String
        func run() async throws {
            _ = try await global.client().send("DELETE", "/v1/projects/\(name)")
            if global.output == .table { print("project \(name) deleted") } else { print("{}") }
        }
    }

    struct Refresh: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Restore the dump again into a new generation; existing databases stay as they are (admins).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The project (devdb project list).") var name: String
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            let api = try global.client()
            let (generation, data) = try await api.call(GenerationView.self, "POST", "/v1/projects/\(name)/refresh")
            let number = generation.number
            if waiting.wait {
                try await waitForGeneration(api, name, number, waiting)
                return try await show(api, name, global.output)
            }
            if global.output == .json { printJSON(data) } else { print("generation \(number) of \(name) is being restored") }
        }
    }

    static func show(_ api: APIClient, _ name: String, _ output: OutputFormat) async throws {
        let (p, data) = try await api.call(ProjectView.self, "GET", "/v1/projects/\(name)")
        if output == .json { return printJSON(data) }
        var refresh = [p.refreshOnChange ? "on change" : nil, p.refreshSchedule.map { "on schedule \($0) UTC" }].compactMap { $0 }.joined(separator: ", ")
        if refresh.isEmpty { refresh = "by hand (devdb project refresh)" }
        printFields([("name", p.name), ("postgres", String(p.postgres)), ("dump_url", p.dumpUrl), ("state", p.state), ("reason", p.reason),
                     ("masks", p.masks ? "yes (after-restore SQL runs before each snapshot)" : "no"), ("refresh", refresh),
                     ("next refresh", p.nextScheduledRefresh.map { "\(Human.relative($0)) (\(iso($0)))" }),
                     ("keep", "\(p.keepGenerations) ready generations besides those in use"), ("created", Human.relative(p.createdAt))])
        print("")
        printTable(["generation", "state", "postgres", "format", "phase", "dump", "restore", "created", "reason"], p.generations.map { g in
            [String(g.number), g.state, g.postgres.map(String.init) ?? "-", g.dumpFormat ?? "-", g.phase ?? "-",
             g.bytesFetched > 0 ? Human.bytes(g.bytesFetched) : "-", Human.duration(g.restoreSeconds), Human.relative(g.createdAt), g.reason ?? "-"]
        })
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

/// Follows generation `number` of a project (its newest when nil) to ready, one progress line per
/// step: "shop generation 2: fetching: 13.4 MiB (4 s)", "shop generation 2: restoring: 40 of 90 items (12 s)".
func waitForGeneration(_ api: APIClient, _ name: String, _ number: Int?, _ waiting: WaitOptions) async throws {
    let progress = ProgressLine()
    defer { progress.finish() }
    try await poll(waiting, number.map { "generation \($0) of \(name)" } ?? "the restore of \(name)", milliseconds: 500) {
        let (p, _) = try await api.call(ProjectView.self, "GET", "/v1/projects/\(name)")
        let found = number == nil ? p.generations.last : p.generations.first { $0.number == number }
        guard let g = found else {
            if number == nil && p.state != "failed" { return false }
            if p.state == "failed" { throw CLIError(description: "project \(name) failed: \(p.reason ?? "no reason given")", code: Exit.failedState) }
            throw CLIError(description: "generation \(number ?? 0) of \(name) disappeared (was the project deleted?)", code: Exit.failure)
        }
        var phase = g.phase
        if g.state == "fetching", g.bytesFetched > 0 { phase = "fetching: \(Human.bytes(g.bytesFetched))" }
        if g.state == "ready" {
            progress.finish()
            standardError("\(name) generation \(g.number): ready, restored in \(Human.duration(g.restoreSeconds))")
            return true
        }
        progress.update(step: progressStep(state: g.state, phase: phase), text: progressText("\(name) generation \(g.number)", state: g.state, phase: phase),
                        since: g.phaseStartedAt)
        if g.state == "failed" {
            progress.finish()
            throw CLIError(description: "generation \(g.number) of \(name) failed: \(g.reason ?? p.reason ?? "no reason given")", code: Exit.failedState)
        }
        return false
    }
}

/// An exact time, for next to a relative one.
func iso(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }

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
        @Option(help: "The project to copy (devdb project list; not with --from).") var project: String?
        @Option(help: ArgumentHelp("Branch from another of your databases: NAME@SNAP (a snapshot) or NAME (its state now).", valueName: "name[@snap]"))
        var from: String?
        @Option(name: .customLong("hibernate-after"),
                help: ArgumentHelp("Stop it after this long without a session (30m, 2h) or never; the next connection wakes it. Default: the API's.", valueName: "duration|never"))
        var hibernateAfter: String?

        func validate() throws {
            if project == nil && from == nil { throw ValidationError("say which project to copy (--project) or which database to branch from (--from)") }
        }
        @Option(help: ArgumentHelp("Delete it after this long: 90m, 8h, 2d (at most the API's --max-ttl).", valueName: "duration")) var ttl: String?
        @OptionGroup var waiting: WaitOptions

        func run() async throws {
            let api = try global.client()
            var body = CreateDatabaseRequest()
            body.project = project
            body.from = from
            body.name = name
            body.hibernateAfter = hibernateAfter
            body.ttl = ttl
            let (created, data) = try await api.call(DatabaseView.self, "POST", "/v1/databases", body: body)
            if waiting.wait {
                try await waitForDatabase(api, created.name, until: "ready", waiting)
                return try await DBCommand.show(api, created.name, global.output)
            }
            if global.output == .json { return printJSON(data) }
            print("database \(created.name) is being created; \"devdb db show \(created.name)\" shows its state")
            print("when it is ready, connect with:")
            print("  \(created.psql ?? "devdb db connect \(created.name)")")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List your databases (admins see everyone's).")
        @OptionGroup var global: GlobalOptions
        @Option(help: ArgumentHelp("Only databases of this project (it must exist).", valueName: "project")) var project: String?
        @Option(help: ArgumentHelp("Only databases of this user (admins).", valueName: "user")) var owner: String?
        @Option(help: ArgumentHelp("Only databases in this state: ready, provisioning, restoring, cloning, starting, failed, deleting, unavailable, snapshotting, hibernating, hibernated, waking.",
                                   valueName: "state"))
        var state: String?
        func run() async throws {
            var q: [String: String] = [:]
            if let project { q["project"] = project }
            if let owner { q["owner"] = owner }
            if let state { q["state"] = state }
            let (list, data) = try await global.client().call(ItemList<DatabaseView>.self, "GET", "/v1/databases", query: q)
            if global.output == .json { return printJSON(data) }
            printTable(["name", "project", "owner", "state", "since", "postgres", "host", "expires", "newer"], list.items.map { d in
                [d.name, d.project, d.owner, d.state, d.hibernatedAt.map { Human.relative($0) } ?? "-", d.postgres.map(String.init) ?? "-", d.host,
                 d.expiresAt.map { Human.relative($0) } ?? "never", d.newerGeneration.map { "generation \($0)" } ?? "-"]
            })
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a database and how to connect to it.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database (devdb db list).") var name: String
        func run() async throws { try await DBCommand.show(try global.client(), name, global.output) }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a database and everything it used.",
            discussion: "Its snapshots go too, except those a branch was made from: they stay until their branches are deleted.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database (devdb db list).") var name: String
        @Flag(name: .customLong("yes"), help: "Do not ask for confirmation on a terminal.") var yes = false
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            try confirm("Delete \(name)? Its open sessions end and its data is gone.", yes: yes)
            let api = try global.client()
            let (deleted, data) = try await api.call(DatabaseView.self, "DELETE", "/v1/databases/\(name)")
            if global.output == .table {
                if let gone = deleted.snapshotsDeleted, !gone.isEmpty { print("its snapshots \(gone.joined(separator: ", ")) are deleted with it") }
                for kept in deleted.snapshotsKept ?? [] {
                    print("snapshot \(kept.name) stays while branch(es) \(kept.branches.joined(separator: ", ")) use it")
                }
            }
            if waiting.wait {
                try await poll(waiting, "the delete of \(name)") {
                    do { _ = try await api.send("GET", "/v1/databases/\(name)") } catch let e as CLIError where e.code == Exit.notFound { return true }
                    return false
                }
            }
            if global.output == .json { printJSON(data) } else { print(waiting.wait ? "database \(name) deleted" : "database \(name) is being deleted") }
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Put a database back to its generation's data; name, port and password stay.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database (devdb db list).") var name: String
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
            var body = ResetRequest()
            body.latest = latest
            body.to = to
            let (_, data) = try await api.call(DatabaseView.self, "POST", "/v1/databases/\(name)/reset", body: body)
            standardError("note: a reset ends every open session of \(name); clients reconnect with the same connection line")
            if waiting.wait {
                try await waitForDatabase(api, name, until: "ready", waiting)
                return try await DBCommand.show(api, name, global.output)
            }
            if global.output == .json { printJSON(data) } else { print("database \(name) is being reset") }
        }
    }

    struct Connect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run psql connected to a database.",
            discussion: "devdb db connect NAME -- -c 'SELECT 1': what follows -- goes to psql. The password reaches psql in its environment, never its argv.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database (devdb db list).") var name: String
        @Argument(parsing: .captureForPassthrough, help: "Extra psql arguments after --, e.g. -- -c 'SELECT 1'.") var psqlArguments: [String] = []
        func run() async throws {
            let (d, _) = try await global.client().call(DatabaseView.self, "GET", "/v1/databases/\(name)")
            guard d.isConnectable else {
                throw CLIError(description: cannotConnect(d), code: Exit.failure)
            }
            let hostaddr = d.hostaddr.map { " hostaddr=\($0)" } ?? ""
            let conninfo = "host=\(d.host)\(hostaddr) port=\(d.port) user=\(d.user) dbname=\(d.database) sslmode=require"
            setenv("PGPASSWORD", d.password ?? "", 1)
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
        @Argument(help: "Your database (devdb db list).") var name: String
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            let api = try global.client()
            let (_, data) = try await api.call(DatabaseView.self, "POST", "/v1/databases/\(name)/stop")
            if waiting.wait { try await waitForDatabase(api, name, until: "hibernated", waiting) }
            if global.output == .json { return printJSON(data) }
            print(waiting.wait ? "database \(name) is asleep; connecting to it wakes it" : "database \(name) is going to sleep")
        }
    }

    struct Start: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Wake a sleeping database.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database (devdb db list).") var name: String
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            let api = try global.client()
            let (_, data) = try await api.call(DatabaseView.self, "POST", "/v1/databases/\(name)/start")
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
        @Argument(help: "Your database (devdb db list).") var name: String
        @Option(help: ArgumentHelp("Delete it this long from now: 90m, 8h, 2d (at most the API's --max-ttl).", valueName: "duration")) var ttl: String?
        @Option(name: .customLong("hibernate-after"), help: ArgumentHelp("Sleep after this long without a session, or never.", valueName: "duration|never"))
        var hibernateAfter: String?
        func validate() throws {
            if ttl == nil && hibernateAfter == nil { throw ValidationError("nothing to change: give --ttl or --hibernate-after") }
        }
        func run() async throws {
            var body = UpdateDatabaseRequest()
            body.ttl = ttl
            body.hibernateAfter = hibernateAfter
            let api = try global.client()
            _ = try await api.call(DatabaseView.self, "PATCH", "/v1/databases/\(name)", body: body)
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
        @Argument(help: "Your database (devdb db list).") var name: String
        @Option(name: .customLong("as"), help: ArgumentHelp("The snapshot's name (a DNS label; default: the UTC time, YYYYMMDD-HHMMSS).", valueName: "snap"))
        var snapshot: String?
        @OptionGroup var waiting: WaitOptions
        func run() async throws {
            let api = try global.client()
            var body = CreateSnapshotRequest()
            body.name = snapshot
            let (taken, data) = try await api.call(SnapshotView.self, "POST", "/v1/databases/\(name)/snapshots", body: body)
            let snap = taken.name
            if waiting.wait {
                var final = taken
                var finalData = data
                let progress = ProgressLine()
                defer { progress.finish() }
                try await poll(waiting, "snapshot \(snap) of \(name)") {
                    let (s, d) = try await api.call(SnapshotView.self, "GET", "/v1/databases/\(name)/snapshots/\(snap)")
                    (final, finalData) = (s, d)
                    if s.state == "failed" {
                        throw CLIError(description: "snapshot \(snap) of \(name) failed: \(s.reason ?? "no reason given")", code: Exit.failedState)
                    }
                    if s.state != "ready" { progress.update(step: s.state, text: "snapshot \(snap) of \(name): \(s.state)", since: nil) }
                    return s.state == "ready"
                }
                progress.finish()
                if global.output == .json { return printJSON(finalData) }
                print("snapshot \(snap) of \(name) taken (\(final.method ?? "-"), \(Human.bytes(final.sizeBytes))); \(name) was unavailable for \(Human.duration(final.unavailableSeconds))")
                return
            }
            if global.output == .json { return printJSON(data) }
            print("snapshot \(snap) of \(name) is being taken (devdb db snapshots \(name))")
        }
    }

    struct DeleteSnapshot: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a snapshot no branch uses.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database (devdb db list).") var name: String
        @Argument(help: "The snapshot (devdb db snapshots NAME).") var snapshot: String
        func run() async throws {
            _ = try await global.client().send("DELETE", "/v1/databases/\(name)/snapshots/\(snapshot)")
            if global.output == .table { print("snapshot \(snapshot) of \(name) deleted") } else { print("{}") }
        }
    }

    struct Snapshots: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a database's snapshots.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Your database (devdb db list).") var name: String
        func run() async throws {
            let (list, data) = try await global.client().call(ItemList<SnapshotView>.self, "GET", "/v1/databases/\(name)/snapshots")
            if global.output == .json { return printJSON(data) }
            printTable(["name", "created", "size", "state", "method", "unavailable", "branches", "reason"], list.items.map { s in
                [s.name, Human.relative(s.createdAt), Human.bytes(s.sizeBytes), s.state, s.method ?? "-", Human.duration(s.unavailableSeconds),
                 s.branches.isEmpty ? "-" : s.branches.joined(separator: ","), s.reason ?? "-"]
            })
        }
    }

    static func show(_ api: APIClient, _ name: String, _ output: OutputFormat) async throws {
        let (d, data) = try await api.call(DatabaseView.self, "GET", "/v1/databases/\(name)")
        if output == .json { return printJSON(data) }
        printFields([("name", d.name), ("project", d.project), ("owner", d.owner), ("state", d.state),
                     ("asleep since", d.hibernatedAt.map { "\(Human.relative($0)) (\(iso($0)))" }), ("pending", d.pending), ("phase", d.phase),
                     ("reason", d.reason), ("generation", d.generation.map(String.init)), ("postgres", d.postgres.map(String.init)), ("base", d.base),
                     ("host", d.host), ("hostaddr", d.hostaddr), ("port", String(d.port)), ("user", d.user), ("password", d.password),
                     ("database", d.database), ("clone method", d.cloneMethod), ("note", d.note),
                     ("sleeps after", d.hibernateAfterSeconds.map { "\(Human.hibernateAfter($0)) without a session" } ?? "never"),
                     ("expires", d.expiresAt.map { "\(Human.relative($0)) (\(iso($0)))" } ?? "never"), ("created", Human.relative(d.createdAt)), ("uri", d.uri)])
        if let hint = d.hint { print("\n\(hint)") }
        if d.isConnectable {
            if d.state != "ready" { print("\nasleep: connecting wakes it (a few seconds)") }
            if let psql = d.psql { print("\nconnect with:\n  \(psql)") }
        }
    }
}

/// Why a database cannot be connected to now, and what to do, fitted to its state.
func cannotConnect(_ d: DatabaseView) -> String {
    let why = d.reason.map { ": \($0)" } ?? ""
    switch d.state {
    case "failed":
        return "database \(d.name) failed\(why)\nhint: devdb db reset \(d.name) tries again; devdb db delete \(d.name) removes it"
    case "deleting":
        return "database \(d.name) is being deleted\nhint: make another with devdb db create --project \(d.project)"
    case "unavailable":
        return "database \(d.name) is unavailable\(why)\nhint: the platform reports it is not serving; it returns to ready by itself (devdb db show \(d.name))"
    default:
        return "database \(d.name) is \(d.state)\(d.phase.map { " (\($0))" } ?? "")\nhint: wait until it is ready: devdb db show \(d.name), or create and reset with --wait"
    }
}

/// Polls until the database reaches `state`, one progress line per step with its elapsed time
/// ("kate-pg: restoring: 40 of 90 items (12 s)").
func waitForDatabase(_ api: APIClient, _ name: String, until state: String, _ waiting: WaitOptions) async throws {
    let progress = ProgressLine()
    defer { progress.finish() }
    try await poll(waiting, "\(name) to be \(state)") {
        let (d, _) = try await api.call(DatabaseView.self, "GET", "/v1/databases/\(name)")
        if d.state == state {
            progress.finish()
            return true
        }
        progress.update(step: progressStep(state: d.state, phase: d.phase), text: progressText(name, state: d.state, phase: d.phase), since: d.phaseStartedAt)
        if d.state == "failed" {
            progress.finish()
            throw CLIError(description: "database \(name) failed: \(d.reason ?? "no reason given")", code: Exit.failedState)
        }
        return false
    }
}

// MARK: tokens

struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "API tokens (admins).",
                                                    subcommands: [Create.self, List.self, Revoke.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a token for a user; it is shown once.",
            discussion: "Give it to the user over a private channel; they run devdb login --with-token < file. A user's databases are those made with their tokens.")
        @OptionGroup var global: GlobalOptions
        @Option(help: ArgumentHelp("The user it is for (a-z, 0-9, -; not a reserved name such as admin).", valueName: "user")) var user: String
        @Flag(help: "Give the token admin rights.") var admin = false
        func run() async throws {
            var body = CreateTokenRequest()
            body.user = user
            body.admin = admin
            let (token, data) = try await global.client().call(TokenView.self, "POST", "/v1/tokens", body: body)
            if global.output == .json { return printJSON(data) }
            print("token for \(token.user)\(token.admin ? " (admin)" : "") (id \(token.id)); it is shown only now:")
            print(token.token ?? "-")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List tokens (never their values).")
        @OptionGroup var global: GlobalOptions
        func run() async throws {
            let (list, data) = try await global.client().call(ItemList<TokenView>.self, "GET", "/v1/tokens")
            if global.output == .json { return printJSON(data) }
            printTable(["id", "user", "admin", "created"], list.items.map { [$0.id, $0.user, Human.yesNo($0.admin), Human.relative($0.createdAt)] })
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by id.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The token's id (devdb token list).") var id: String
        func run() async throws {
            _ = try await global.client().send("DELETE", "/v1/tokens/\(id)")
            if global.output == .table { print("token \(id) revoked") } else { print("{}") }
        }
    }
}
