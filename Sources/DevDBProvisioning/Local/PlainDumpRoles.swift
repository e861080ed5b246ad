import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads which roles a plain SQL dump names as owners (`ALTER ... OWNER TO r;`) or grantees
/// (`GRANT ... ON ... TO r1, r2;`), so a restore can make them first. Pure line parsing plus
/// one streaming reader (through gzip or zstd for compressed dumps); no shell pipeline.
enum PlainDumpRoles {
    /// The role names one line of SQL names, unquoted, in order (duplicates kept).
    static func roles(inLine line: Substring) -> [String] {
        var found: [String] = []
        var rest = line[...]
        while let range = nextClause(in: rest) {
            let clause = rest[range.clause]
            found += clause.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "\"", with: "") }
            rest = rest[range.end...]
        }
        return found
    }

    /// The role list of the next `OWNER TO list;` or `GRANT privileges ON object TO list;`.
    private static func nextClause(in text: Substring) -> (clause: Range<Substring.Index>, end: Substring.Index)? {
        var search = text.startIndex
        while search < text.endIndex {
            let owner = text.range(of: "OWNER TO ", range: search..<text.endIndex)
            let grant = text.range(of: "GRANT ", range: search..<text.endIndex)
            guard let first = [owner, grant].compactMap({ $0 }).min(by: { $0.lowerBound < $1.lowerBound }) else { return nil }
            let statementEnd = text[first.upperBound...].firstIndex(of: ";")
            guard let statementEnd else { return nil }
            if first == owner {
                return (first.upperBound..<statementEnd, text.index(after: statementEnd))
            }
            // GRANT: privileges are letters, commas and spaces, then ON ... TO list.
            let statement = text[first.upperBound..<statementEnd]
            if let on = statement.range(of: " ON "),
               statement[statement.startIndex..<on.lowerBound].allSatisfy({ $0.isLetter || $0 == "," || $0 == " " }),
               let to = statement[on.upperBound...].range(of: " TO ") {
                return (to.upperBound..<statementEnd, text.index(after: statementEnd))
            }
            search = first.upperBound
        }
        return nil
    }

    /// Roles worth making before the restore: not built-in, not the app user, valid names.
    static func worthMaking(_ names: some Sequence<String>, appUser: String) -> [String] {
        let reserved: Set<String> = ["postgres", "public", "CURRENT_USER", "SESSION_USER", "CURRENT_ROLE", appUser]
        return Set(names).filter { !$0.isEmpty && !reserved.contains($0) && $0.count <= 63 && !$0.contains(" ") && !$0.hasPrefix("pg_") }.sorted()
    }

    /// Streams the dump (decompressed by `decompressor`, e.g. `gzip -dc`, when given) and
    /// collects the roles its lines name. Blocking: run it on `BlockingExecutor.processes`.
    static func read(_ path: String, decompressor: String?) throws(ProvisioningError) -> Set<String> {
        let stream: UnsafeMutablePointer<FILE>?
        if let decompressor {
            // The path as one single-quoted shell word (it is the provisioner's own dump path).
            stream = popen("\(decompressor) < '\(path.replacingOccurrences(of: "'", with: "'\\''"))'", "r")
        } else {
            stream = fopen(path, "r")
        }
        guard let stream else { throw .internal("reading the dump", detail: "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { if decompressor != nil { pclose(stream) } else { fclose(stream) } }
        var names: Set<String> = []
        var buffer: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(buffer) }
        while getline(&buffer, &capacity, stream) >= 0, let buffer {
            let line = String(cString: buffer)
            guard line.contains("OWNER TO") || line.contains("GRANT ") else { continue }
            names.formUnion(roles(inLine: line[...]))
        }
        return names
    }
}
