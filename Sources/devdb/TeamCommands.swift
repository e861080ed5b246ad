import ArgumentParser
import DevDBAPIContract
import Foundation

// `devdb quota`, `devdb audit` and `devdb usage` (#27, docs/teams.md).

extension Endpoint where Answer == QuotaView {
    static func quota(_ user: String) -> Self { .init(method: "GET", path: "/v1/quotas/\(user)") }
    static func setQuota(_ user: String, _ body: SetQuotaRequest) -> Self { .init(method: "PUT", path: "/v1/quotas/\(user)", body: body) }
}

extension Endpoint where Answer == ItemList<AuditEntryView> {
    static func audit(_ query: [String: String]) -> Self { .init(method: "GET", path: "/v1/audit", query: query) }
}

extension Endpoint where Answer == UsageView {
    static func usage(_ query: [String: String]) -> Self { .init(method: "GET", path: "/v1/usage", query: query) }
}

/// `devdb quota`: limits per user and the default for everyone.
struct QuotaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "quota", abstract: "Limits and use: databases, snapshots, storage, awake at once, longest ttl.",
                                                    subcommands: [Show.self, SetLimits.self])

    struct Show: APICommand {
        static let configuration = CommandConfiguration(abstract: "Show a user's limits and use (yours without USER; admins: anyone's, or --default).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user (admins).") var user: String?
        @Flag(name: .customLong("default"), help: "The default limits for everyone.") var isDefault = false
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let who: String
            if isDefault { who = "default" } else if let user { who = user } else { who = try await api.call(.whoAmI).0.user }
            let (q, data) = try await api.call(.quota(who))
            output.render(data) { QuotaCommand.printQuota(q) }
        }
    }

    struct SetLimits: APICommand {
        static let configuration = CommandConfiguration(
            commandName: "set", abstract: "Set a user's limits, or the default (admins).",
            discussion: "Options left out stay as they are; none removes a limit (a user's own: the default applies again). Example: devdb quota set kate --databases 5 --awake 2 --storage 20GiB --max-ttl 7d")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The user.") var user: String?
        @Flag(name: .customLong("default"), help: "Set the default for everyone instead.") var isDefault = false
        @Option(help: ArgumentHelp("Databases (not being deleted), or none.", valueName: "n")) var databases: String?
        @Option(help: ArgumentHelp("Snapshots, or none.", valueName: "n")) var snapshots: String?
        @Option(help: ArgumentHelp("Bytes of snapshots, e.g. 20GiB, or none.", valueName: "size")) var storage: String?
        @Option(help: ArgumentHelp("Databases awake at once, or none.", valueName: "n")) var awake: String?
        @Option(name: .customLong("max-ttl"), help: ArgumentHelp("The longest ttl, e.g. 7d, or none.", valueName: "duration")) var maxTTL: String?

        func validate() throws {
            guard (user != nil) != isDefault else { throw ValidationError("give a USER or --default (one of them)") }
            guard databases != nil || snapshots != nil || storage != nil || awake != nil || maxTTL != nil else {
                throw ValidationError("nothing to set: give --databases, --snapshots, --storage, --awake or --max-ttl")
            }
            for (flag, value) in [("--databases", databases), ("--snapshots", snapshots), ("--awake", awake)] {
                if let value, value != "none", Int(value).map({ $0 < 0 }) ?? true { throw ValidationError("\(flag) takes a number from 0 up, or none") }
            }
        }

        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            func count(_ v: String?) -> Int? { v.map { $0 == "none" ? -1 : Int($0)! } }
            var body = SetQuotaRequest()
            body.databases = count(databases); body.snapshots = count(snapshots); body.awake = count(awake)
            body.storage = storage; body.maxTtl = maxTTL
            let (q, data) = try await api.call(.setQuota(isDefault ? "default" : user!, body))
            output.render(data) { QuotaCommand.printQuota(q) }
        }
    }

    static func printQuota(_ q: QuotaView) {
        func limit(_ v: String?, own: Bool) -> String { (v ?? "none") + (own || v == nil ? "" : " (default)") }
        let l = q.limits, o = q.own, u = q.use
        let rows: [[String]] = [
            ["databases", limit(l.databases.map(String.init), own: o.databases != nil), u.map { String($0.databases) } ?? "-"],
            ["snapshots", limit(l.snapshots.map(String.init), own: o.snapshots != nil), u.map { String($0.snapshots) } ?? "-"],
            ["storage", limit(l.storageBytes.map { Human.bytes($0) }, own: o.storageBytes != nil), u.map { Human.bytes($0.storageBytes) } ?? "-"],
            ["awake", limit(l.awake.map(String.init), own: o.awake != nil), u.map { String($0.awake) } ?? "-"],
            ["max ttl", limit(l.maxTtlSeconds.map { Human.duration($0) }, own: o.maxTtlSeconds != nil), "-"],
        ]
        print("quota of \(q.user)")
        printTable(["resource", "limit", "use"], rows)
    }
}

/// `devdb audit`: who did what, newest first.
struct AuditCommand: APICommand {
    static let configuration = CommandConfiguration(commandName: "audit", abstract: "The audit log: who did what to which object (yours; admins: everyone's).")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Only this user's entries (admins; devdb for automatic actions).") var user: String?
    @Option(help: ArgumentHelp("Only entries about this database, DB@SNAP, project, user or token.", valueName: "name")) var object: String?
    @Option(help: ArgumentHelp("Only this action (database.create), or a kind ending in a dot (database.).", valueName: "action")) var action: String?
    @Option(help: ArgumentHelp("Only entries since this long ago (24h, 7d) or an ISO 8601 time.", valueName: "duration")) var since: String?
    @Option(help: "At most this many entries.") var limit = 200
    func run(_ api: APIClient, _ output: OutputFormat) async throws {
        var q: [String: String] = ["limit": String(limit)]
        q["user"] = user; q["object"] = object; q["action"] = action; q["since"] = since
        let (list, data) = try await api.call(.audit(q))
        output.render(data) {
            printTable(["time", "user", "how", "action", "object", "outcome", "client"],
                       list.items.map { [iso($0.time), $0.user, $0.how, $0.action, $0.object,
                                         $0.outcome + ($0.status.map { " (\($0))" } ?? ""), $0.client ?? "-"] })
        }
    }
}

/// `devdb usage`: what each user or project used over a period.
struct UsageCommand: APICommand {
    static let configuration = CommandConfiguration(commandName: "usage", abstract: "Database-hours awake and asleep, storage GiB-hours, snapshots and wakes per user or project.")
    @OptionGroup var global: GlobalOptions
    @Option(help: ArgumentHelp("The period: since this long ago (default 30d) or an ISO 8601 time.", valueName: "duration")) var since: String?
    @Option(help: ArgumentHelp("Group by user or project.", valueName: "user|project")) var by = "user"
    func validate() throws {
        guard by == "user" || by == "project" else { throw ValidationError("--by takes user or project") }
    }
    func run(_ api: APIClient, _ output: OutputFormat) async throws {
        var q = ["by": by]
        q["since"] = since
        let (u, data) = try await api.call(.usage(q))
        output.render(data) {
            print("usage from \(iso(u.since)) to \(iso(u.until))")
            func row(_ i: UsageItemView) -> [String] {
                [i.key, String(format: "%.2f", i.awakeHours), String(format: "%.2f", i.asleepHours), String(format: "%.2f", i.storageGibHours),
                 String(i.snapshots), String(i.wakes)]
            }
            printTable([by, "awake h", "asleep h", "storage GiB·h", "snapshots", "wakes"], u.items.map(row) + [row(u.total)])
        }
    }
}
