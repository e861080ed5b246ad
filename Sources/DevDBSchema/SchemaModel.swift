import DevDBAPIContract
import Foundation

/// A database's schema as comparable objects, read from pg_catalog by `SchemaCatalog.query`
/// (one JSON document), and the object-by-object difference of two of them. Pure: no I/O, so
/// the normalisation and the diff are unit-tested without Postgres.
///
/// Every object has a kind (`table`, `column`, `index`, ...), an identity that stays when it is
/// changed (`public.orders.total`, `public.add(integer, integer)`), and properties compared as
/// text (a column's `type`, `default`, `not null`; an index's `definition`). Objects made by an
/// extension belong to the extension and are left out; system schemas are left out.
public struct SchemaModel: Equatable, Sendable {
    public struct Object: Equatable, Sendable {
        public var kind: String
        public var identity: String
        public var properties: [String: String]
        public init(kind: String, identity: String, properties: [String: String]) {
            self.kind = kind; self.identity = identity; self.properties = properties
        }
        public var key: String { "\(kind) \(identity)" }
    }

    public var objects: [String: Object] = [:]
    public init(objects: [Object] = []) { for o in objects { self.objects[o.key] = o } }

    /// The kinds in the order a diff lists them: containers before what they contain.
    public static let kinds = ["extension", "schema", "type", "domain", "sequence", "table", "column", "constraint", "index",
                               "view", "materialized view", "function", "procedure", "aggregate", "trigger"]

    /// Reads what `SchemaCatalog.query` answers: `[{"kind":..,"identity":..,"properties":{..}}, ...]`.
    public static func parse(_ json: Data) throws -> SchemaModel {
        struct Row: Decodable { var kind: String; var identity: String; var properties: [String: String?]? }
        let rows = try JSONDecoder().decode([Row].self, from: json)
        return SchemaModel(objects: rows.map { row in
            Object(kind: row.kind, identity: row.identity, properties: (row.properties ?? [:]).compactMapValues { $0 }.mapValues(normalise))
        })
    }

    /// Whitespace at the ends and trailing spaces on lines do not count (function bodies).
    static func normalise(_ s: String) -> String {
        s.split(separator: "\n", omittingEmptySubsequences: false)
            .map { line in var l = Substring(line); while l.last == " " || l.last == "\t" || l.last == "\r" { l.removeLast() }; return l }
            .joined(separator: "\n").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// What differs from `self` (side a) to `other` (side b), object by object, in `kinds` order
    /// then by identity. Identical schemas give no changes.
    public func diff(to other: SchemaModel) -> [SchemaChange] {
        var changes: [SchemaChange] = []
        for key in Set(objects.keys).union(other.objects.keys) {
            let a = objects[key], b = other.objects[key]
            let o = (a ?? b)!
            switch (a, b) {
            case (nil, let b?):
                changes.append(SchemaChange(change: "added", kind: o.kind, object: o.identity, properties: b.properties.keys.sorted().map {
                    SchemaChange.Property(name: $0, a: nil, b: b.properties[$0]) }))
            case (let a?, nil):
                changes.append(SchemaChange(change: "removed", kind: o.kind, object: o.identity, properties: a.properties.keys.sorted().map {
                    SchemaChange.Property(name: $0, a: a.properties[$0], b: nil) }))
            case (let a?, let b?) where a.properties != b.properties:
                let names = Set(a.properties.keys).union(b.properties.keys).sorted().filter { a.properties[$0] != b.properties[$0] }
                changes.append(SchemaChange(change: "changed", kind: o.kind, object: o.identity,
                                            properties: names.map { SchemaChange.Property(name: $0, a: a.properties[$0], b: b.properties[$0]) }))
            default: break
            }
        }
        func rank(_ kind: String) -> Int { Self.kinds.firstIndex(of: kind) ?? Self.kinds.count }
        return changes.sorted { (rank($0.kind), $0.kind, $0.object, $0.change) < (rank($1.kind), $1.kind, $1.object, $1.change) }
    }
}

/// How a diff reads for people: one line per object (`+` only in b, `-` only in a, `~` changed)
/// and, under a changed one, each property `a -> b`; long or multi-line values (function bodies,
/// view definitions) as a line diff. Nothing at all for identical schemas.
public enum SchemaDiffText {
    public static func render(_ changes: [SchemaChange]) -> String {
        var out = ""
        for c in changes {
            let sign = c.change == "added" ? "+" : c.change == "removed" ? "-" : "~"
            out += "\(sign) \(c.kind) \(c.object)"
            if c.change == "changed" {
                out += "\n"
                for p in c.properties {
                    let (a, b) = (p.a ?? "(none)", p.b ?? "(none)")
                    if a.contains("\n") || b.contains("\n") || a.count + b.count > 100 {
                        out += "    \(p.name):\n" + lineDiff(p.a ?? "", p.b ?? "").map { "      \($0)\n" }.joined()
                    } else {
                        out += "    \(p.name): \(a) -> \(b)\n"
                    }
                }
            } else {
                let summary = summaryKeys.compactMap { key in (c.change == "added" ? c.properties.first { $0.name == key }?.b : c.properties.first { $0.name == key }?.a).map { (key, $0) } }
                    .filter { !$0.1.contains("\n") && $0.1.count <= 120 }
                out += summary.isEmpty ? "\n" : " (" + summary.map { "\($0.0) \($0.1)" }.joined(separator: ", ") + ")\n"
            }
        }
        return out
    }

    /// What an added or removed object shows on its line.
    static let summaryKeys = ["kind", "partition of", "partition bound", "type", "not null", "default", "definition", "labels", "attributes", "table", "returns", "version"]

    /// A minimal line diff (longest common subsequence): `  same`, `- only a`, `+ only b`.
    static func lineDiff(_ a: String, _ b: String) -> [String] {
        let x = a.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let y = b.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let (n, m) = (x.count, y.count)
        var lcs = Array(repeating: Array(repeating: 0, count: m + 1), count: n + 1)
        for i in stride(from: n - 1, through: 0, by: -1) {
            for j in stride(from: m - 1, through: 0, by: -1) {
                lcs[i][j] = x[i] == y[j] ? lcs[i + 1][j + 1] + 1 : max(lcs[i + 1][j], lcs[i][j + 1])
            }
        }
        var out: [String] = []
        var (i, j) = (0, 0)
        while i < n || j < m {
            if i < n, j < m, x[i] == y[j] { out.append("  \(x[i])"); i += 1; j += 1 }
            else if i < n, j == m || lcs[i + 1][j] >= lcs[i][j + 1] { out.append("- \(x[i])"); i += 1 }
            else { out.append("+ \(y[j])"); j += 1 }
        }
        return out
    }
}
