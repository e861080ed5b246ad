import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The formats of dumps users have. Told apart by their bytes, never by the file name.
public enum DumpFormat: String, Sendable, Equatable {
    /// `pg_dump -Fc`: a PGDMP archive.
    case custom
    /// `pg_dump -Ft`: a tar whose toc.dat is a PGDMP archive of format tar.
    case tar
    /// `pg_dump -Fd` packed with `tar`: toc.dat (format directory) and one file per table.
    case directoryTar = "directory-tar"
    /// `pg_dump` plain SQL, restored with `psql -v ON_ERROR_STOP=1`.
    case plain
    case plainGzip = "plain-gzip"
    case plainZstd = "plain-zstd"

    public var isPlain: Bool { self == .plain || self == .plainGzip || self == .plainZstd }

    public var description: String {
        switch self {
        case .custom: return "custom-format archive (pg_dump -Fc)"
        case .tar: return "tar archive (pg_dump -Ft)"
        case .directoryTar: return "directory archive packed as tar (pg_dump -Fd)"
        case .plain: return "plain SQL"
        case .plainGzip: return "gzip-compressed plain SQL"
        case .plainZstd: return "zstd-compressed plain SQL"
        }
    }
}

/// What the start of a dump says.
public struct DumpInfo: Sendable, Equatable {
    public var format: DumpFormat
    /// The major of the server the dump was made from ("Dumped from database version"), when known.
    public var sourceMajor: Int?
    /// The pg_dump version that made it, when known.
    public var dumpedBy: String?

    public init(format: DumpFormat, sourceMajor: Int?, dumpedBy: String? = nil) {
        self.format = format
        self.sourceMajor = sourceMajor
        self.dumpedBy = dumpedBy
    }
}

/// Reads a dump's format and source version from its first bytes (custom and tar headers are
/// parsed here; compressed plain SQL is decompressed by gzip/zstd as far as the prefix goes).
public enum DumpInspector {
    public static let prefixLength = 1 << 20

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case notADump(found: String)
        public var description: String {
            switch self {
            case .notADump(let found):
                return "this is not a PostgreSQL dump: it looks like \(found). DevDB restores pg_dump's custom (-Fc), tar (-Ft) and directory (-Fd, packed with tar) archives and plain SQL (.sql, .sql.gz, .sql.zst)"
            }
        }
    }

    /// Inspects a file (the whole dump or its first bytes). For tar files the members are walked
    /// through the file until toc.dat.
    public static func inspect(file path: String) throws(Failure) -> DumpInfo {
        guard let f = fopen(path, "rb") else { throw .notADump(found: "an unreadable file") }
        defer { fclose(f) }
        var prefix = [UInt8](repeating: 0, count: prefixLength)
        let n = fread(&prefix, 1, prefixLength, f)
        prefix.removeSubrange(n...)
        if isTar(prefix) {
            var offset = 0
            while true {
                var header = [UInt8](repeating: 0, count: 512)
                guard fseeko(f, off_t(offset), SEEK_SET) == 0, fread(&header, 1, 512, f) == 512, header.contains(where: { $0 != 0 }) else { break }
                let name = cString(header[0..<100])
                let size = octal(header[124..<136])
                if name == "toc.dat" || name.hasSuffix("/toc.dat") {
                    var toc = [UInt8](repeating: 0, count: min(size, 4096))
                    let got = fread(&toc, 1, toc.count, f)
                    toc.removeSubrange(got...)
                    if let archive = parseArchiveHeader(toc) {
                        return DumpInfo(format: tarKind(firstMember: offset == 0, name: name), sourceMajor: archive.sourceMajor, dumpedBy: archive.dumpedBy)
                    }
                    throw .notADump(found: "a tar file whose toc.dat is not a pg_dump table of contents")
                }
                offset += 512 + (size + 511) / 512 * 512
            }
            throw .notADump(found: "a tar file without toc.dat")
        }
        return try inspect(prefix: prefix)
    }

    /// Inspects the first bytes of a dump (for a remote dump before it is fetched).
    public static func inspect(prefix: [UInt8]) throws(Failure) -> DumpInfo {
        if prefix.starts(with: Array("PGDMP".utf8)) {
            guard let archive = parseArchiveHeader(prefix) else { throw .notADump(found: "a damaged custom-format archive") }
            // A PGDMP header at the very start is a custom archive (a tar archive starts with a tar header).
            return DumpInfo(format: .custom, sourceMajor: archive.sourceMajor, dumpedBy: archive.dumpedBy)
        }
        if isTar(prefix) {
            // Walk the members inside the prefix; toc.dat usually comes first.
            var offset = 0
            while offset + 512 <= prefix.count {
                let header = Array(prefix[offset..<(offset + 512)])
                guard header.contains(where: { $0 != 0 }) else { break }
                let name = cString(header[0..<100])
                let size = octal(header[124..<136])
                if name == "toc.dat" || name.hasSuffix("/toc.dat") {
                    let body = Array(prefix[min(prefix.count, offset + 512)..<min(prefix.count, offset + 512 + size)])
                    if let archive = parseArchiveHeader(body) {
                        return DumpInfo(format: tarKind(firstMember: offset == 0, name: name), sourceMajor: archive.sourceMajor, dumpedBy: archive.dumpedBy)
                    }
                    break
                }
                offset += 512 + (size + 511) / 512 * 512
            }
            return DumpInfo(format: .tar, sourceMajor: nil)
        }
        if prefix.starts(with: [0x1F, 0x8B]) {
            let text = decompressedPrefix(prefix, tool: ["gzip", "-dc"])
            guard looksLikeSQL(text) else { throw .notADump(found: "a gzip file that does not hold SQL") }
            return plainInfo(.plainGzip, text)
        }
        if prefix.starts(with: [0x28, 0xB5, 0x2F, 0xFD]) {
            let text = decompressedPrefix(prefix, tool: ["zstd", "-dcq"])
            guard looksLikeSQL(text) else { throw .notADump(found: "a zstd file that does not hold SQL") }
            return plainInfo(.plainZstd, text)
        }
        let text = String(decoding: prefix.prefix(64 * 1024), as: UTF8.self)
        if looksLikeSQL(text) { return plainInfo(.plain, text) }
        throw .notADump(found: describe(prefix))
    }

    // MARK: pieces

    struct ArchiveHeader { var format: UInt8; var sourceMajor: Int?; var dumpedBy: String? }

    /// pg_dump's archive header (pg_backup_archiver.c ReadHead): magic, version, int and offset
    /// sizes, format, compression, creation time, database name, then (archive 1.10+) the server
    /// and pg_dump versions.
    static func parseArchiveHeader(_ b: [UInt8]) -> ArchiveHeader? {
        guard b.count >= 11, b.starts(with: Array("PGDMP".utf8)) else { return nil }
        var i = 5
        let vmaj = Int(b[i]), vmin = Int(b[i + 1])
        i += 2
        if vmaj > 1 || (vmaj == 1 && vmin > 0) { i += 1 }  // revision
        let version = vmaj * 100 + vmin
        guard i + 3 <= b.count else { return nil }
        let intSize = Int(b[i]); i += 1
        if version >= 107 { i += 1 }  // offset size
        guard i < b.count else { return nil }
        let format = b[i]; i += 1
        guard (1...8).contains(intSize) else { return nil }
        func readInt() -> Int? {
            guard i + 1 + intSize <= b.count else { return nil }
            let negative = b[i] != 0
            var v = 0
            for k in 0..<intSize { v |= Int(b[i + 1 + k]) << (8 * k) }
            i += 1 + intSize
            return negative ? -v : v
        }
        func readString() -> String?? {
            guard let length = readInt() else { return nil }
            if length < 0 { return .some(nil) }
            guard length <= 1024, i + length <= b.count else { return nil }
            defer { i += length }
            return .some(String(decoding: b[i..<(i + length)], as: UTF8.self))
        }
        if version >= 115 { i += 1 } else if version >= 104 { guard readInt() != nil else { return nil } } else if version >= 102 { i += 1 }
        if version >= 104 {
            for _ in 0..<7 { guard readInt() != nil else { return nil } }
            guard readString() != nil else { return nil }  // database name
        }
        guard version >= 110 else { return ArchiveHeader(format: format, sourceMajor: nil, dumpedBy: nil) }
        guard let remote = readString(), let dumpedBy = readString() else { return nil }
        return ArchiveHeader(format: format, sourceMajor: remote.flatMap(major(of:)), dumpedBy: dumpedBy)
    }

    /// "15.20", "18.6", "9.6.24", "17beta1" -> 15, 18, 9, 17.
    public static func major(of version: String) -> Int? {
        let digits = version.prefix { $0.isNumber }
        return Int(digits)
    }

    static func plainInfo(_ format: DumpFormat, _ text: String) -> DumpInfo {
        var source: Int?, by: String?
        for line in text.split(separator: "\n", maxSplits: 200, omittingEmptySubsequences: true) {
            if line.hasPrefix("-- Dumped from database version ") {
                source = major(of: String(line.dropFirst("-- Dumped from database version ".count)))
            } else if line.hasPrefix("-- Dumped by pg_dump version ") {
                by = String(line.dropFirst("-- Dumped by pg_dump version ".count))
            }
        }
        return DumpInfo(format: format, sourceMajor: source, dumpedBy: by)
    }

    static func looksLikeSQL(_ text: String) -> Bool {
        let head = text.prefix(8192)
        if head.contains("PostgreSQL database dump") { return true }
        let keywords = ["CREATE ", "INSERT ", "SET ", "COPY ", "SELECT ", "BEGIN", "ALTER ", "\\connect", "DROP "]
        let lines = head.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("--") }
        guard let first = lines.first else { return head.contains("--") && !head.contains("\u{0}") }
        return keywords.contains { first.uppercased().hasPrefix($0.uppercased()) }
    }

    /// `pg_dump -Ft` writes toc.dat as the first member, by that bare name (and its header says
    /// tar, as a directory archive's toc.dat does too); anything else holding a toc.dat is a
    /// directory archive someone packed with tar.
    static func tarKind(firstMember: Bool, name: String) -> DumpFormat {
        firstMember && name == "toc.dat" ? .tar : .directoryTar
    }

    static func isTar(_ b: [UInt8]) -> Bool {
        b.count >= 262 && Array(b[257..<262]) == Array("ustar".utf8)
    }

    static func cString(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
    }

    static func octal(_ bytes: ArraySlice<UInt8>) -> Int {
        var v = 0
        for c in bytes where c >= 0x30 && c <= 0x37 { v = v * 8 + Int(c - 0x30) }
        return v
    }

    /// What some other file looks like, for the error message.
    static func describe(_ b: [UInt8]) -> String {
        if b.isEmpty { return "an empty file" }
        if b.starts(with: Array("PK".utf8)) { return "a zip file" }
        if b.starts(with: Array("%PDF".utf8)) { return "a PDF document" }
        if b.starts(with: Array("BZh".utf8)) { return "a bzip2 file" }
        if b.starts(with: [0xFD, 0x37, 0x7A, 0x58, 0x5A]) { return "an xz file" }
        if b.starts(with: Array("SQLite format".utf8)) { return "an SQLite database" }
        let text = String(decoding: b.prefix(256), as: UTF8.self).lowercased()
        if text.hasPrefix("<!doctype html") || text.hasPrefix("<html") || text.contains("<html") { return "an HTML page" }
        if text.hasPrefix("<?xml") { return "an XML document (an S3 error page?)" }
        if text.hasPrefix("{") || text.hasPrefix("[") { return "JSON" }
        let printable = b.prefix(512).allSatisfy { $0 == 9 || $0 == 10 || $0 == 13 || ($0 >= 32 && $0 < 127) || $0 >= 0x80 }
        return printable ? "a text file that is not SQL" : "binary data of an unknown kind"
    }

    /// Decompresses as much of `prefix` as it holds (the tool complains about the truncated end;
    /// what it wrote before is what counts).
    static func decompressedPrefix(_ prefix: [UInt8], tool: [String]) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("devdb-inspect-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: dir) }
        let input = dir.appendingPathComponent("in")
        FileManager.default.createFile(atPath: input.path, contents: Data(prefix), attributes: [.posixPermissions: 0o600])
        let out = try? Subprocess.runBlocking(["sh", "-c", "\(tool.joined(separator: " ")) < \"$1\" 2>/dev/null | head -c 262144", "sh", input.path])
        return out?.output ?? ""
    }
}
