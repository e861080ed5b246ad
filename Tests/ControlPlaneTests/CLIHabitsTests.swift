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
    }
}
