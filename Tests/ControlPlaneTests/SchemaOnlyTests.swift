import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    /// `devdb db create --schema-only` (issue #28): the project's schema with no rows, made once
    /// per generation and cloned after that.
    @Suite struct SchemaOnlyDatabases {
        @Test func theSchemaWithoutRowsMadeOncePerGeneration() throws {
            let f = try ControlPlaneFixture.get()
            try f.richProject()
            let started = Date()
            let first = try f.devdb(["db", "create", "so-a", "--project", "rich", "--schema-only", "--ttl", "1h", "--wait"])
            let firstSeconds = Date().timeIntervalSince(started)
            #expect(first.status == 0, "\(first.output)")
            let a = try f.json(["db", "show", "so-a"])
            #expect(a["schema_only"] as? Bool == true, "\(a)")
            let generation = try #require(a["generation"] as? Int)
            let copy = f.dataDirectory.appendingPathComponent("generations/rich/\(generation)/schema-only/pgdata")
            let made = try #require(try FileManager.default.attributesOfItem(atPath: copy.path)[.modificationDate] as? Date)
            let line = try #require(a["psql"] as? String)
            // No rows, sequences from their start; types, functions, triggers and extensions are there.
            let rows = try f.runPsqlLine(line, "SELECT (SELECT count(*) FROM customers) + (SELECT count(*) FROM billing.payments) || ' ' || total(1) || ' ' || 'happy'::mood || ' ' || (SELECT extname FROM pg_extension WHERE extname = 'pg_trgm') || ' ' || nextval('customers_id_seq')")
            #expect(rows.status == 0 && rows.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0 0 happy pg_trgm 1", "\(rows.output)")
            let trigger = try f.runPsqlLine(line, "INSERT INTO customers (name) VALUES ('  tidy  ') RETURNING name")
            #expect(trigger.stdout.hasPrefix("tidy\n"), "the trigger runs: \(trigger.output)")
            // The same schema as the generation, object by object.
            let diff = try f.devdb(["db", "diff", "rich@latest", "so-a", "--exit-code"])
            #expect(diff.status == 0 && diff.stdout.isEmpty, "\(diff.output)")

            // A second one is a clone of the copy made for the first.
            let again = Date()
            let second = try f.devdb(["db", "create", "so-b", "--project", "rich", "--schema-only", "--ttl", "1h", "--wait"])
            #expect(second.status == 0, "\(second.output)")
            print("schema-only create: first (makes the copy) \(String(format: "%.1f", firstSeconds)) s, second (a clone) \(String(format: "%.1f", Date().timeIntervalSince(again))) s")
            #expect(try FileManager.default.attributesOfItem(atPath: copy.path)[.modificationDate] as? Date == made, "made once per generation")
            // --wait shows each step (polled every 0.3 s; making the copy takes longer): only the first makes it.
            #expect(first.stderr.contains("making the schema-only copy of generation \(generation)"), "\(first.stderr)")
            #expect(!second.stderr.contains("making the schema-only copy"), "the second one made the copy again: \(second.stderr)")
            // A reset goes back to no rows; the name with data is another database.
            #expect(try f.devdb(["db", "reset", "so-a", "--yes", "--wait"]).status == 0)
            let afterReset = try f.runPsqlLine(line, "SELECT count(*) FROM customers")
            #expect(afterReset.stdout.hasPrefix("0"), "\(afterReset.output)")
            let withData = try f.devdb(["db", "create", "so-a", "--project", "rich", "--if-not-exists"])
            #expect(withData.status == 6 && withData.stderr.contains("schema-only, not with data"), "\(withData.output)")
            let branch = try f.devdb(["db", "create", "so-c", "--from", "so-a", "--schema-only"])
            #expect(branch.status == 2 && branch.stderr.contains("--schema-only"), "\(branch.output)")
            // The sample project too: its tables, foreign keys and sequences, no rows.
            try f.shopProject()
            #expect(try f.devdb(["db", "create", "so-shop", "--project", "shop", "--schema-only", "--ttl", "1h", "--wait"]).status == 0)
            let shop = try f.runPsqlLine(try #require(try f.json(["db", "show", "so-shop"])["psql"] as? String),
                                         "INSERT INTO customers (name) VALUES ('first') RETURNING id, (SELECT count(*) FROM orders)")
            #expect(shop.status == 0 && shop.stdout.hasPrefix("1|0\n"), "\(shop.output)")
            #expect(try f.devdb(["db", "diff", "shop@latest", "so-shop", "--exit-code"]).status == 0)
            for name in ["so-a", "so-b", "so-shop"] { #expect(try f.devdb(["db", "delete", name, "--wait"]).status == 0) }
        }
    }
}
