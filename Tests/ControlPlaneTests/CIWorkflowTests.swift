import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    /// The GitHub Action and the GitLab CI template of issue #28, run here with the environment
    /// their runners set and a real API; the files checked against the published schemas.
    @Suite struct CIWorkflows {
        static let root = TestPaths.repositoryRoot

        /// A runner's scratch: its files, and what every step gets.
        struct Runner {
            let directory: URL
            init(_ f: ControlPlaneFixture, _ name: String) throws {
                directory = f.directory.appendingPathComponent("\(name)-\(UUID().uuidString.prefix(6))")
                try FileManager.default.createDirectory(at: directory.appendingPathComponent("temp"), withIntermediateDirectories: true)
                for file in ["env", "output", "path"] { try Data().write(to: directory.appendingPathComponent(file)) }
            }
            func read(_ file: String) throws -> String { try String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8) }
        }

        /// `run` with the runner's variables only (no DEVDB_* or PG* of this process), PATH without devdb.
        static func step(_ argv: [String], _ environment: [String: String], in directory: URL? = nil) throws -> CommandResult {
            var env = environment
            env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
            env["HOME"] = env["HOME"] ?? NSTemporaryDirectory()
            for key in ["PGPASSWORD", "PGHOST", "PGUSER", "PGDATABASE", "PGPORT", "DATABASE_URL", "DEVDB_NAME"] where env[key] == nil { env[key] = "" }
            let cd = directory.map { ["cd \"\($0.path)\" && "] } ?? [""]
            return try run(["sh", "-c", cd[0] + "exec \"$@\"", "sh"] + argv, environment: env, timeout: 300, check: false)
        }

        @Test func theActionCreatesResetsAndDeletesWithWhatGitHubSets() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let runner = try Runner(f, "gh-action")
            let script = Self.root.appendingPathComponent(".github/actions/devdb-database/devdb-database.sh").path
            var env = ["CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_EVENT_NAME": "pull_request", "GITHUB_REF": "refs/pull/4711/merge",
                       "GITHUB_HEAD_REF": "feature/Ünïcode_branch.v2", "GITHUB_REF_NAME": "4711/merge",
                       "GITHUB_ENV": runner.directory.appendingPathComponent("env").path, "GITHUB_OUTPUT": runner.directory.appendingPathComponent("output").path,
                       "GITHUB_PATH": runner.directory.appendingPathComponent("path").path, "RUNNER_TEMP": runner.directory.appendingPathComponent("temp").path,
                       "DEVDB_SERVER": f.server, "DEVDB_TOKEN": f.adminToken, "INPUT_COMMAND": "create", "INPUT_PROJECT": "shop", "INPUT_TTL": "1h",
                       "INPUT_CLI_URL": "file://" + (try TestPaths.binary("devdb")), "XDG_CONFIG_HOME": runner.directory.appendingPathComponent("config").path]
            let created = try Self.step(["bash", script], env)
            #expect(created.status == 0, "\(created.output)")
            let outputs = ControlPlaneFixture.keyValues(try runner.read("output"))
            let vars = ControlPlaneFixture.keyValues(try runner.read("env"))
            #expect(outputs["name"] == "shop-pr-4711", "the pull request's number names it: \(outputs)")
            let password = try #require(vars["PGPASSWORD"])
            let lines = created.output.split(separator: "\n")
            #expect(lines.contains("::add-mask::\(f.adminToken)") && lines.contains("::add-mask::\(password)"), "\(created.output)")
            for secret in [password, f.adminToken] {
                #expect(lines.filter { $0.contains(secret) && !$0.hasPrefix("::add-mask::") }.isEmpty, "the log shows a secret: \(created.output)")
            }
            // The CLI it installed is on the next steps' PATH; what it set connects through the router.
            #expect(try runner.read("path").contains(runner.directory.appendingPathComponent("temp/devdb-cli").path))
            let psql = try run(["psql", "-X", "-At", "-c", "SELECT count(*) FROM orders"], environment: vars, timeout: 60, check: false)
            #expect(psql.status == 0 && psql.stdout.hasPrefix("2000"), "\(psql.output)")

            // A push: command reset gets the same database back to its data.
            env["INPUT_COMMAND"] = "reset"
            let reset = try Self.step(["bash", script], env)
            #expect(reset.status == 0 && reset.output.contains("resetting"), "\(reset.output)")
            // Closed: deleted, and a second delete (a re-run) is fine.
            env["INPUT_COMMAND"] = "delete"
            #expect(try Self.step(["bash", script], env).status == 0)
            #expect(try f.devdb(["db", "show", "shop-pr-4711"]).status == 5)
            let again = try Self.step(["bash", script], env)
            #expect(again.status == 0 && again.output.contains("does not exist"), "\(again.output)")
            // Mistakes get an error annotation that says what to do.
            env["INPUT_COMMAND"] = "create"
            env["INPUT_PROJECT"] = ""
            let noProject = try Self.step(["bash", script], env)
            #expect(noProject.status == 1 && noProject.output.contains("::error title=DevDB::the project input is empty"), "\(noProject.output)")
        }

        @Test func theGitLabTemplateCreatesAndDeletesWithWhatGitLabSets() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let runner = try Runner(f, "gitlab")
            let template = Self.root.appendingPathComponent("ci/gitlab/devdb.gitlab-ci.yml").path
            let helper = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil)).appendingPathComponent("ci_job.py").path
            func job(_ name: String) throws -> String {
                let r = try run([TestPaths.venvPython, helper, template, name], check: false)
                #expect(r.status == 0, "\(r.output)")
                return r.stdout
            }
            var env = ["CI": "true", "GITLAB_CI": "true", "CI_PROJECT_DIR": runner.directory.path, "CI_MERGE_REQUEST_IID": "4712",
                       "CI_COMMIT_REF_NAME": "feature/GitLab_MR", "CI_COMMIT_REF_SLUG": "feature-gitlab-mr", "CI_PIPELINE_SOURCE": "merge_request_event",
                       "DEVDB_PROJECT": "shop", "DEVDB_CLI_URL": "file://" + (try TestPaths.binary("devdb")), "DEVDB_SERVER": f.server, "DEVDB_TOKEN": f.adminToken,
                       "XDG_CONFIG_HOME": runner.directory.appendingPathComponent("config").path]
            let create = try Self.step(["bash", "-c", try job(".devdb-create")], env, in: runner.directory)
            #expect(create.status == 0, "\(create.output)")
            // The dotenv report: plain KEY=value lines (GitLab keeps quotes), few enough for GitLab's limit.
            let report = try runner.read("devdb.env")
            let vars = ControlPlaneFixture.keyValues(report)
            #expect(vars["DEVDB_NAME"] == "shop-pr-4712", "\(report)")
            #expect(!report.contains("'") && !report.contains("\"") && vars.count <= 10, "\(report)")
            let password = try #require(vars["PGPASSWORD"])
            #expect(!create.output.contains(password) && !create.output.contains(f.adminToken), "the job log shows a secret: \(create.output)")
            let psql = try run(["psql", "-X", "-At", "-c", "SELECT count(*) FROM customers"], environment: vars, timeout: 60, check: false)
            #expect(psql.status == 0 && psql.stdout.hasPrefix("500"), "\(psql.output)")
            // A re-run of the pipeline with DEVDB_RESET resets it, same password.
            env["DEVDB_RESET"] = "true"
            let rerun = try Self.step(["bash", "-c", try job(".devdb-create")], env, in: runner.directory)
            #expect(rerun.status == 0 && rerun.output.contains("resetting"), "\(rerun.output)")
            #expect(ControlPlaneFixture.keyValues(try runner.read("devdb.env"))["PGPASSWORD"] == password)
            // The stop job, with DEVDB_NAME from the report as GitLab hands it on; twice is fine.
            env["DEVDB_NAME"] = vars["DEVDB_NAME"]
            let delete = try Self.step(["bash", "-c", try job(".devdb-delete")], env, in: runner.directory)
            #expect(delete.status == 0, "\(delete.output)")
            #expect(try f.devdb(["db", "show", "shop-pr-4712"]).status == 5)
            #expect(try Self.step(["bash", "-c", try job(".devdb-delete")], env, in: runner.directory).status == 0)
        }

        /// The action, the example workflow and the GitLab files against the schemas GitHub and
        /// GitLab publish (vendored by check-jsonschema, installed by scripts/install-deps), and
        /// every input of the action reaching its script.
        @Test func theFilesAreValidAgainstThePublishedSchemas() throws {
            let checker = ProcessInfo.processInfo.environment["DEVDB_CHECK_JSONSCHEMA"]
                ?? Self.root.appendingPathComponent(".venv/bin/check-jsonschema").path
            try #require(FileManager.default.isExecutableFile(atPath: checker), "no check-jsonschema: run scripts/install-deps")
            let files: [(String, String)] = [
                ("vendor.github-actions", ".github/actions/devdb-database/action.yml"),
                ("vendor.github-workflows", "docs/examples/github-pr-database.yml"),
                ("vendor.gitlab-ci", "ci/gitlab/devdb.gitlab-ci.yml"),
                ("vendor.gitlab-ci", "ci/gitlab/example.gitlab-ci.yml"),
            ]
            for (schema, file) in files {
                let r = try run([checker, "--builtin-schema", schema, Self.root.appendingPathComponent(file).path], timeout: 120, check: false)
                #expect(r.status == 0, "\(file): \(r.output)")
            }
            // The checker finds a mistake (so a pass means something).
            let broken = FileManager.default.temporaryDirectory.appendingPathComponent("broken-action-\(UUID().uuidString.prefix(6)).yml")
            let action = try String(contentsOf: Self.root.appendingPathComponent(".github/actions/devdb-database/action.yml"), encoding: .utf8)
            try action.replacingOccurrences(of: "using: composite", with: "using: compost").write(to: broken, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(at: broken) }
            #expect(try run([checker, "--builtin-schema", "vendor.github-actions", broken.path], timeout: 120, check: false).status != 0)
            // Every input reaches the script as INPUT_<NAME>, and the script reads each.
            let check = """
                import sys, yaml
                action = yaml.safe_load(open(sys.argv[1]))
                script = open(sys.argv[2]).read()
                env = action["runs"]["steps"][0]["env"]
                for name in action["inputs"]:
                    if name in ("server", "token"):
                        continue
                    key = "INPUT_" + name.upper().replace("-", "_")
                    assert env.get(key) == "${{ inputs.%s }}" % name, key
                    assert key in script, key + " unused"
                print("ok")
                """
            let r = try run([TestPaths.venvPython, "-c", check, Self.root.appendingPathComponent(".github/actions/devdb-database/action.yml").path,
                             Self.root.appendingPathComponent(".github/actions/devdb-database/devdb-database.sh").path], check: false)
            #expect(r.status == 0 && r.stdout.contains("ok"), "\(r.output)")
        }
    }
}
