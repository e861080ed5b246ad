import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    /// What a new user hits first (issue #16): connect's `--`, usage exit codes, secrets kept out
    /// of argv, reserved names, who sees dump URLs, and 400s in the API's words.
    @Suite struct CLIHabits {
        @Test func connectPassesWhatFollowsTheDoubleDashToPsql() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            #expect(try f.devdb(["db", "create", "habits-db", "--project", "shop", "--wait"]).status == 0)
            let r = try f.devdb(["db", "connect", "habits-db", "--", "-X", "-At", "-c", "SELECT 6 * 7"])
            #expect(r.status == 0 && r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "42", "\(r.output)")
            #expect(!r.stderr.contains("extra command-line argument"), "\(r.stderr)")
            // The printed psql line keeps the password out of psql's argv, and works as printed.
            let d = try f.json(["db", "show", "habits-db"])
            let line = try #require(d["psql"] as? String)
            #expect(line.hasPrefix("PGPASSWORD='") && !line.contains("password="), "\(line)")
            #expect(try f.runPsqlLine(line, "SELECT 1").stdout.hasPrefix("1"))
            #expect(try f.devdb(["db", "delete", "habits-db", "--wait"]).status == 0)
        }

        @Test func usageErrorsExitTwoAsDocumented() throws {
            let f = try ControlPlaneFixture.get()
            let missing = try f.devdb(["db", "create", "x"])
            #expect(missing.status == 2, "\(missing.output)")
            #expect(missing.stderr.contains("--project"), "\(missing.stderr)")
            #expect(try f.devdb(["login"]).status == 2)
            // A mistyped subcommand gets what was meant.
            let typo = try f.devdb(["db", "craete", "x"])
            #expect(typo.status == 2 && typo.stderr.contains(#"did you mean "devdb db create""#), "\(typo.output)")
            let unknown = try f.devdb(["frobnicate"])
            #expect(unknown.status == 2 && unknown.stderr.contains("its commands are") && unknown.stderr.contains("project"), "\(unknown.output)")
            #expect(try f.devdb(["db", "list", "--project", "shop"]).status != 2, "real commands are untouched")
            // A default subcommand's arguments are not taken for mistyped commands.
            let snapshot = try f.devdb(["db", "snapshot", "no-such-db"])
            #expect(snapshot.status == 5, "devdb db snapshot NAME reaches the API: \(snapshot.output)")
        }

        @Test func loginReadsTheTokenFromStandardInput() throws {
            let f = try ControlPlaneFixture.get()
            let token = try f.token(for: "stdin-user")
            let config = f.directory.appendingPathComponent("cli-stdin-\(UUID().uuidString.prefix(6))")
            let r = try run([try TestPaths.binary("devdb"), "login", "--with-token", "--server", f.server],
                            environment: ["XDG_CONFIG_HOME": config.path, "DEVDB_TOKEN": ""], stdin: Data("\(token)\n".utf8), check: false)
            #expect(r.status == 0, "\(r.output)")
            let saved = try String(contentsOf: config.appendingPathComponent("devdb/config.json"), encoding: .utf8)
            #expect(saved.contains(token))
            let both = try run([try TestPaths.binary("devdb"), "login", "--with-token", "--token", token], environment: ["XDG_CONFIG_HOME": config.path], check: false)
            #expect(both.status == 2)
        }

        @Test func reservedNamesAndDumpURLsAreForAdmins() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let reserved = try f.devdb(["token", "create", "--user", "admin"])
            #expect(reserved.status != 0 && reserved.stderr.contains("reserved"), "\(reserved.output)")
            let user = try f.token(for: "plain-viewer")
            #expect(try f.json(["project", "show", "shop"], token: user)["dump_url"] == nil, "a plain user does not see where dumps live")
            #expect(try f.json(["project", "show", "shop"])["dump_url"] as? String != nil)
        }

        @Test func badBodiesGetAnAnswerInTheAPIsWords() throws {
            let f = try ControlPlaneFixture.get()
            func post(_ body: String?) throws -> (Int, String) {
                var args = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "\(f.server)/v1/projects",
                            "-H", "Authorization: Bearer \(f.adminToken)", "-H", "Content-Type: application/json"]
                if let body { args += ["-d", body] }
                let r = try run(args, check: false)
                var lines = r.stdout.components(separatedBy: "\n")
                let status = Int(lines.popLast() ?? "") ?? 0
                return (status, lines.joined(separator: "\n"))
            }
            let (empty, emptyBody) = try post(nil)
            #expect(empty == 400 && emptyBody.contains("has no body") && !emptyBody.contains("DecodingError"), "\(emptyBody)")
            let (wrong, wrongBody) = try post(#"{"name": 5, "dump_url": "file:///x"}"#)
            #expect(wrong == 400 && wrongBody.contains(#"field \"name\" must be a string"#), "\(wrongBody)")
            let (missing, missingBody) = try post(#"{"name": "x"}"#)
            #expect(missing == 400 && missingBody.contains(#"no field \"dump_url\""#), "\(missingBody)")
        }

        @Test func filtersThatCanMatchNothingAreErrorsAndJSONErrorsAreJSON() throws {
            let f = try ControlPlaneFixture.get()
            let bogus = try f.devdb(["db", "list", "--state", "bogus"])
            #expect(bogus.status == 1 && bogus.stderr.contains("unknown state") && bogus.stderr.contains("hibernated"), "\(bogus.output)")
            let nope = try f.devdb(["db", "list", "--project", "nope"])
            #expect(nope.status == 5 && nope.stderr.contains("project \"nope\""), "\(nope.output)")
            let json = try f.devdb(["db", "list", "--state", "bogus", "-o", "json"])
            let object = try JSONSerialization.jsonObject(with: Data(json.stderr.utf8)) as? [String: Any]
            #expect(object?["exit_code"] as? Int == 1 && object?["status"] as? Int == 400 && (object?["error"] as? String ?? "").contains("unknown state"),
                    "\(json.stderr)")
        }

        @Test func listsComeAPageAtATimeAndTheCLIFollowsThePages() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let token = try f.token(for: "pager")
            let names = ["pager-c", "pager-a", "pager-d", "pager-b", "pager-e"]
            for n in names { #expect(try f.devdb(["db", "create", n, "--project", "shop"], token: token).status == 0) }
            defer { for n in names { _ = try? f.devdb(["db", "delete", n, "--yes"], token: token) } }
            // Pages of two, in name order, each pointing at the next.
            var seen: [String] = [], after: String?
            repeat {
                let page = try f.json(["db", "list", "--limit", "2"] + (after.map { ["--after", $0] } ?? []), token: token)
                let items = try #require(page["items"] as? [[String: Any]]).compactMap { $0["name"] as? String }
                #expect(items.count <= 2)
                seen += items
                after = page["next"] as? String
                #expect(seen.count <= names.count, "pagination ends")
            } while after != nil && seen.count <= names.count
            #expect(seen == names.sorted(), "every database once, in name order: \(seen)")
            // The table says how to get the next page; without --limit every page is fetched.
            let first = try f.devdb(["db", "list", "--limit", "2"], token: token)
            #expect(first.stderr.contains("--after pager-b") && !first.stdout.contains("pager-c"), "\(first.output)")
            let all = try f.json(["db", "list"], token: token)
            #expect((all["items"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == names.sorted() && all["next"] == nil)
            // Following pages (two at a time here) prints one list, as one answer would.
            let paged = try f.devdb(["db", "list", "-o", "json"], token: token, environment: ["DEVDB_LIST_PAGE": "2"])
            let merged = try JSONSerialization.jsonObject(with: Data(paged.stdout.utf8)) as? [String: Any]
            #expect((merged?["items"] as? [[String: Any]])?.compactMap { $0["name"] as? String } == names.sorted() && merged?["next"] == nil,
                    "\(paged.output)")
            #expect((merged?["items"] as? [[String: Any]])?.allSatisfy { $0["project"] as? String == "shop" && $0["state"] is String } == true)
            let table = try f.devdb(["db", "list"], token: token, environment: ["DEVDB_LIST_PAGE": "2"])
            #expect(names.allSatisfy { n in table.stdout.split(separator: "\n").contains { $0.hasPrefix(n + " ") } }, "\(table.output)")
            let bad = try f.devdb(["db", "list", "--limit", "0"], token: token)
            #expect(bad.status != 0 && bad.stderr.contains("--limit must be from 1 to 1000"), "\(bad.output)")
        }

        @Test func ttlsHaveAMaximumAndCanBeExtended() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let tooLong = try f.devdb(["db", "create", "ttl-db", "--project", "shop", "--ttl", "999999d"])
            #expect(tooLong.status != 0 && tooLong.stderr.contains("longer than this installation allows (90d)"), "\(tooLong.output)")
            #expect(try f.devdb(["db", "create", "ttl-db", "--project", "shop", "--ttl", "1h", "--wait"]).status == 0)
            let before = try f.json(["db", "show", "ttl-db"])["expires_at"] as? String ?? ""
            #expect(try f.devdb(["db", "update", "ttl-db", "--ttl", "30d"]).status == 0)
            let after = try f.json(["db", "show", "ttl-db"])["expires_at"] as? String ?? ""
            #expect(after > before, "\(before) -> \(after)")
            #expect(try f.devdb(["db", "update", "ttl-db", "--ttl", "365d"]).status != 0)
            // A reset says that it ends open sessions; --yes is accepted (no terminal here, so no question).
            let reset = try f.devdb(["db", "reset", "ttl-db", "--yes", "--wait"])
            #expect(reset.status == 0 && reset.stderr.contains("ends every open session"), "\(reset.output)")
            #expect(try f.devdb(["db", "delete", "ttl-db", "--yes", "--wait"]).status == 0)
        }

        @Test func whoamiLogoutAndVersion() throws {
            let f = try ControlPlaneFixture.get()
            let user = try f.token(for: "who-user")
            let me = try f.devdb(["whoami"], token: user)
            #expect(me.status == 0 && me.stdout.contains("who-user") && !me.stdout.contains("(admin)"), "\(me.output)")
            #expect(try f.devdb(["whoami"]).stdout.contains("(admin)"))
            #expect(try f.devdb(["--version"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines).first?.isNumber == true)
            let config = f.directory.appendingPathComponent("cli-logout-\(UUID().uuidString.prefix(6))")
            let env = ["XDG_CONFIG_HOME": config.path, "DEVDB_TOKEN": ""]
            #expect(try run([try TestPaths.binary("devdb"), "login", "--token", user, "--server", f.server], environment: env, check: false).status == 0)
            #expect(try run([try TestPaths.binary("devdb"), "logout"], environment: env, check: false).status == 0)
            let after = try run([try TestPaths.binary("devdb"), "whoami", "--server", f.server], environment: env, check: false)
            #expect(after.status == 4, "no token any more: \(after.output)")
        }

        @Test func tablesShowHumanUnitsAndJSONTheExactValues() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let show = try f.devdb(["project", "show", "shop"])
            #expect(show.status == 0, "\(show.output)")
            let header = try #require(show.stdout.split(separator: "\n").first { $0.hasPrefix("GENERATION") })
            #expect(header.contains("DUMP") && header.contains("RESTORE") && !header.contains("RESTORE_S") && !header.contains("BYTES"), "\(header)")
            let row = try #require(show.stdout.split(separator: "\n").first { $0.contains(" ready ") && $0.first?.isNumber == true })
            #expect(row.range(of: #"\d+\.\d (B|KiB|MiB)"#, options: .regularExpression) != nil, "dump size in units: \(row)")
            #expect(row.range(of: #" \d+\.\d s "#, options: .regularExpression) != nil, "restore time in seconds: \(row)")
            #expect(row.range(of: #"\d+\.\d{4,}"#, options: .regularExpression) == nil, "no raw floats: \(row)")
            let generations = try #require(f.json(["project", "show", "shop"])["generations"] as? [[String: Any]])
            #expect(generations.contains { $0["restore_seconds"] is Double && $0["bytes_fetched"] is Int }, "json keeps exact numbers")

            _ = try f.token(for: "units-user")
            let tokens = try f.devdb(["token", "list"])
            let userRow = try #require(tokens.stdout.split(separator: "\n").first { $0.contains("units-user") })
            #expect(userRow.contains(" no ") && (userRow.hasSuffix("just now") || userRow.hasSuffix("ago")), "\(userRow)")
            #expect(tokens.stdout.split(separator: "\n").contains { $0.contains(" yes ") }, "the admin token: \(tokens.stdout)")

            #expect(try f.devdb(["db", "create", "units-db", "--project", "shop", "--ttl", "3h", "--wait"]).status == 0)
            let list = try f.devdb(["db", "list", "--project", "shop"])
            let dbRow = try #require(list.stdout.split(separator: "\n").first { $0.hasPrefix("units-db ") })
            #expect(dbRow.contains("in 3 h"), "expiry as a relative time: \(dbRow)")
            #expect(!dbRow.contains("T") || !dbRow.contains("Z"), "no ISO timestamps in the table: \(dbRow)")
            let shown = try f.devdb(["db", "show", "units-db"])
            #expect(shown.stdout.contains("in 3 h (20"), "relative and exact: \(shown.stdout)")
            #expect(try f.devdb(["db", "delete", "units-db", "--yes"]).status == 0)
        }

        @Test func waitingShowsOneLinePerStepWithElapsedTime() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            // Not a terminal: plain lines, each with the step's elapsed time.
            let refresh = try f.devdb(["project", "refresh", "shop", "--wait"])
            #expect(refresh.status == 0, "\(refresh.output)")
            let lines = refresh.stderr.split(separator: "\n").map(String.init)
            let steps = lines.filter { $0.hasPrefix("shop generation ") }
            // The first look comes right after the refresh is accepted, long before it is ready.
            #expect(steps.count >= 2, "a line per step: \(refresh.stderr)")
            #expect(steps.dropLast().allSatisfy { $0.range(of: #"\(\d+ s\)$|\(\d+ min( \d+ s)?\)$"#, options: .regularExpression) != nil }, "\(steps)")
            #expect(!steps.contains { $0.contains("fetching (fetching)") || $0.contains("restoring (restoring)") }, "\(steps)")
            #expect(steps.last?.contains("ready, restored in") == true, "\(steps)")
            #expect(Set(steps).count == steps.count, "a line only when something changed: \(steps)")

            let create = try f.devdb(["db", "create", "steps-db", "--project", "shop", "--wait"])
            #expect(create.status == 0, "\(create.output)")
            #expect(!create.stderr.contains("cloning (cloning)") && !create.stderr.contains("- 58"), "\(create.stderr)")
            #expect(create.stderr.split(separator: "\n").contains { $0.hasPrefix("steps-db: ") && $0.hasSuffix(" s)") }, "\(create.stderr)")

            // On a terminal (script(1) gives it one) the line is redrawn in place.
            let script = try run(["script", "-qec", "\(try TestPaths.binary("devdb")) db reset steps-db --yes --wait", "/dev/null"],
                                 environment: ["DEVDB_SERVER": f.server, "DEVDB_TOKEN": f.adminToken,
                                               "XDG_CONFIG_HOME": f.directory.appendingPathComponent("cli-config").path],
                                 timeout: 180, check: false)
            #expect(script.status == 0, "\(script.output)")
            #expect(script.stdout.contains("\r\u{1B}[Ksteps-db: "), "redrawn in place: \(script.stdout.debugDescription)")
            #expect(try f.devdb(["db", "delete", "steps-db", "--yes", "--wait"]).status == 0)
        }

        @Test func helpDescribesEveryArgumentAndAuthStatusSaysWhereThingsCameFrom() throws {
            let f = try ControlPlaneFixture.get()
            for (command, words) in [(["db", "list"], ["--project <project>", "Only databases of this project", "--owner <user>", "--state <state>"]),
                                     (["token", "create"], ["--user <user>", "reserved"]),
                                     (["db", "show"], ["<name>", "Your database"]),
                                     (["project", "show"], ["<name>", "The project"]),
                                     ([], ["Getting started:", "Exit codes:", "--generate-completion-script"])] {
                let help = try f.devdb(command + ["--help"])
                #expect(help.status == 0, "\(help.output)")
                for word in words { #expect(help.stdout.contains(word), "devdb \(command.joined(separator: " ")) --help lacks \(word): \(help.stdout)") }
            }
            let completion = try f.devdb(["--generate-completion-script", "bash"])
            #expect(completion.status == 0 && completion.stdout.contains("_devdb"), "\(completion.output)")

            let user = try f.token(for: "status-user")
            let status = try f.devdb(["auth", "status"], token: user)
            #expect(status.status == 0 && status.stdout.contains("status-user") && status.stdout.contains("(from DEVDB_TOKEN)")
                    && status.stdout.contains("(from DEVDB_SERVER)") && !status.stdout.contains(user), "\(status.output)")
            let refused = try f.devdb(["auth", "status"], token: "ddb_not_a_token")
            #expect(refused.status == 4, "\(refused.output)")
        }

        @Test func connectingToADatabaseThatCannotServeSaysWhatFitsItsState() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            #expect(try f.devdb(["db", "create", "going-db", "--project", "shop", "--wait"]).status == 0)
            #expect(try f.devdb(["db", "delete", "going-db", "--yes"]).status == 0)
            let r = try f.devdb(["db", "connect", "going-db", "--", "-c", "SELECT 1"])
            #expect(r.status != 0, "\(r.output)")
            // Either still deleting (and told so) or already gone (404): never told to wait for it.
            #expect(r.stderr.contains("is being deleted") || r.status == 5, "\(r.output)")
            #expect(!r.stderr.contains("wait until it is ready"), "\(r.output)")
        }
    }
}
