import ArgumentParser
import DevDBAPIContract
import Foundation

/// `devdb project`: projects, their dumps and the generations restored from them.
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

    struct Create: APICommand {
        static let configuration = CommandConfiguration(abstract: "Create a project from a dump (admins): pg_dump -Fc, -Ft, -Fd packed as tar, or plain SQL (.sql, .sql.gz, .sql.zst).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Project name (a-z, 0-9, -).") var name: String
        @Option(help: ArgumentHelp("file://, http(s):// or s3://bucket/key of the dump.", valueName: "url")) var dump: String
        @Option(help: ArgumentHelp("PostgreSQL major of its databases (default: the one the dump was made from; not older than that).", valueName: "major"))
        var postgres: Int?
        @OptionGroup var data: DataOptions
        @OptionGroup var waiting: WaitOptions

        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let settings = try data.body()
            var body = CreateProjectRequest()
            body.name = name
            body.dumpUrl = dump
            body.postgres = postgres
            body.afterRestoreSql = settings.afterRestoreSql
            body.refreshOnChange = settings.refreshOnChange
            body.refreshSchedule = settings.refreshSchedule
            body.keepGenerations = settings.keepGenerations
            let (project, data) = try await api.call(.createProject(body))
            if waiting.wait {
                try await waitForGeneration(api, name, project.generations.last?.number, waiting)
                return try await show(api, name, output)
            }
            output.render(data) { print("project \(project.name) created; restoring its dump (devdb project show \(name))") }
        }
    }

    // Not an APICommand: its body is read (maybe from standard input) and checked before the
    // server is looked up, so "nothing to change" comes first, with its usage exit code.
    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Change how a project's data is prepared and refreshed (admins).",
            discussion: "Changes apply from the next generation on; run \"devdb project refresh NAME\" to make one now.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var project: ProjectArgument
        var name: String { project.name }
        @OptionGroup var data: DataOptions

        func run() async throws {
            let body = try data.body()
            guard !body.isEmpty else {
                throw CLIError(description: "nothing to change: give --after-restore, --[no-]refresh-on-change, --refresh-schedule or --keep-generations", code: Exit.usage)
            }
            let api = try await global.client()
            _ = try await api.call(.updateProject(name, body))
            try await show(api, name, global.output)
        }
    }

    struct List: APICommand {
        static let configuration = CommandConfiguration(abstract: "List projects.")
        @OptionGroup var global: GlobalOptions
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let (list, data) = try await api.call(.projects)
            output.render(data) {
                printTable(["name", "postgres", "state", "generations", "dump"],
                           list.items.map { [$0.name, String($0.postgres), $0.state, String($0.generations.count), $0.dumpUrl ?? "-"] })
            }
        }
    }

    struct Show: APICommand {
        static let configuration = CommandConfiguration(abstract: "Show a project and its generations.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var project: ProjectArgument
        var name: String { project.name }
        func run(_ api: APIClient, _ output: OutputFormat) async throws { try await show(api, name, output) }
    }

    struct Delete: APICommand {
        static let configuration = CommandConfiguration(abstract: "Delete a project that has no databases (admins).")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var project: ProjectArgument
        var name: String { project.name }
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            _ = try await api.send(.deleteProject(name))
            output.acknowledge("project \(name) deleted")
        }
    }

    struct Refresh: APICommand {
        static let configuration = CommandConfiguration(abstract: "Restore the dump again into a new generation; existing databases stay as they are (admins).")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var project: ProjectArgument
        var name: String { project.name }
        @OptionGroup var waiting: WaitOptions
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let (generation, data) = try await api.call(.refreshProject(name))
            let number = generation.number
            if waiting.wait {
                try await waitForGeneration(api, name, number, waiting)
                return try await show(api, name, output)
            }
            output.render(data) { print("generation \(number) of \(name) is being restored") }
        }
    }

    /// `devdb project show`, which create, update and refresh end with.
    static func show(_ api: APIClient, _ name: String, _ output: OutputFormat) async throws {
        let (p, data) = try await api.call(.project(name))
        output.render(data) {
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
}
