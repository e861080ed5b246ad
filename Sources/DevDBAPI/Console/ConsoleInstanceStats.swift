import DevDBAPIContract
import DevDBCatalog
import DevDBProvisioning
import Foundation
import Synchronization

/// Size and open sessions of the databases a page shows, asked of their running instances
/// (`pg_database_size` and `pg_stat_activity`, with each database's own credentials, directly,
/// not through a router: the question must not count as use and keep it awake). Bounded: only
/// the first `maxAsked` awake databases of a page, `concurrency` psql at a time across all pages
/// (one question per instance, shared by pages asking at once), within `budget` (what has not
/// answered by then is shown as unknown); answers, failures included,
/// are kept `ttlSeconds`, so a page reloaded or left open asks each instance at most that often.
/// The names come from the API's own list or show (which decided what the caller may see).
final class ConsoleInstanceStats: Sendable {
    /// What a page shows for one database: the numbers, or why there are none.
    struct Stats: Sendable, Equatable {
        var sizeBytes: Int64?
        var sessions: Int?
        /// Why the numbers are not known (shown as the title of "—").
        var why: String?
    }

    let catalog: any CatalogStore
    let maxAsked = 25
    let concurrency = 6
    let budget: Duration = .milliseconds(1500)
    let ttlSeconds: Double = 30
    /// Answers by database name, with when they were had and the instance they came from.
    private let cache = Mutex<[String: (at: Date, instance: String, stats: Stats)]>([:])
    /// The API's psql runs, bounded and shared across page requests.
    let questions: ConsoleInstanceQuestions<Stats>

    init(catalog: any CatalogStore) {
        self.catalog = catalog
        questions = ConsoleInstanceQuestions(width: concurrency)
    }

    /// Stats for each view (awake: asked or cached; otherwise why not).
    func stats(for views: [DatabaseView], now: Date = Date()) async -> [String: Stats] {
        var out: [String: Stats] = [:]
        var awake: [String] = []
        for v in views {
            switch v.state {
            case "ready": awake.append(v.name)
            case "hibernated", "hibernating":
                out[v.name] = Stats(why: "asleep: its instance is stopped, so neither is known until it wakes")
            default:
                out[v.name] = Stats(why: "not known while it is \(v.state)")
            }
        }
        for name in awake.dropFirst(maxAsked) {
            out[name] = Stats(why: "not asked: a page asks only its first \(maxAsked) awake databases; open the database to see")
        }
        let asked = Array(awake.prefix(maxAsked))
        guard !asked.isEmpty else { return out }
        let records = (try? await catalog.databasesAsRead(asked)) ?? [:]
        var toAsk: [DatabaseRecord] = []
        for name in asked {
            guard let d = records[name]?.value, let host = d.backendHost, let port = d.backendPort else {
                out[name] = Stats(why: "its instance's address is not known yet")
                continue
            }
            let instance = "\(host):\(port)"
            if let hit = cache.withLock({ $0[name] }), hit.instance == instance, now.timeIntervalSince(hit.at) < ttlSeconds {
                out[name] = hit.stats
            } else {
                toAsk.append(d)
            }
        }
        for (name, stats) in await ask(toAsk) {
            out[name] = stats
            if let d = records[name]?.value, let host = d.backendHost, let port = d.backendPort {
                cache.withLock { $0[name] = (now, "\(host):\(port)", stats) }
            }
        }
        cache.withLock { c in c = c.filter { now.timeIntervalSince($0.value.at) < ttlSeconds } }
        return out
    }

    /// Asks the instances through `questions` (which bounds the psql runs), all within `budget`.
    private func ask(_ records: [DatabaseRecord]) async -> [String: Stats] {
        guard !records.isEmpty else { return [:] }
        let budget = self.budget, questions = self.questions
        var out: [String: Stats] = [:]
        await withTaskGroup(of: (String, Stats?)?.self) { group in
            group.addTask { try? await Task.sleep(for: budget); return nil }  // the deadline
            for d in records {
                let key = "\(d.name)@\(d.backendHost ?? ""):\(d.backendPort.map(String.init) ?? "")"
                // No answer: the question this one shared was cut short by another page's deadline.
                group.addTask { (d.name, await questions.ask(key) { await Self.query(d) }) }
            }
            var answered = 0
            while let next = await group.next() {
                guard let (name, stats) = next else { break }  // out of time: the rest are cancelled
                if let stats { out[name] = stats }
                answered += 1
                if answered == records.count { break }
            }
            group.cancelAll()
        }
        for d in records where out[d.name] == nil { out[d.name] = Stats(why: "its instance did not answer in time") }
        return out
    }

    /// One psql run against the instance itself: its size and its client sessions other than this one.
    static func query(_ d: DatabaseRecord) async -> Stats {
        guard let host = d.backendHost, let port = d.backendPort else { return Stats(why: "its instance's address is not known yet") }
        let sql = "SELECT pg_database_size(current_database()), count(*) FILTER (WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) FROM pg_stat_activity"
        let conninfo = "host=\(host) port=\(port) user=\(d.user) dbname=\(d.database) sslmode=disable connect_timeout=2 application_name=devdb-console"
        guard let out = try? await Subprocess.run(["psql", "-X", "-At", "-c", sql, conninfo],
                                                  environment: ["PGPASSWORD": d.password, "PGOPTIONS": "-c statement_timeout=2000"]),
              out.status == 0 else {
            return Stats(why: "its instance could not be asked just now")
        }
        let parts = out.output.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|")
        guard parts.count == 2, let size = Int64(parts[0]), let sessions = Int(parts[1]) else {
            return Stats(why: "its instance gave an answer DevDB cannot read")
        }
        return Stats(sizeBytes: size, sessions: sessions)
    }
}
