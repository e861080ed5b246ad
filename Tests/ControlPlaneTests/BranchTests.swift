import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    /// Snapshots of one's own database, branches from them and resets to them, end to end with
    /// the built API, CLI and router and real PostgreSQL.
    @Suite struct Branches {
        func count(_ f: ControlPlaneFixture, _ line: String) throws -> String {
            try f.runPsqlLine(line, "SELECT count(*) FROM orders").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        @Test func snapshotBranchResetAndDeleteWithDependentBranches() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let kate = try f.token(for: "kate-b"), bob = try f.token(for: "bob-b")
            let src = try f.json(["db", "create", "br-src", "--project", "shop", "--wait"], token: kate)
            let srcLine = try #require(src["psql"] as? String)

            // Snapshot: the database serves again right after, and says how long it did not.
            let snap = try f.devdb(["db", "snapshot", "br-src", "--as", "before", "--wait"], token: kate)
            #expect(snap.status == 0, "\(snap.output)")
            #expect(snap.stdout.contains("was unavailable for"), "\(snap.stdout)")
            #expect(try f.json(["db", "show", "br-src"], token: kate)["state"] as? String == "ready")
            let listed = try #require(try f.json(["db", "snapshots", "br-src"], token: kate)["items"] as? [[String: Any]])
            #expect(listed.count == 1 && listed[0]["name"] as? String == "before" && listed[0]["state"] as? String == "ready")
            #expect(["copy", "reflink"].contains(listed[0]["method"] as? String ?? ""))
            #expect((listed[0]["size_bytes"] as? Int ?? 0) > 1_000_000)

            // Change data, then branch from the snapshot: the old data, new credentials, its own route.
            #expect(try f.runPsqlLine(srcLine, "DELETE FROM orders WHERE id <= 1500").status == 0)
            let copy = try f.json(["db", "create", "br-copy", "--from", "br-src@before", "--wait"], token: kate)
            #expect(copy["state"] as? String == "ready" && copy["project"] as? String == "shop" && copy["owner"] as? String == "kate-b")
            #expect(copy["base"] as? String == "br-src@before")
            #expect(copy["password"] as? String != src["password"] as? String)
            let copyLine = try #require(copy["psql"] as? String)
            #expect(try count(f, copyLine) == "2000")
            #expect(try count(f, srcLine) == "500")

            // Reset to the snapshot: old data behind the same connection line.
            let reset = try f.devdb(["db", "reset", "br-src", "--to", "before", "--wait"], token: kate)
            #expect(reset.status == 0, "\(reset.output)")
            #expect(try count(f, srcLine) == "2000")
            let afterReset = try f.json(["db", "show", "br-src"], token: kate)
            #expect(afterReset["password"] as? String == src["password"] as? String && afterReset["psql"] as? String == srcLine)

            // A branch from the state now (an implicit snapshot).
            #expect(try f.runPsqlLine(srcLine, "DELETE FROM orders WHERE id <= 1000").status == 0)
            let now = try f.json(["db", "create", "br-now", "--from", "br-src", "--wait"], token: kate)
            #expect(try count(f, try #require(now["psql"] as? String)) == "1000")

            // Others get 404 for all of it.
            #expect(try f.devdb(["db", "snapshots", "br-src"], token: bob).status == 5)
            #expect(try f.devdb(["db", "snapshot", "br-src"], token: bob).status == 5)
            #expect(try f.devdb(["db", "create", "bob-br", "--from", "br-src@before"], token: bob).status == 5)
            #expect(try f.devdb(["db", "reset", "br-src", "--to", "before"], token: bob).status == 5)
            #expect(try f.devdb(["db", "snapshot", "delete", "br-src", "before"], token: bob).status == 5)

            // Names are unique per database; the limit (--max-snapshots 4 here) is a clear 409.
            let twice = try f.devdb(["db", "snapshot", "br-src", "--as", "before"], token: kate)
            #expect(twice.status == 6 && twice.stderr.contains("already has a snapshot"), "\(twice.output)")
            #expect(try f.devdb(["db", "snapshot", "br-src", "--as", "third", "--wait"], token: kate).status == 0)
            #expect(try f.devdb(["db", "snapshot", "br-src", "--as", "fourth", "--wait"], token: kate).status == 0)
            let full = try f.devdb(["db", "snapshot", "br-src", "--as", "fifth"], token: kate)
            #expect(full.status == 6 && full.stderr.contains("the most one database may have"), "\(full.output)")
            // A snapshot a branch uses cannot be deleted; an unused one can.
            let used = try f.devdb(["db", "snapshot", "delete", "br-src", "before"], token: kate)
            #expect(used.status == 6 && used.stderr.contains("br-copy"), "\(used.output)")
            #expect(try f.devdb(["db", "snapshot", "delete", "br-src", "fourth"], token: kate).status == 0)
            #expect(!FileManager.default.fileExists(atPath: f.dataDirectory.appendingPathComponent("snapshots/br-src/fourth").path))

            // Deleting the origin: unused snapshots go, those branches use stay (and it says which).
            let del = try f.json(["db", "delete", "br-src"], token: kate)
            #expect(del["snapshots_deleted"] as? [String] == ["third"])
            let kept = (del["snapshots_kept"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
            #expect(kept.count == 2 && kept.contains("before"), "\(kept)")
            try waitUntil(timeout: 60, "br-src deleted") { (try? f.devdb(["db", "show", "br-src"], token: kate).status) == 5 }
            // Files go right after the records (the records first, so no branch is made from files being removed).
            try waitUntil(timeout: 10, "the unused snapshot's files removed") {
                !FileManager.default.fileExists(atPath: f.dataDirectory.appendingPathComponent("snapshots/br-src/third").path)
            }
            #expect(FileManager.default.fileExists(atPath: f.dataDirectory.appendingPathComponent("snapshots/br-src/before/pgdata").path))
            // The branch still resets to the snapshot it was made from.
            #expect(try f.runPsqlLine(copyLine, "DELETE FROM orders").status == 0)
            #expect(try f.devdb(["db", "reset", "br-copy", "--wait"], token: kate).status == 0)
            #expect(try count(f, copyLine) == "2000")
            // When the last branch goes, the snapshot goes.
            #expect(try f.devdb(["db", "delete", "br-copy", "--wait"], token: kate).status == 0)
            #expect(try f.devdb(["db", "delete", "br-now", "--wait"], token: kate).status == 0)
            #expect(try f.redis.cli(["--scan", "--pattern", "devdb:snapshot:br-src:*"]).stdout.isEmpty)
            try waitUntil(timeout: 10, "the last snapshot's files removed") {
                !FileManager.default.fileExists(atPath: f.dataDirectory.appendingPathComponent("snapshots/br-src").path)
            }
        }

        @Test func anAPIKilledWhileASnapshotIsTakenFinishesItOnRestart() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let d = try f.json(["db", "create", "snap-crash", "--project", "shop", "--wait"])
            let line = try #require(d["psql"] as? String)
            #expect(try f.devdb(["db", "snapshot", "snap-crash", "--as", "midway"]).status == 0)
            try f.restartAPI(SIGKILL)
            try waitUntil(timeout: 60, "the snapshot finished after the restart") {
                let s = try? f.json(["db", "snapshots", "snap-crash"])["items"] as? [[String: Any]]
                return s?.first?["state"] as? String == "ready"
            }
            try waitUntil(timeout: 30, "the database ready again") { (try? f.json(["db", "show", "snap-crash"]))?["state"] as? String == "ready" }
            #expect(try count(f, line) == "2000")
            let branch = try f.json(["db", "create", "snap-crash-b", "--from", "snap-crash@midway", "--wait"])
            #expect(try count(f, try #require(branch["psql"] as? String)) == "2000")
            for n in ["snap-crash-b", "snap-crash"] { #expect(try f.devdb(["db", "delete", n, "--wait"]).status == 0) }
            // Its route stayed while it was snapshotting (state starting): nothing to repair.
            #expect(f.catalogRepairs(mentioning: "snap-crash").isEmpty, "\(f.catalogRepairs())")
        }
    }
}
