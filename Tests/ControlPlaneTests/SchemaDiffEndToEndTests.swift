import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneFixture {
    /// The project `rich`, made once from a dump with what a schema diff must see: an
    /// extension, a schema, enum and composite types, a domain, a partitioned table with
    /// partitions, identity and serial columns, checks, foreign keys, indexes, a view, functions
    /// and triggers.
    func richProject() throws {
        if try devdb(["project", "show", "rich"]).status == 0 { return }
        let pg = try PostgresServer(directory: directory, name: "rich-source")
        defer { pg.process.stop(SIGINT) }
        try pg.psql("CREATE DATABASE rich")
        let schema = try pg.psql("""
            CREATE EXTENSION pg_trgm;
            CREATE SCHEMA billing;
            CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
            CREATE TYPE pair AS (a int, b text);
            CREATE DOMAIN year AS integer CONSTRAINT year_check CHECK (VALUE >= 1901 AND VALUE <= 2155);
            CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, mood mood DEFAULT 'ok', born year);
            CREATE TABLE billing.payments (id bigint GENERATED ALWAYS AS IDENTITY, customer_id int REFERENCES customers,
                amount numeric(8,2) CHECK (amount > 0), paid_at timestamptz NOT NULL, PRIMARY KEY (id, paid_at)) PARTITION BY RANGE (paid_at);
            CREATE TABLE billing.payments_2026 PARTITION OF billing.payments FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
            CREATE TABLE billing.payments_2027 PARTITION OF billing.payments FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
            CREATE INDEX payments_customer ON billing.payments (customer_id);
            CREATE INDEX customers_name_trgm ON customers USING gin (name gin_trgm_ops);
            CREATE VIEW happy_customers AS SELECT id, name FROM customers WHERE mood = 'happy';
            CREATE FUNCTION tidy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := trim(NEW.name); RETURN NEW; END $$;
            CREATE FUNCTION total(c int) RETURNS numeric LANGUAGE sql STABLE AS $$ SELECT coalesce(sum(amount), 0) FROM billing.payments WHERE customer_id = c $$;
            CREATE TRIGGER customers_tidy BEFORE INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION tidy();
            CREATE SEQUENCE billing.tickets START 100 INCREMENT 5;
            INSERT INTO customers (name, mood, born) VALUES (' ana ', 'happy', 1990), ('bo', 'sad', 1985);
            INSERT INTO billing.payments (customer_id, amount, paid_at) VALUES (1, 9.5, '2026-03-01'), (2, 20, '2027-05-01');
            """, database: "rich")
        #expect(schema.status == 0, "\(schema.output)")
        let dump = dumps.appendingPathComponent("rich.dump")
        try run(["pg_dump", "-Fc", "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "rich", "-f", dump.path],
                environment: ["PGPASSWORD": pg.password])
        let r = try devdb(["project", "create", "rich", "--dump", "file://\(dump.path)", "--wait"])
        #expect(r.status == 0, "\(r.output)")
    }
}

extension ControlPlaneEndToEnd {
    /// `devdb db diff` and GET /v1/diff (issue #28) against the local provisioner: two identical
    /// databases, a generation against a database made from it, the same after a real
    /// migration, and a snapshot.
    @Suite struct SchemaDiffs {
        @Test func diffsDatabasesGenerationsAndSnapshotsObjectByObject() throws {
            let f = try ControlPlaneFixture.get()
            try f.richProject()
            for name in ["diff-a", "diff-b"] {
                let r = try f.devdb(["db", "create", name, "--project", "rich", "--ttl", "1h", "--wait"])
                #expect(r.status == 0, "\(r.output)")
            }
            // Identical: nothing printed, exit 0; a generation against a database made from it too.
            let same = try f.devdb(["db", "diff", "diff-a", "diff-b", "--exit-code"])
            #expect(same.status == 0 && same.stdout.isEmpty, "\(same.output)")
            let fromGeneration = try f.devdb(["db", "diff", "rich@latest", "diff-a", "--exit-code"])
            #expect(fromGeneration.status == 0 && fromGeneration.stdout.isEmpty, "\(fromGeneration.output)")

            // A real migration on diff-b.
            let b = try f.json(["db", "show", "diff-b"])
            let migrate = try f.runPsqlLine(try #require(b["psql"] as? String), """
                CREATE EXTENSION btree_gist;
                DROP VIEW happy_customers;
                ALTER TABLE customers ALTER COLUMN name TYPE varchar(200);
                ALTER TABLE customers ADD COLUMN email text NOT NULL DEFAULT '';
                CREATE INDEX customers_email ON customers (email);
                ALTER TYPE mood ADD VALUE 'ecstatic';
                ALTER DOMAIN year SET NOT NULL;
                CREATE TABLE billing.payments_2028 PARTITION OF billing.payments FOR VALUES FROM ('2028-01-01') TO ('2029-01-01');
                CREATE OR REPLACE FUNCTION tidy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := lower(trim(NEW.name)); RETURN NEW; END $$;
                ALTER SEQUENCE billing.tickets INCREMENT 10;
                ALTER TABLE billing.payments ADD CONSTRAINT payments_recent CHECK (paid_at > '2020-01-01');
                CREATE TRIGGER customers_audit AFTER DELETE ON customers FOR EACH ROW EXECUTE FUNCTION tidy();
                """)
            #expect(migrate.status == 0, "\(migrate.output)")
            let diff = try f.devdb(["db", "diff", "rich@latest", "diff-b", "--exit-code"])
            #expect(diff.status == 1, "\(diff.output)")
            for expected in [
                "+ extension btree_gist",
                "~ domain public.year\n    not null: no -> yes\n",
                "~ type public.mood\n    labels: 'sad', 'ok', 'happy' -> 'sad', 'ok', 'happy', 'ecstatic'\n",
                "~ sequence billing.tickets\n    increment: 5 -> 10\n",
                "+ table billing.payments_2028 (kind partition, partition of billing.payments, partition bound FOR VALUES FROM (",
                "~ column public.customers.name\n    type: text -> character varying(200)\n",
                "+ column public.customers.email (type text, not null yes, default ''::text)",
                "+ constraint billing.payments.payments_recent",
                "+ index public.customers_email",
                "- view public.happy_customers",
                "~ function public.tidy()\n    definition:\n",
                "+ trigger public.customers.customers_audit",
            ] {
                #expect(diff.stdout.contains(expected), "missing \"\(expected)\" in:\n\(diff.stdout)")
            }
            #expect(!diff.stdout.contains("payments_2026") && !diff.stdout.contains("total(") && !diff.stdout.contains("customers_tidy"), "unchanged objects are not listed: \(diff.stdout)")
            // JSON, for scripts and the console: the API's answer.
            let json = try f.json(["db", "diff", "rich@latest", "diff-b"])
            #expect(json["identical"] as? Bool == false && json["a"] as? String == "generation rich@1" && json["b"] as? String == "database diff-b", "\(json)")
            let changes = try #require(json["changes"] as? [[String: Any]])
            let name = try #require(changes.first { $0["object"] as? String == "public.customers.name" })
            #expect(name["change"] as? String == "changed" && (name["properties"] as? [[String: Any]])?.first?["b"] as? String == "character varying(200)", "\(name)")

            // A snapshot side: the state after the migration is what diff-b is.
            #expect(try f.devdb(["db", "snapshot", "diff-b", "--as", "migrated", "--wait"]).status == 0)
            let snap = try f.devdb(["db", "diff", "diff-b@migrated", "diff-b", "--exit-code"])
            #expect(snap.status == 0 && snap.stdout.isEmpty, "\(snap.output)")
            #expect(try f.devdb(["db", "diff", "diff-a", "diff-b@migrated", "--exit-code"]).status == 1)

            // Sides that do not exist are errors that say what exists.
            let missing = try f.devdb(["db", "diff", "no-such-db", "diff-a"])
            #expect(missing.status == 5 && missing.stderr.contains("no-such-db"), "\(missing.output)")
            let generation = try f.devdb(["db", "diff", "rich@42", "diff-a", "--exit-code"])
            #expect(generation.status == 5 && generation.stderr.contains("ready: 1"), "\(generation.output)")
            // Temporary instances are gone when the answer comes.
            let scratch = (try? FileManager.default.contentsOfDirectory(atPath: f.dataDirectory.appendingPathComponent("scratch").path)) ?? []
            #expect(scratch.isEmpty, "\(scratch)")
            for name in ["diff-a", "diff-b"] { #expect(try f.devdb(["db", "delete", name, "--wait"]).status == 0) }
        }
    }
}
