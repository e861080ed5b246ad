import DevDBAPIContract
import Foundation
import Testing
@testable import DevDBSchema

/// The schema model and its diff (issue #28): pure, from the JSON the catalog query answers.
@Suite struct SchemaDiffTests {
    static func model(_ json: String) throws -> SchemaModel { try SchemaModel.parse(Data(json.utf8)) }

    static let before = """
        [{"kind": "table", "identity": "public.orders", "properties": {"kind": "ordinary", "partition key": null}},
         {"kind": "column", "identity": "public.orders.total", "properties": {"type": "integer", "not null": "yes", "default": null}},
         {"kind": "column", "identity": "public.orders.note", "properties": {"type": "text", "not null": "no"}},
         {"kind": "type", "identity": "public.mood", "properties": {"kind": "enum", "labels": "'sad', 'ok'"}},
         {"kind": "function", "identity": "public.touch()", "properties": {"returns": "trigger", "definition": "BEGIN\\n  NEW.a := 1;\\n  RETURN NEW;\\nEND  \\n"}},
         {"kind": "trigger", "identity": "public.orders.orders_touch", "properties": {"definition": "CREATE TRIGGER orders_touch BEFORE INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION touch()"}}]
        """
    static let after = """
        [{"kind": "table", "identity": "public.orders", "properties": {"kind": "ordinary"}},
         {"kind": "column", "identity": "public.orders.total", "properties": {"type": "bigint", "not null": "yes", "default": "0"}},
         {"kind": "column", "identity": "public.orders.email", "properties": {"type": "text", "not null": "yes", "default": "''::text"}},
         {"kind": "type", "identity": "public.mood", "properties": {"kind": "enum", "labels": "'sad', 'ok', 'happy'"}},
         {"kind": "function", "identity": "public.touch()", "properties": {"returns": "trigger", "definition": "BEGIN\\n  NEW.a := 2;\\n  RETURN NEW;\\nEND"}},
         {"kind": "trigger", "identity": "public.orders.orders_touch", "properties": {"definition": "CREATE TRIGGER orders_touch BEFORE INSERT ON public.orders FOR EACH ROW EXECUTE FUNCTION touch()"}},
         {"kind": "index", "identity": "public.orders_email", "properties": {"table": "public.orders", "definition": "CREATE INDEX orders_email ON public.orders USING btree (email)"}}]
        """

    @Test func identicalSchemasHaveNoChangesAndPrintNothing() throws {
        let a = try Self.model(Self.before)
        #expect(a.diff(to: try Self.model(Self.before)).isEmpty)
        #expect(SchemaDiffText.render(a.diff(to: a)) == "")
        // Nulls are absent properties; trailing blanks of a body do not count.
        let tidy = try Self.model(Self.before.replacingOccurrences(of: "END  \\n", with: "END").replacingOccurrences(of: ", \"partition key\": null", with: ""))
        #expect(a.diff(to: tidy).isEmpty)
    }

    @Test func changesAreObjectByObjectInKindOrder() throws {
        let changes = try Self.model(Self.before).diff(to: try Self.model(Self.after))
        #expect(changes.map { "\($0.change) \($0.kind) \($0.object)" } == [
            "changed type public.mood",
            "added column public.orders.email",
            "removed column public.orders.note",
            "changed column public.orders.total",
            "added index public.orders_email",
            "changed function public.touch()",
        ])
        let total = try #require(changes.first { $0.object == "public.orders.total" })
        #expect(total.properties == [.init(name: "default", a: nil, b: "0"), .init(name: "type", a: "integer", b: "bigint")], "only what differs")
        // The other way round, added and removed swap.
        let back = try Self.model(Self.after).diff(to: try Self.model(Self.before))
        #expect(back.first { $0.object == "public.orders.email" }?.change == "removed")
    }

    @Test func theTextIsReadable() throws {
        let text = SchemaDiffText.render(try Self.model(Self.before).diff(to: try Self.model(Self.after)))
        #expect(text.contains("~ column public.orders.total\n    default: (none) -> 0\n    type: integer -> bigint\n"), "\(text)")
        #expect(text.contains("+ column public.orders.email (type text, not null yes, default ''::text)\n"), "\(text)")
        #expect(text.contains("- column public.orders.note (type text, not null no)\n"), "\(text)")
        #expect(text.contains("~ type public.mood\n    labels: 'sad', 'ok' -> 'sad', 'ok', 'happy'\n"), "\(text)")
        // A body is shown as a line diff.
        #expect(text.contains("~ function public.touch()\n    definition:\n        BEGIN\n      -   NEW.a := 1;\n      +   NEW.a := 2;\n          RETURN NEW;\n        END\n"), "\(text)")
    }

    @Test func theQueryCoversEveryKindTheDiffOrders() {
        for kind in SchemaModel.kinds where !["materialized view", "procedure", "aggregate"].contains(kind) {
            #expect(SchemaCatalog.query.contains("'\(kind)'"), "\(kind)")
        }
    }
}
