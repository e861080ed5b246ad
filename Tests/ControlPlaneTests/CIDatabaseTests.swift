import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneFixture {
    /// Runs the `devdb` CLI with extra environment (a CI runner's variables).
    func devdb(_ args: [String], environment: [String: String], token: String? = nil) throws -> CommandResult {
        try run([try TestPaths.binary("devdb")] + args,
                environment: ["DEVDB_SERVER": server, "DEVDB_TOKEN": token ?? adminToken,
                              "XDG_CONFIG_HOME": directory.appendingPathComponent("cli-config").path].merging(environment) { $1 },
                timeout: 180, check: false)
    }

    /// `KEY=value` lines (GitHub's files, and dotenv without quotes) as a dictionary.
    static func keyValues(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            var value = String(line[line.index(after: eq)...])
            if value.count >= 2, value.first == "'", value.last == "'" { value = String(value.dropFirst().dropLast()) }
            out[String(line[..<eq])] = value
        }
        return out
    }
}

extension ControlPlaneEndToEnd {
    /// A database per pull request (issue #28): the CLI unattended and idempotent, the
    /// connection handed on as variables, and no password in a CI log.
    @Suite struct CIDatabases {
        @Test func createIsIdempotentAndHandsTheConnectionOnWithoutLoggingThePassword() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let name = try f.devdb(["name-for", "feature/CI_Idempotent", "--prefix", "shop"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(name.hasPrefix("shop-feature-ci-idempotent-") && name.count == "shop-feature-ci-idempotent-".count + 8, "\(name)")
            let runner = f.directory.appendingPathComponent("gh-\(UUID().uuidString.prefix(6))")
            try FileManager.default.createDirectory(at: runner, withIntermediateDirectories: true)
            let (envFile, outFile) = (runner.appendingPathComponent("env"), runner.appendingPathComponent("output"))
            try Data().write(to: envFile)
            try Data().write(to: outFile)
            let gh = ["CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_ENV": envFile.path, "GITHUB_OUTPUT": outFile.path]

            // First run: created, waited for, handed on through GitHub's files, password masked.
            let first = try f.devdb(["db", "create", name, "--project", "shop", "--if-not-exists", "--ttl", "2h", "--wait", "-o", "github"], environment: gh)
            #expect(first.status == 0, "\(first.output)")
            let env = ControlPlaneFixture.keyValues(try String(contentsOf: envFile, encoding: .utf8))
            let outputs = ControlPlaneFixture.keyValues(try String(contentsOf: outFile, encoding: .utf8))
            let password = try #require(env["PGPASSWORD"])
            #expect(password.count >= 12)
            for key in ["DATABASE_URL", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE"] { #expect(env[key]?.isEmpty == false, "\(key)") }
            #expect(outputs["name"] == name && outputs["password"] == password && outputs["database-url"] == env["DATABASE_URL"])
            let logLines = first.output.split(separator: "\n")
            #expect(logLines.first == "::add-mask::\(password)", "the mask comes before anything else: \(first.output)")
            #expect(logLines.filter { $0.contains(password) && !$0.hasPrefix("::add-mask::") }.isEmpty, "the log shows the password: \(first.output)")
            // What the next step gets connects, through the router, with the URL and with the PG* variables.
            let viaVars = try run(["psql", "-X", "-At", "-c", "SELECT count(*) FROM orders"], environment: env, timeout: 60, check: false)
            #expect(viaVars.status == 0 && viaVars.stdout.hasPrefix("2000"), "\(viaVars.output)")
            let viaURL = try run(["psql", "-X", "-At", try #require(env["DATABASE_URL"]), "-c", "INSERT INTO customers (name) VALUES ('from ci') RETURNING 1"],
                                 timeout: 60, check: false)
            #expect(viaURL.status == 0, "\(viaURL.output)")
            // The sample project: rows written are not schema changes; the generation and the database have the same schema.
            let diff = try f.devdb(["db", "diff", "shop@latest", name, "--exit-code"])
            #expect(diff.status == 0 && diff.stdout.isEmpty, "\(diff.output)")

            // A re-run of the same job gets the same database, as it is.
            let again = try f.devdb(["db", "create", name, "--project", "shop", "--if-not-exists", "--wait", "-o", "env"], environment: ["CI": "true"])
            #expect(again.status == 0 && again.stderr.contains("using it as it is"), "\(again.output)")
            #expect(again.stdout.contains("export PGPASSWORD='\(password)'"), "\(again.stdout)")
            let counted = try run(["sh", "-c", "eval \"$1\" && psql -X -At -c \"SELECT count(*) FROM customers WHERE name = 'from ci'\"", "sh", again.stdout],
                                  timeout: 60, check: false)
            #expect(counted.status == 0 && counted.stdout.hasPrefix("1"), "the row written before is still there: \(counted.output)")
            // With --reset-if-exists it is put back to its generation: same password, the row gone.
            let reset = try f.devdb(["db", "create", name, "--project", "shop", "--reset-if-exists", "--wait", "-o", "dotenv"], environment: ["CI": "true"])
            #expect(reset.status == 0 && reset.stderr.contains("resetting it"), "\(reset.output)")
            let dotenv = ControlPlaneFixture.keyValues(reset.stdout)
            #expect(dotenv["PGPASSWORD"] == password && reset.stdout.contains("\nPGSSLMODE=require\n"), "\(reset.stdout)")
            let afterReset = try run(["psql", "-X", "-At", "-c", "SELECT count(*) FROM customers WHERE name = 'from ci'"], environment: dotenv, timeout: 60, check: false)
            #expect(afterReset.status == 0 && afterReset.stdout.hasPrefix("0"), "\(afterReset.output)")

            // The same name for another project is an error that says so.
            let other = try f.devdb(["db", "create", name, "--project", "blog", "--if-not-exists"], environment: [:])
            #expect(other.status == 6 && other.stderr.contains("copy of project shop, not blog"), "\(other.output)")
            // Without the flags an existing name is still a conflict, as before.
            #expect(try f.devdb(["db", "create", name, "--project", "shop"]).status == 6)

            // In a CI log, tables do not show the password; json (for the job to read) still does.
            let table = try f.devdb(["db", "show", name], environment: ["CI": "true"])
            #expect(table.status == 0 && !table.output.contains(password) && table.stdout.contains("hidden"), "\(table.output)")
            let people = try f.devdb(["db", "show", name], environment: ["CI": ""])
            #expect(people.stdout.contains(password), "outside CI the table is as before")
            // The connection formats are for create and show only; github needs its files.
            #expect(try f.devdb(["db", "list", "-o", "env"]).status == 2)
            let noFiles = try f.devdb(["db", "show", name, "-o", "github"], environment: ["GITHUB_ENV": "", "GITHUB_OUTPUT": ""])
            #expect(noFiles.status == 2 && noFiles.stderr.contains("GITHUB_ENV") && !noFiles.output.contains(password), "\(noFiles.output)")

            // delete --if-exists: gone, and gone again, both exit 0; without it a missing one is 5.
            #expect(try f.devdb(["db", "delete", name, "--if-exists", "--wait"]).status == 0)
            let twice = try f.devdb(["db", "delete", name, "--if-exists"])
            #expect(twice.status == 0 && twice.stdout.contains("does not exist"), "\(twice.output)")
            #expect(try f.devdb(["db", "delete", name]).status == 5)
        }
    }
}
