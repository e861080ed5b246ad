import DevDBTestSupport
import Foundation
import Testing

/// A small seeded generator, so a failing run can be repeated: DEVDB_CHAOS_SEED=<seed> swift test --filter chaos
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What one request did: accepted (2xx), refused (4xx, 503 while Redis is away), or unknown
/// (the connection broke: the API was killed while answering, so it may or may not have happened).
enum Outcome: Equatable { case accepted, refused(Int), unknown }

/// One operation a user started, in the order that user started them.
struct Step: Sendable {
    let name: String
    let op: String
    let outcome: Outcome
    let started: Double
}

extension ControlPlaneEndToEnd {
    /// The real API, router, Redis and Postgres under concurrent operations of three users while
    /// the API is killed with SIGKILL and restarted and Redis is restarted; then the invariants.
    @Suite struct Chaos {
        @Test func concurrentOperationsWithCrashesLeaveAConsistentInstallation() throws {
            let seed = ProcessInfo.processInfo.environment["DEVDB_CHAOS_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: 1...999_999)
            let operationsPerUser = Int(ProcessInfo.processInfo.environment["DEVDB_CHAOS_OPS"] ?? "") ?? 12
            print("chaos seed \(seed) (repeat with DEVDB_CHAOS_SEED=\(seed))")
            let f = try ControlPlaneFixture(prefix: "devdb-chaos", persistentRedis: true, extraAPIArguments: ["--reconcile-interval", "2"])
            let dump = "file://\(f.dumps.path)/shop.dump"
            #expect(try f.devdb(["project", "create", "shop", "--dump", dump, "--wait"]).status == 0)
            #expect(try f.devdb(["project", "create", "extra", "--dump", dump, "--wait"]).status == 0)
            let users = ["ana", "ben", "cy"]
            let tokens = try users.map { try f.token(for: $0) }
            // Databases that sleep after a second idle, used only by sessions that open and close
            // at random all through the chaos: no session may end that its client did not end.
            let sleeper = try f.token(for: "dee")
            var made: [(name: String, password: String)] = []
            for i in 0..<2 {
                let d = try f.json(["db", "create", "chaos-sleepy-\(i)", "--project", "shop", "--hibernate-after", "1s", "--wait"], token: sleeper)
                made.append(("chaos-sleepy-\(i)", try #require(d["password"] as? String)))
            }
            let sleepy = made
            let sessionsDone = Atomic2(false)
            let sessionLog = Mutex2<(opened: Int, refused: [String], cut: [String])>((0, [], []))
            let started = Date()
            let log = Mutex2<[Int: [Step]]>([:])

            /// The snapshots of a database, by GET (empty when it is gone or the API is away).
            @Sendable func snapshotNames(_ name: String, token: String) -> [String] {
                guard let r = try? run(["curl", "-s", "-m", "30", "-H", "Authorization: Bearer \(token)", "\(f.server)/v1/databases/\(name)/snapshots"], check: false),
                      let object = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else { return [] }
                return (object["items"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
            }

            /// Waits up to a few seconds for a database to be ready (as a user would before a snapshot).
            @Sendable func awaitReady(_ name: String, token: String) {
                for _ in 0..<40 {
                    if let r = try? run(["curl", "-s", "-m", "30", "-H", "Authorization: Bearer \(token)", "\(f.server)/v1/databases/\(name)"], check: false),
                       let object = try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] {
                        let state = object["state"] as? String
                        if state == "ready" || state == "failed" || state == nil { return }
                    }
                    usleep(200_000)
                }
            }

            @Sendable func http(_ method: String, _ path: String, token: String, body: String? = nil) -> Outcome {
                var argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "60", "-X", method,
                            "-H", "Authorization: Bearer \(token)"]
                if let body { argv += ["-H", "Content-Type: application/json", "-d", body] }
                guard let r = try? run(argv + ["\(f.server)\(path)"], timeout: 90, check: false), let code = Int(r.stdout), code != 0 else { return .unknown }
                return (200..<300).contains(code) ? .accepted : .refused(code)
            }

            // Sessions on the sleepy databases, on threads of their own (concurrentPerform runs only
            // as many workers at once as there are cores): open at random moments (often near the
            // idle deadline), stay silent a while, query again; a session that answered its first
            // query and then ended is a session sleep (or anything else) cut.
            let sessionWorkers = DispatchGroup()
            for (k, (name, password)) in sleepy.enumerated() {
                sessionWorkers.enter()
                Thread.detachNewThread {
                    var rng = SplitMix64(state: seed &+ UInt64(100 + k))
                    while !sessionsDone.value {
                        usleep(UInt32.random(in: 300_000...1_600_000, using: &rng))
                        let hold = Double.random(in: 0...2.5, using: &rng)
                        let (ok, output) = HibernationFence.session(port: f.router.port, name: name, password: password, hold: hold)
                        sessionLog.withLock { l in
                            l.opened += 1
                            if !ok { output.hasPrefix("1\n") ? l.cut.append("\(name): \(output)") : l.refused.append("\(name): \(output)") }
                        }
                    }
                    sessionWorkers.leave()
                }
            }
            DispatchQueue.concurrentPerform(iterations: users.count + 1) { worker in
                var rng = SplitMix64(state: seed &+ UInt64(worker) &* 7919)
                if worker == users.count {
                    // Faults: the API killed and restarted, later Redis restarted.
                    usleep(UInt32.random(in: 2_000_000...5_000_000, using: &rng))
                    do { try f.restartAPI(SIGKILL) } catch { Issue.record("API restart: \(error)") }
                    usleep(UInt32.random(in: 2_000_000...5_000_000, using: &rng))
                    do { try f.redis.restart(downFor: 1.5) } catch { Issue.record("Redis restart: \(error)") }
                    return
                }
                let user = users[worker], token = tokens[worker]
                let names = (0..<3).map { "chaos-\(user)-\($0)" }
                var steps: [Step] = []
                // What this user believes exists, so most operations aim at a database that does.
                var alive: Set<String> = []
                func record(_ name: String, _ op: String, _ outcome: Outcome, at t: Double) {
                    steps.append(Step(name: name, op: op, outcome: outcome, started: t))
                    if outcome == .accepted && op == "create" { alive.insert(name) }
                    if (outcome == .accepted && op == "delete") || (outcome == .refused(404) && op != "create") { alive.remove(name) }
                }
                for i in 0..<operationsPerUser {
                    // Operations aim at a database the user believes exists (one in ten at any name);
                    // creates at a free name.
                    let existing = alive.sorted()
                    let free = names.filter { !alive.contains($0) }
                    var name = !existing.isEmpty && Int.random(in: 0..<10, using: &rng) > 0
                        ? existing.randomElement(using: &rng)! : names.randomElement(using: &rng)!
                    let t = Date().timeIntervalSince(started)
                    // Every user does one reset+delete of one database 0 ms apart.
                    // Each user starts with a database; halfway comes the reset+delete pair.
                    let kind = i == 0 ? 30 : i == operationsPerUser / 2 ? 99 : Int.random(in: 0..<100, using: &rng)
                    if (25..<38).contains(kind) || (10..<18).contains(kind), let f = free.randomElement(using: &rng) { name = f }
                    switch kind {
                    case 0..<10:
                        awaitReady(name, token: token)
                        record(name, "snapshot", http("POST", "/v1/databases/\(name)/snapshots", token: token, body: "{}"), at: t)
                    case 10..<18:
                        // A branch of another of this user's databases, from its state now or a snapshot.
                        let origin = existing.filter { $0 != name }.randomElement(using: &rng) ?? names.randomElement(using: &rng)!
                        awaitReady(origin, token: token)
                        let snaps = snapshotNames(origin, token: token)
                        let from = Bool.random(using: &rng) || snaps.isEmpty ? origin : "\(origin)@\(snaps.randomElement(using: &rng)!)"
                        record(name, "create", http("POST", "/v1/databases", token: token, body: #"{"from":"\#(from)","name":"\#(name)"}"#), at: t)
                    case 18..<22:
                        if let snap = snapshotNames(name, token: token).randomElement(using: &rng) {
                            record(name, "reset", http("POST", "/v1/databases/\(name)/reset", token: token, body: #"{"to":"\#(snap)"}"#), at: t)
                        }
                    case 22..<25:
                        if let snap = snapshotNames(name, token: token).randomElement(using: &rng) {
                            record(name, "snapshot-delete", http("DELETE", "/v1/databases/\(name)/snapshots/\(snap)", token: token), at: t)
                        }
                    case 25..<38:  // create
                        let project = Int.random(in: 0..<5, using: &rng) == 0 ? "extra" : "shop"
                        record(name, "create", http("POST", "/v1/databases", token: token, body: #"{"project":"\#(project)","name":"\#(name)"}"#), at: t)
                    case 38..<55:
                        record(name, "reset", http("POST", "/v1/databases/\(name)/reset", token: token, body: #"{"latest":false}"#), at: t)
                    case 55..<65:
                        record(name, "reset", http("POST", "/v1/databases/\(name)/reset", token: token, body: #"{"latest":true}"#), at: t)
                    case 65..<88:
                        record(name, "delete", http("DELETE", "/v1/databases/\(name)", token: token), at: t)
                    case 88..<93:
                        record("shop", "refresh", http("POST", "/v1/projects/\(["shop", "extra"].randomElement(using: &rng)!)/refresh", token: f.adminToken), at: t)
                    case 93..<96:
                        record("extra", "project-delete", http("DELETE", "/v1/projects/extra", token: f.adminToken), at: t)
                    case 96..<99:
                        record("extra", "project-create", http("POST", "/v1/projects", token: f.adminToken,
                                                             body: #"{"name":"extra","dump_url":"\#(dump)"}"#), at: t)
                    default:
                        // Make sure there is something to reset, then reset and delete it at once.
                        record(name, "create", http("POST", "/v1/databases", token: token, body: #"{"project":"shop","name":"\#(name)"}"#), at: t)
                        usleep(UInt32.random(in: 0...3_000_000, using: &rng))
                        let t2 = Date().timeIntervalSince(started)
                        let outcomes = Mutex2<[Outcome]>([.unknown, .unknown])
                        let name = name
                        DispatchQueue.concurrentPerform(iterations: 2) { j in
                            let o = j == 0 ? http("POST", "/v1/databases/\(name)/reset", token: token, body: "{}") : http("DELETE", "/v1/databases/\(name)", token: token)
                            outcomes.withLock { $0[j] = o }
                        }
                        let (reset, delete) = outcomes.withLock { ($0[0], $0[1]) }
                        record(name, "reset", reset, at: t2)
                        record(name, "delete", delete, at: t2)
                    }
                    usleep(UInt32.random(in: 0...400_000, using: &rng))
                }
                log.withLock { $0[worker] = steps }
            }
            sessionsDone.value = true
            sessionWorkers.wait()
            // The sleepy databases sleep and wake on their own; keep them as they are for the checks.
            for (name, _) in sleepy { _ = try f.devdb(["db", "update", name, "--hibernate-after", "never"], token: sleeper) }
            let sessions = sessionLog.withLock { $0 }
            print("chaos seed \(seed): \(sessions.opened) sessions on sleeping databases, \(sessions.cut.count) cut, \(sessions.refused.count) refused")
            #expect(sessions.cut.isEmpty, "seed \(seed): sessions cut: \(sessions.cut.prefix(5))")
            // Refused only while Redis was down (the route store unavailable, for a route not cached).
            #expect(sessions.refused.allSatisfy { $0.contains("DevDB cannot look up database") }, "seed \(seed): \(sessions.refused.prefix(5))")
            #expect(sessions.opened >= 4, "seed \(seed): the sessions worker barely ran")
            let steps = log.withLock { $0 }.values.flatMap { $0 }
            let opsRun = steps.count
            #expect(opsRun >= 30, "seed \(seed): only \(opsRun) operations")
            print("chaos seed \(seed): \(opsRun) operations, accepted \(steps.filter { $0.outcome == .accepted }.count), "
                  + "refused \(steps.filter { if case .refused = $0.outcome { return true }; return false }.count), unknown \(steps.filter { $0.outcome == .unknown }.count)")

            var codes: [Int: Int] = [:]
            for case .refused(let c) in steps.map(\.outcome) { codes[c, default: 0] += 1 }
            print("chaos seed \(seed): refusals by status \(codes.sorted { $0.key < $1.key }); accepted by operation "
                  + "\(Dictionary(grouping: steps.filter { $0.outcome == .accepted }, by: \.op).mapValues(\.count).sorted { $0.key < $1.key })")
            // Refusals are 404 (gone), 409 (conflict) or 503 (Redis away); never an internal error.
            #expect(codes.keys.allSatisfy { [404, 409, 503].contains($0) }, "seed \(seed): \(codes)")

            // Within a bounded time, nothing is left in a transitional state.
            let transitional = Set(["provisioning", "restoring", "cloning", "starting", "deleting", "snapshotting", "hibernating", "waking"])
            var databases: [[String: Any]] = []
            try waitUntil(timeout: 180, interval: 1, "every database settled (seed \(seed))") {
                guard let list = try? f.json(["db", "list"])["items"] as? [[String: Any]] else { return false }
                databases = list
                return !list.contains { transitional.contains($0["state"] as? String ?? "") }
            }
            try checkInvariants(f, databases: databases, steps: steps, seed: seed)
        }

        /// The catalog, the routes, the port leases, the processes and the directories agree.
        func checkInvariants(_ f: ControlPlaneFixture, databases: [[String: Any]], steps: [Step], seed: UInt64) throws {
            let context = "seed \(seed)"
            var byName: [String: [String: Any]] = [:]
            for d in databases { byName[d["name"] as! String] = d }
            // Details (backend ports are not in list output): read the records.
            var backendPort: [String: Int] = [:]
            for name in byName.keys {
                let raw = try f.redis.cli(["GET", "devdb:database:\(name)"]).stdout
                let record = try #require(try JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any], "\(context): record \(name)")
                if let p = record["backend_port"] as? Int { backendPort[name] = p }
            }

            // Every accepted delete happened; every accepted create that no accepted delete followed exists.
            for (name, ops) in Dictionary(grouping: steps.filter { $0.name.hasPrefix("chaos-") }, by: \.name) {
                var expected: Bool? = false  // nil: unknown
                for s in ops.sorted(by: { $0.started < $1.started || ($0.started == $1.started && $0.op == "reset") }) {
                    switch (s.op, s.outcome) {
                    case ("create", .accepted): expected = true
                    case ("create", .refused(409)): if expected == false { expected = nil }  // it existed after all (a create whose answer was lost)
                    case ("delete", .accepted): expected = false
                    case ("create", .unknown), ("delete", .unknown): expected = nil
                    default: break
                    }
                }
                if let expected { #expect((byName[name] != nil) == expected, "\(context): \(name) exists=\(byName[name] != nil), expected \(expected); \(ops)") }
            }

            // Routes ↔ ready (or unavailable) databases, one to one, no two on one port.
            let routeKeys = try f.redis.cli(["--scan", "--pattern", "devdb:route:*"]).stdout.split(separator: "\n").map(String.init)
            var routePorts: [Int: String] = [:]
            for key in routeKeys {
                let name = String(key.dropFirst("devdb:route:".count))
                let fields = try f.redis.cli(["HGET", key, "port"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
                let state = byName[name]?["state"] as? String
                #expect(state == "ready" || state == "unavailable" || state == "hibernated", "\(context): route \(name) for a database in state \(state ?? "none")")
                let port = Int(fields) ?? -1
                #expect(port == backendPort[name], "\(context): route \(name) port \(port) != backend \(backendPort[name] ?? -1)")
                #expect(routePorts[port] == nil, "\(context): routes \(routePorts[port] ?? "") and \(name) share port \(port)")
                routePorts[port] = name
            }
            for (name, d) in byName where d["state"] as? String == "ready" {
                #expect(routeKeys.contains("devdb:route:\(name)"), "\(context): ready \(name) has no route")
            }

            // Leases ↔ databases.
            let leases = try f.redis.cli(["HGETALL", "devdb:local:ports"]).stdout.split(separator: "\n").map(String.init)
            var leased: [Int: String] = [:]
            for i in stride(from: 0, to: leases.count - 1, by: 2) { leased[Int(leases[i]) ?? -1] = leases[i + 1] }
            for (port, owner) in leased { #expect(backendPort[owner] == port, "\(context): lease \(port) of \(owner) without that database") }
            for (name, port) in backendPort { #expect(leased[port] == name, "\(context): \(name) on \(port) holds no lease") }

            // Instance directories and Postgres processes ↔ records that serve.
            // A sleeping database keeps its instance directory; only its Postgres is stopped.
            let serving = Set(byName.filter { ["ready", "unavailable", "hibernated"].contains($0.value["state"] as? String ?? "") }.keys)
            let dirs = Set((try? FileManager.default.contentsOfDirectory(atPath: f.dataDirectory.appendingPathComponent("instances").path)) ?? [])
            #expect(dirs == serving, "\(context): instance directories \(dirs.sorted()) != serving databases \(serving.sorted())")
            let instancesRoot = f.dataDirectory.appendingPathComponent("instances").path + "/"
            var postmasters: [String] = []
            for pid in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where Int(pid) != nil {
                guard let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { continue }
                let argv = cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                guard argv.first?.hasSuffix("/postgres") == true, let i = argv.firstIndex(of: "-D"), i + 1 < argv.count else { continue }
                let dir = argv[i + 1]
                if dir.hasPrefix(instancesRoot) { postmasters.append(String(dir.dropFirst(instancesRoot.count).dropLast("/pgdata".count))) }
                #expect(!dir.hasPrefix(f.dataDirectory.appendingPathComponent("generations").path), "\(context): a seed's postgres still runs: \(dir)")
            }
            #expect(Set(postmasters) == Set(byName.filter { $0.value["state"] as? String == "ready" }.keys) && postmasters.count == Set(postmasters).count,
                    "\(context): postmasters \(postmasters.sorted()) != ready databases")

            // Generation keys and directories belong to existing projects and generations.
            let projects = Set(try f.redis.cli(["SMEMBERS", "devdb:projects"]).stdout.split(separator: "\n").map(String.init))
            for key in try f.redis.cli(["--scan", "--pattern", "devdb:generation:*"]).stdout.split(separator: "\n") {
                #expect(projects.contains(String(key.split(separator: ":")[2])), "\(context): \(key) of a deleted project")
            }
            let generationsRoot = f.dataDirectory.appendingPathComponent("generations").path
            for p in (try? FileManager.default.contentsOfDirectory(atPath: generationsRoot)) ?? [] {
                for n in (try? FileManager.default.contentsOfDirectory(atPath: "\(generationsRoot)/\(p)")) ?? [] {
                    #expect(try f.redis.cli(["EXISTS", "devdb:generation:\(p):\(n)"]).stdout.hasPrefix("1"), "\(context): directory of generation \(p)/\(n) has no record")
                }
            }

            // Snapshots: none left being taken; ready ones have their files, and only they do; a
            // snapshot of a deleted database stays only while branches use it; the users of a
            // snapshot are exactly the branches made from it.
            var snapshotState: [String: String] = [:]
            for key in try f.redis.cli(["--scan", "--pattern", "devdb:snapshot:*"]).stdout.split(separator: "\n") where !key.hasSuffix(":users") {
                let parts = key.split(separator: ":")
                let raw = try f.redis.cli(["GET", String(key)]).stdout
                let s = try JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any] ?? [:]
                let reference = "\(parts[2])@\(parts[3])"
                snapshotState[reference] = s["state"] as? String
                #expect(s["state"] as? String != "taking", "\(context): snapshot \(reference) still being taken")
                let users = Set(try f.redis.cli(["SMEMBERS", "devdb:snapshot:\(parts[2]):\(parts[3]):users"]).stdout.split(separator: "\n").map(String.init))
                if byName[String(parts[2])] == nil { #expect(!users.isEmpty, "\(context): snapshot \(reference) of a deleted database, used by no branch") }
                var branches: Set<String> = []
                for name in byName.keys {
                    let record = try JSONSerialization.jsonObject(with: Data(try f.redis.cli(["GET", "devdb:database:\(name)"]).stdout.utf8)) as? [String: Any]
                    if record?["base"] as? String == reference { branches.insert(name) }
                }
                #expect(users == branches, "\(context): users of \(reference) \(users.sorted()) != branches \(branches.sorted())")
            }
            let snapshotsRoot = f.dataDirectory.appendingPathComponent("snapshots").path
            var snapshotDirs: Set<String> = []
            for db in (try? FileManager.default.contentsOfDirectory(atPath: snapshotsRoot)) ?? [] {
                for snap in (try? FileManager.default.contentsOfDirectory(atPath: "\(snapshotsRoot)/\(db)")) ?? [] { snapshotDirs.insert("\(db)@\(snap)") }
            }
            #expect(snapshotDirs == Set(snapshotState.filter { $0.value == "ready" }.keys), "\(context): snapshot directories \(snapshotDirs.sorted()) != ready snapshots \(snapshotState)")

            // Multi-key changes are transactions, so even after a SIGKILL there is nothing for
            // reconcile to repair in the catalog; a repair means a transaction left keys behind.
            let repairs = f.catalogRepairs()
            #expect(repairs.isEmpty, "\(context): \(repairs)")

            // Every ready database answers through the router, as itself, with its data.
            for (name, d) in byName where d["state"] as? String == "ready" {
                let shown = try f.json(["db", "show", name])
                let line = try #require(shown["psql"] as? String)
                let r = try f.runPsqlLine(line, "SELECT count(*) || ' ' || current_setting('port') FROM orders")
                #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "2000 \(backendPort[name] ?? -1)", "\(context): \(name): \(r.output)")
            }
        }
    }
}

/// A flag for the test's threads.
final class Atomic2<Value: Sendable>: @unchecked Sendable {
    private var stored: Value
    private let lock = NSLock()
    init(_ value: Value) { stored = value }
    var value: Value {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}

/// A lock around a value, for the test's threads.
final class Mutex2<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func withLock<R>(_ body: (inout Value) -> R) -> R { lock.lock(); defer { lock.unlock() }; return body(&value) }
}
