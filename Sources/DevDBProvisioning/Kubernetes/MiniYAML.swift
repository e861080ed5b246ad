/// Just enough YAML for kubeconfig files as `kubectl` and `kind` write them: block mappings and
/// sequences, plain and quoted scalars, comments, `{}` and `[]`. JSON (a YAML subset) is read by
/// the JSON decoder. Anything else gets an error that says what to do instead.
public enum MiniYAML {
    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    struct Line { var indent: Int; var text: String; var number: Int }

    public static func parse(_ text: String) throws -> JSONValue {
        let trimmed = text.drop { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "\r" }
        if trimmed.first == "{" {
            do { return try JSONValue.decode(Data(trimmed.utf8)) } catch {
                throw ParseError(description: "not valid JSON: \(error)")
            }
        }
        var lines: [Line] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var s = String(raw)
            if s.hasSuffix("\r") { s.removeLast() }
            if s.prefix(while: { $0 == " " || $0 == "\t" }).contains("\t") && !s.trimmingCharacters(in: .whitespaces).isEmpty {
                throw ParseError(description: "line \(i + 1): tabs are not allowed for indentation in YAML")
            }
            let indent = s.prefix(while: { $0 == " " }).count
            let content = stripComment(String(s.dropFirst(indent)))
            if content.isEmpty || content == "---" || content == "..." { continue }
            lines.append(Line(indent: indent, text: content, number: i + 1))
        }
        guard !lines.isEmpty else { return .object([:]) }
        var p = Parser(lines: lines)
        let value = try p.block(indent: lines[0].indent)
        if p.index < lines.count {
            throw ParseError(description: "line \(lines[p.index].number): unexpected indentation")
        }
        return value
    }

    static func stripComment(_ s: String) -> String {
        if s.hasPrefix("#") { return "" }
        var inSingle = false, inDouble = false, previous: Character = " "
        for (offset, c) in s.enumerated() {
            if c == "'" && !inDouble { inSingle.toggle() }
            if c == "\"" && !inSingle && previous != "\\" { inDouble.toggle() }
            if c == "#" && !inSingle && !inDouble && previous == " " {
                return String(s.prefix(offset)).trimmingCharacters(in: .whitespaces)
            }
            previous = c
        }
        return s.trimmingCharacters(in: .whitespaces)
    }

    struct Parser {
        var lines: [Line]
        var index = 0

        mutating func block(indent: Int) throws -> JSONValue {
            let line = lines[index]
            if line.text == "-" || line.text.hasPrefix("- ") { return try sequence(indent: indent) }
            return try mapping(indent: indent)
        }

        mutating func sequence(indent: Int) throws -> JSONValue {
            var items: [JSONValue] = []
            while index < lines.count, lines[index].indent == indent, lines[index].text == "-" || lines[index].text.hasPrefix("- ") {
                let line = lines[index]
                let rest = line.text == "-" ? "" : String(line.text.dropFirst(2)).trimmingCharacters(in: .whitespaces)
                if rest.isEmpty {
                    index += 1
                    if index < lines.count, lines[index].indent > indent {
                        items.append(try block(indent: lines[index].indent))
                    } else { items.append(.null) }
                } else if MiniYAML.splitKey(rest) != nil {
                    // "- key: value" starts a mapping indented to where "key" begins.
                    let inner = indent + (line.text.count - rest.count)
                    lines[index] = Line(indent: inner, text: rest, number: line.number)
                    items.append(try mapping(indent: inner))
                } else {
                    items.append(try MiniYAML.scalar(rest, line: line.number))
                    index += 1
                }
            }
            return .array(items)
        }

        mutating func mapping(indent: Int) throws -> JSONValue {
            var result: [String: JSONValue] = [:]
            while index < lines.count, lines[index].indent == indent {
                let line = lines[index]
                if line.text == "-" || line.text.hasPrefix("- ") { break }
                guard let (key, value) = MiniYAML.splitKey(line.text) else {
                    throw ParseError(description: "line \(line.number): expected \"key: value\", found \"\(line.text)\"")
                }
                index += 1
                if value.isEmpty {
                    if index < lines.count, lines[index].indent > indent {
                        result[key] = try block(indent: lines[index].indent)
                    } else if index < lines.count, lines[index].indent == indent,
                              lines[index].text == "-" || lines[index].text.hasPrefix("- ") {
                        result[key] = try sequence(indent: indent)  // kubectl writes lists at the key's indent
                    } else {
                        result[key] = .null
                    }
                } else {
                    result[key] = try MiniYAML.scalar(value, line: line.number)
                }
            }
            return .object(result)
        }
    }

    /// "key: value" or "key:" (quoted keys too); nil when the text is not a mapping entry.
    static func splitKey(_ text: String) -> (String, String)? {
        var key: String
        var rest: Substring
        if let q = text.first, q == "\"" || q == "'" {
            guard let end = text.dropFirst().firstIndex(of: q) else { return nil }
            key = String(text[text.index(after: text.startIndex)..<end])
            rest = text[text.index(after: end)...]
            guard rest.hasPrefix(":") else { return nil }
            rest = rest.dropFirst()
        } else {
            guard let r = text.range(of: ": ") ?? (text.hasSuffix(":") ? text.range(of: ":", options: .backwards) : nil) else { return nil }
            key = String(text[..<r.lowerBound])
            rest = text[r.upperBound...]
        }
        guard !key.isEmpty, !key.hasPrefix("{"), !key.hasPrefix("[") else { return nil }
        return (key, rest.trimmingCharacters(in: .whitespaces))
    }

    static func scalar(_ text: String, line: Int) throws -> JSONValue {
        if text == "{}" { return .object([:]) }
        if text == "[]" { return .array([]) }
        if text.hasPrefix("|") || text.hasPrefix(">") || text.hasPrefix("&") || text.hasPrefix("*") || text.hasPrefix("{") || text.hasPrefix("[") {
            throw ParseError(description: "line \(line): this YAML feature is not supported here; convert the file with \"kubectl config view --flatten --minify -o json\"")
        }
        if text.hasPrefix("\"") {
            guard text.count >= 2, text.hasSuffix("\"") else { throw ParseError(description: "line \(line): unterminated string") }
            var out = ""
            var escape = false
            for c in text.dropFirst().dropLast() {
                if escape {
                    switch c { case "n": out.append("\n"); case "t": out.append("\t"); default: out.append(c) }
                    escape = false
                } else if c == "\\" { escape = true } else { out.append(c) }
            }
            return .string(out)
        }
        if text.hasPrefix("'") {
            guard text.count >= 2, text.hasSuffix("'") else { throw ParseError(description: "line \(line): unterminated string") }
            return .string(String(text.dropFirst().dropLast()).replacingOccurrences(of: "''", with: "'"))
        }
        switch text {
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        case "null", "~", "Null", "NULL": return .null
        default: return .string(text)
        }
    }
}

import Foundation
