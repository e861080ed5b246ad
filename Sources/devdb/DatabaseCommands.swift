import ArgumentParser
import DevDBAPIContract
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `devdb db`: your databases. The snapshot commands are in SnapshotCommands.swift.
struct DBCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "db", abstract: "Your databases.",
                                                    subcommands: [Create.self, List.self, Show.self, Delete.self, Reset.self, Connect.self,
                                                                  Snapshot.self, Snapshots.self, Stop.self, Start.self, Update.self, Diff.self])

    struct Create: APICommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a database from a project's newest generation, or a branch of another database.",
            discussion: """
                A branch (--from) has its own credentials and route; the project is the origin's. Without @SNAP it is made from the origin's state now (a snapshot is taken first, the origin is unavailable for a moment).
                In CI: devdb db create "$(devdb name-for "$BRANCH")" --project P --if-not-exists --ttl 2d --wait -o github (docs/ci.md).
                """)
        static let printsConnection = true
        @OptionGroup var global: GlobalOptions
        @Argument(help: "Name (a DNS label: a-z, 0-9, -); generated when left out. devdb name-for makes one from a branch.") var name: String?
        @Option(help: "The project to copy (devdb project list; not with --from).") var project: String?
        @Option(help: ArgumentHelp("Branch from another of your databases: NAME@SNAP (a snapshot) or NAME (its state now).", valueName: "name[@snap]"))
        var from: String?
        @Option(name: .customLong("hibernate-after"),
                help: ArgumentHelp("Stop it after this long without a session (30m, 2h) or never; the next connection wakes it. Default: the API's.", valueName: "duration|never"))
        var hibernateAfter: String?
        @Flag(name: .customLong("schema-only"),
              help: "The project's schema (tables, types, functions, views, extensions) with no rows, for jobs that bring their own fixtures; made once per generation, then cloned.")
        var schemaOnly = false
        @Flag(name: .customLong("if-not-exists"),
              help: "If NAME exists with the same project (and --from), use it as it is and exit 0; an existing NAME of another project is an error (exit 6).")
        var ifNotExists = false
        @Flag(name: .customLong("reset-if-exists"),
              help: "If NAME exists with the same project (and --from), reset it to its generation's data (same name, port and password) instead of failing.")
        var resetIfExists = false

        func validate() throws {
            if project == nil && from == nil { throw ValidationError("say which project to copy (--project) or which database to branch from (--from)") }
            if schemaOnly && from != nil { throw ValidationError("--schema-only makes a database from a project's schema: not with --from (a branch copies its origin as it is)") }
            if ifNotExists && resetIfExists { throw ValidationError("--if-not-exists keeps an existing database and --reset-if-exists resets it: choose one") }
            if (ifNotExists || resetIfExists) && name == nil {
                throw ValidationError("--\(ifNotExists ? "if-not-exists" : "reset-if-exists") needs the database's NAME (devdb name-for BRANCH makes one)")
            }
        }
        @Option(help: ArgumentHelp("Delete it after this long: 90m, 8h, 2d (at most the API's --max-ttl).", valueName: "duration")) var ttl: String?
        @OptionGroup var waiting: WaitOptions

        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            if let name, ifNotExists || resetIfExists, let existing = try await DBCommand.find(api, name) {
                return try await useExisting(api, existing, output)
            }
            var body = CreateDatabaseRequest()
            body.project = project
            body.from = from
            body.name = name
            body.hibernateAfter = hibernateAfter
            body.ttl = ttl
            body.schemaOnly = schemaOnly ? true : nil
            let created: DatabaseView, data: Data
            do {
                (created, data) = try await api.call(.createDatabase(body))
            } catch let e as CLIError where e.code == Exit.conflict && (ifNotExists || resetIfExists) {
                // Made meanwhile by another run of the same job: use it like one found above.
                guard let name, let existing = try await DBCommand.find(api, name) else { throw e }
                return try await useExisting(api, existing, output)
            }
            if waiting.wait {
                try await waitForDatabase(api, created.name, until: .ready, waiting)
                return try await DBCommand.show(api, created.name, output)
            }
            if output.isConnection { return try ConnectionOutput.render(created, output) }
            output.render(data) {
                print("database \(created.name) is being created; \"devdb db show \(created.name)\" shows its state")
                print("when it is ready, connect with:")
                print("  \(tablesHideSecrets ? "devdb db connect \(created.name)" : created.psql ?? "devdb db connect \(created.name)")")
            }
        }

        /// `--if-not-exists` / `--reset-if-exists` found NAME: it must be what was asked for.
        func useExisting(_ api: APIClient, _ existing: DatabaseView, _ output: OutputFormat) async throws {
            let name = existing.name
            let hint = "hint: choose another name, or delete it first: devdb db delete \(name) --wait"
            if let project, existing.project != project {
                throw CLIError(description: "database \(name) exists and is a copy of project \(existing.project), not \(project)\n\(hint)", code: Exit.conflict)
            }
            if let from {
                let origin = from.split(separator: "@", maxSplits: 1).first.map(String.init) ?? from
                let base = existing.base ?? ""
                let matches = from.contains("@") ? base == from : base.hasPrefix(origin + "@")
                if !matches {
                    throw CLIError(description: "database \(name) exists but is not a branch of \(from) (its base: \(existing.base ?? "the project's generation"))\n\(hint)", code: Exit.conflict)
                }
            }
            if (existing.schemaOnly ?? false) != schemaOnly {
                throw CLIError(description: "database \(name) exists \(schemaOnly ? "with data, not schema-only" : "schema-only, not with data")\n\(hint)", code: Exit.conflict)
            }
            if existing.knownState == .deleting || existing.pending == "delete" {
                throw CLIError(description: "database \(name) exists but is being deleted\nhint: wait until it is gone (devdb db delete \(name) --if-exists --wait) and create it again",
                               code: Exit.conflict)
            }
            if resetIfExists {
                standardError("database \(name) exists (project \(existing.project)): resetting it")
                _ = try await api.call(.resetDatabase(name, ResetRequest()))
            } else {
                if existing.knownState == .failed {
                    throw CLIError(description: "database \(name) exists but failed\(existing.reason.map { ": \($0)" } ?? "")\nhint: use --reset-if-exists, or delete it: devdb db delete \(name) --wait",
                                   code: Exit.failedState)
                }
                standardError("database \(name) exists (project \(existing.project)): using it as it is")
            }
            if waiting.wait { try await waitForDatabase(api, name, until: .ready, waiting) }
            try await DBCommand.show(api, name, output)
        }
    }

    struct List: APICommand {
        static let configuration = CommandConfiguration(abstract: "List your databases (admins see everyone's).")
        @OptionGroup var global: GlobalOptions
        @Option(help: ArgumentHelp("Only databases of this project (it must exist).", valueName: "project")) var project: String?
        @Option(help: ArgumentHelp("Only databases of this user (admins).", valueName: "user")) var owner: String?
        @Option(help: ArgumentHelp("Only databases in this state: \(DatabaseState.allCases.map(\.rawValue).joined(separator: ", ")).", valueName: "state"))
        var state: String?
        @Option(help: ArgumentHelp("Show one page of at most this many (1 to \(ItemList<DatabaseView>.maximumLimit)); the next page's --after is printed on stderr. Without it, every page is fetched.", valueName: "n"))
        var limit: Int?
        @Option(help: ArgumentHelp("Start after this database name (the --after printed with the previous page).", valueName: "name"))
        var after: String?

        func validate() throws {
            if let limit, !(1...ItemList<DatabaseView>.maximumLimit).contains(limit) {
                throw ValidationError("--limit must be from 1 to \(ItemList<DatabaseView>.maximumLimit)")
            }
        }

        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            var q: [String: String] = [:]
            if let project { q["project"] = project }
            if let owner { q["owner"] = owner }
            if let state { q["state"] = state }
            if let after { q["after"] = after }
            let list: ItemList<DatabaseView>, data: Data
            if let limit {
                q["limit"] = String(limit)
                (list, data) = try await api.call(.databases(q))
                if let next = list.next, output != .json { standardError("more: devdb db list --limit \(limit) --after \(next)") }
            } else {
                (list, data) = try await Self.everyPage(api, q)
            }
            output.render(data) {
                printTable(["name", "project", "owner", "state", "since", "postgres", "host", "expires", "newer"], list.items.map { d in
                    [d.name, d.project, d.owner, d.state, d.hibernatedAt.map { Human.relative($0) } ?? "-", d.postgres.map(String.init) ?? "-", d.host,
                     d.expiresAt.map { Human.relative($0) } ?? "never", d.newerGeneration.map { "generation \($0)" } ?? "-"]
                })
            }
        }

        /// Follows `next` a page of 500 at a time, so a large installation's list is many small
        /// requests rather than one that holds every record at once; -o json prints the pages'
        /// items as one list, exactly as a single answer would have been.
        static func everyPage(_ api: APIClient, _ query: [String: String]) async throws -> (ItemList<DatabaseView>, Data) {
            var q = query
            // DEVDB_LIST_PAGE: the page size (tests use small pages to cross page boundaries).
            q["limit"] = ProcessInfo.processInfo.environment["DEVDB_LIST_PAGE"] ?? "500"
            var (list, data) = try await api.call(.databases(q))
            guard list.next != nil else { return (list, data) }
            var items = (try? JSONSerialization.jsonObject(with: data) as? [String: Any])?["items"] as? [Any] ?? []
            var all = list.items
            while let next = list.next {
                q["after"] = next
                let page: Data
                (list, page) = try await api.call(.databases(q))
                all += list.items
                items += (try? JSONSerialization.jsonObject(with: page) as? [String: Any])?["items"] as? [Any] ?? []
            }
            data = try JSONSerialization.data(withJSONObject: ["items": items], options: [.prettyPrinted, .sortedKeys])
            return (ItemList(items: all), data)
        }
    }

    struct Show: APICommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a database and how to connect to it.",
            discussion: "-o env prints export lines (eval \"$(devdb db show NAME -o env)\"), -o dotenv a .env file, -o github sets the variables of the next GitHub Actions steps with the password masked (docs/ci.md).")
        static let printsConnection = true
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        func run(_ api: APIClient, _ output: OutputFormat) async throws { try await DBCommand.show(api, name, output) }
    }

    struct Delete: APICommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a database and everything it used.",
            discussion: "Its snapshots go too, except those a branch was made from: they stay until their branches are deleted.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        @OptionGroup var confirming: ConfirmOptions
        @Flag(name: .customLong("if-exists"), help: "A database that does not exist (or is already gone) is not an error: exit 0.") var ifExists = false
        @OptionGroup var waiting: WaitOptions
        func prepare() throws { try confirming.ask("Delete \(name)? Its open sessions end and its data is gone.") }
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let deleted: DatabaseView, data: Data
            do {
                (deleted, data) = try await api.call(.deleteDatabase(name))
            } catch let e as CLIError where e.code == Exit.notFound && ifExists {
                return output.acknowledge("database \(name) does not exist: nothing to delete")
            }
            if output == .table {
                if let gone = deleted.snapshotsDeleted, !gone.isEmpty { print("its snapshots \(gone.joined(separator: ", ")) are deleted with it") }
                for kept in deleted.snapshotsKept ?? [] {
                    print("snapshot \(kept.name) stays while branch(es) \(kept.branches.joined(separator: ", ")) use it")
                }
            }
            if waiting.wait {
                try await poll(waiting, "the delete of \(name)") {
                    do { _ = try await api.send(.database(name)) } catch let e as CLIError where e.code == Exit.notFound { return true }
                    return false
                }
            }
            output.render(data) { print(waiting.wait ? "database \(name) deleted" : "database \(name) is being deleted") }
        }
    }

    struct Reset: APICommand {
        static let configuration = CommandConfiguration(abstract: "Put a database back to its generation's data; name, port and password stay.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        @OptionGroup var confirming: ConfirmOptions
        @Flag(help: "Move to the project's newest generation instead.") var latest = false
        @Option(help: ArgumentHelp("Back to one of its snapshots (devdb db snapshots NAME).", valueName: "snap")) var to: String?
        @OptionGroup var waiting: WaitOptions

        func validate() throws {
            if latest && to != nil { throw ValidationError("--latest and --to go to different places: choose one") }
        }

        func prepare() throws { try confirming.ask("Reset \(name)? Its open sessions end and its changes are replaced.") }

        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            var body = ResetRequest()
            body.latest = latest
            body.to = to
            let (_, data) = try await api.call(.resetDatabase(name, body))
            standardError("note: a reset ends every open session of \(name); clients reconnect with the same connection line")
            if waiting.wait {
                try await waitForDatabase(api, name, until: .ready, waiting)
                return try await DBCommand.show(api, name, output)
            }
            output.render(data) { print("database \(name) is being reset") }
        }
    }

    struct Connect: APICommand {
        static let configuration = CommandConfiguration(
            abstract: "Run psql connected to a database.",
            discussion: "devdb db connect NAME -- -c 'SELECT 1': what follows -- goes to psql. The password reaches psql in its environment, never its argv.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        @Argument(parsing: .captureForPassthrough, help: "Extra psql arguments after --, e.g. -- -c 'SELECT 1'.") var psqlArguments: [String] = []
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let (d, _) = try await api.call(.database(name))
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

    struct Stop: APICommand {
        static let configuration = CommandConfiguration(
            abstract: "Put a database to sleep now, ending its open sessions (its Postgres stops; the next connection, or devdb db start, wakes it).",
            discussion: "Sleeping on its own (--hibernate-after) never ends a session; stopping by hand does, at once.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        @OptionGroup var confirming: ConfirmOptions
        @OptionGroup var waiting: WaitOptions

        func prepare() throws { try confirming.ask("Stop \(name)? Its open sessions end.") }

        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let (_, data) = try await api.call(.stopDatabase(name))
            standardError("note: a stop ends every open session of \(name); the next connection wakes it")
            if waiting.wait { try await waitForDatabase(api, name, until: .hibernated, waiting) }
            output.render(data) { print(waiting.wait ? "database \(name) is asleep; connecting to it wakes it" : "database \(name) is going to sleep") }
        }
    }

    struct Start: APICommand {
        static let configuration = CommandConfiguration(abstract: "Wake a sleeping database.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        @OptionGroup var waiting: WaitOptions
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let (_, data) = try await api.call(.startDatabase(name))
            if waiting.wait {
                try await waitForDatabase(api, name, until: .ready, waiting)
                return try await DBCommand.show(api, name, output)
            }
            output.render(data) { print("database \(name) is waking up") }
        }
    }

    struct Update: APICommand {
        static let configuration = CommandConfiguration(abstract: "Change a database's TTL or when it goes to sleep.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        @Option(help: ArgumentHelp("Delete it this long from now: 90m, 8h, 2d (at most the API's --max-ttl).", valueName: "duration")) var ttl: String?
        @Option(name: .customLong("hibernate-after"), help: ArgumentHelp("Sleep after this long without a session, or never.", valueName: "duration|never"))
        var hibernateAfter: String?
        func validate() throws {
            if ttl == nil && hibernateAfter == nil { throw ValidationError("nothing to change: give --ttl or --hibernate-after") }
        }
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            var body = UpdateDatabaseRequest()
            body.ttl = ttl
            body.hibernateAfter = hibernateAfter
            _ = try await api.call(.updateDatabase(name, body))
            try await DBCommand.show(api, name, output)
        }
    }

    /// `devdb db show`, which create, reset, start and update end with.
    static func show(_ api: APIClient, _ name: String, _ output: OutputFormat) async throws {
        let (d, data) = try await api.call(.database(name))
        if output.isConnection { return try ConnectionOutput.render(d, output) }
        output.render(data) {
            printFields([("name", d.name), ("project", d.project), ("owner", d.owner), ("state", d.state),
                         ("asleep since", d.hibernatedAt.map { "\(Human.relative($0)) (\(iso($0)))" }), ("pending", d.pending), ("phase", d.phase),
                         ("reason", d.reason), ("generation", d.generation.map(String.init)), ("schema only", d.schemaOnly == true ? "yes (no rows)" : nil), ("postgres", d.postgres.map(String.init)), ("base", d.base),
                         ("host", d.host), ("hostaddr", d.hostaddr), ("port", String(d.port)), ("user", d.user),
                         ("password", tablesHideSecrets && d.password != nil ? "(hidden: CI is set; -o env, dotenv or github hand it on)" : d.password),
                         ("database", d.database), ("clone method", d.cloneMethod), ("note", d.note),
                         ("sleeps after", d.hibernateAfterSeconds.map { "\(Human.hibernateAfter($0)) without a session" } ?? "never"),
                         ("expires", d.expiresAt.map { "\(Human.relative($0)) (\(iso($0)))" } ?? "never"), ("created", Human.relative(d.createdAt)), ("uri", tablesHideSecrets ? d.uri.map { _ in "(hidden: CI is set)" } : d.uri)])
            if let hint = d.hint { print("\n\(hint)") }
            if d.isConnectable {
                if d.knownState != .ready { print("\nasleep: connecting wakes it (a few seconds)") }
                if let psql = d.psql { print("\nconnect with:\n  \(tablesHideSecrets ? "devdb db connect \(d.name)" : psql)") }
            }
        }
    }
}

extension DBCommand {
    /// The database NAME, or nil when there is none (of yours).
    static func find(_ api: APIClient, _ name: String) async throws -> DatabaseView? {
        do { return try await api.call(.database(name)).0 } catch let e as CLIError where e.code == Exit.notFound { return nil }
    }
}

/// Why a database cannot be connected to now, and what to do, fitted to its state. For a failed
/// or unavailable database the API's view has the hint (DevDBAPI/Views.swift); the others get
/// advice about connecting, which the view has no reason to give.
func cannotConnect(_ d: DatabaseView) -> String {
    let why = d.reason.map { ": \($0)" } ?? ""
    let hint = d.hint.map { "\nhint: \($0)" } ?? ""
    switch d.knownState {
    case .failed?:
        return "database \(d.name) failed\(why)\(hint)"
    case .deleting?:
        return "database \(d.name) is being deleted\nhint: make another with devdb db create --project \(d.project)"
    case .unavailable?:
        return "database \(d.name) is unavailable\(why)\(hint)"
    default:
        return "database \(d.name) is \(d.state)\(d.phase.map { " (\($0))" } ?? "")\nhint: wait until it is ready: devdb db show \(d.name), or create and reset with --wait"
    }
}
