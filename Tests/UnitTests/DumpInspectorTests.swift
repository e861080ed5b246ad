import DevDBProvisioning
import Foundation
import Testing

/// Dump formats and source versions from bytes (fixtures made by pg_dump 18.6 of a PostgreSQL 18.6 server).
@Suite struct DumpInspectorTests {
    static func fixture(_ name: String) throws -> String {
        try #require(Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil)).path
    }

    @Test func customTarDirectoryAndGzippedPlainAreToldApartByTheirBytes() throws {
        let custom = try DumpInspector.inspect(file: Self.fixture("dump-pg18-custom.dump"))
        #expect(custom == DumpInfo(format: .custom, sourceMajor: 18, dumpedBy: "18.6"))
        let tar = try DumpInspector.inspect(file: Self.fixture("dump-pg18.tar"))
        #expect(tar.format == .tar && tar.sourceMajor == 18)
        let directory = try DumpInspector.inspect(file: Self.fixture("dump-pg18-directory.tar"))
        #expect(directory.format == .directoryTar && directory.sourceMajor == 18)
        let plain = try DumpInspector.inspect(file: Self.fixture("dump-pg18-plain.sql.gz"))
        #expect(plain == DumpInfo(format: .plainGzip, sourceMajor: 18, dumpedBy: "18.6"))
    }

    @Test func plainSQLHeadersAndPrefixesOfArchives() throws {
        let text = "--\n-- PostgreSQL database dump\n--\n\n-- Dumped from database version 16.4 (Debian 16.4-1)\n-- Dumped by pg_dump version 17.2\n\nSET statement_timeout = 0;\n"
        #expect(try DumpInspector.inspect(prefix: Array(text.utf8)) == DumpInfo(format: .plain, sourceMajor: 16, dumpedBy: "17.2"))
        // Hand-written SQL is plain SQL of an unknown major.
        #expect(try DumpInspector.inspect(prefix: Array("CREATE TABLE t (i int);\nINSERT INTO t VALUES (1);\n".utf8)) == DumpInfo(format: .plain, sourceMajor: nil))
        // The first 200 bytes of a custom archive are enough for its version.
        let bytes = try Array(Data(contentsOf: URL(fileURLWithPath: Self.fixture("dump-pg18-custom.dump"))).prefix(200))
        #expect(try DumpInspector.inspect(prefix: bytes).sourceMajor == 18)
        #expect(DumpInspector.major(of: "9.6.24") == 9 && DumpInspector.major(of: "17beta1") == 17 && DumpInspector.major(of: "") == nil)
    }

    @Test func whatIsNoDumpIsNamed() {
        func found(_ bytes: [UInt8]) -> String {
            do { _ = try DumpInspector.inspect(prefix: bytes); return "accepted" } catch { return error.description }
        }
        #expect(found(Array("<!DOCTYPE html><html><body>login</body></html>".utf8)).contains("an HTML page"))
        #expect(found(Array("<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>".utf8)).contains("XML document"))
        #expect(found(Array("PK\u{3}\u{4}rest".utf8)).contains("zip file"))
        #expect(found([]).contains("empty file"))
        #expect(found([0, 1, 2, 3, 250, 251, 0, 9]).contains("binary data"))
        #expect(found(Array("PGDMP".utf8) + [1]).contains("damaged custom-format archive"))
        #expect(found(Array("just some notes\nabout things\n".utf8)).contains("text file that is not SQL"))
    }
}
