import Foundation

/// The PostgreSQL majors this machine can run, each a directory of server and client binaries:
/// Debian's `/usr/lib/postgresql/<major>/bin` and any given with `--postgres-bin-dir MAJOR=DIR`
/// (which win). The local provisioner runs each instance with its data directory's major
/// (`PG_VERSION`), and restores with the newest `pg_restore`/`psql` (they read older archives).
public struct PostgresInstallations: Sendable, Equatable {
    public private(set) var binDirectories: [Int: String]

    public static let required = ["postgres", "initdb", "pg_ctl", "pg_restore", "psql"]

    public init(binDirectories: [Int: String]) { self.binDirectories = binDirectories }

    /// Debian's installed majors plus the configured ones. Configured directories are checked:
    /// they must hold the server and client binaries of that major.
    public static func discover(configured: [Int: String], debianRoot: String = "/usr/lib/postgresql") throws -> PostgresInstallations {
        var found: [Int: String] = [:]
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: debianRoot)) ?? [] {
            guard let major = Int(entry) else { continue }
            let bin = "\(debianRoot)/\(entry)/bin"
            if required.allSatisfy({ FileManager.default.isExecutableFile(atPath: "\(bin)/\($0)") }) { found[major] = bin }
        }
        for (major, dir) in configured {
            let bin = dir.hasSuffix("/") ? String(dir.dropLast()) : dir
            for tool in required where !FileManager.default.isExecutableFile(atPath: "\(bin)/\(tool)") {
                throw ProvisioningError(.misconfigured, "--postgres-bin-dir \(major)=\(bin): \(bin)/\(tool) is missing or not executable; give the bin directory of a PostgreSQL \(major) installation")
            }
            let version = (try? Subprocess.runBlocking(["\(bin)/postgres", "--version"]))?.output ?? ""
            // "postgres (PostgreSQL) 18.6"
            let number = version.split(separator: " ").last.map(String.init) ?? ""
            guard DumpInspector.major(of: number) == major else {
                throw ProvisioningError(.misconfigured, "--postgres-bin-dir \(major)=\(bin): its postgres says \"\(version.trimmingCharacters(in: .whitespacesAndNewlines))\", not PostgreSQL \(major)")
            }
            found[major] = bin
        }
        return PostgresInstallations(binDirectories: found)
    }

    /// "18=/opt/pg18/bin,17=/opt/pg17/bin" (the environment form) or one "MAJOR=DIR".
    public static func parse(_ entries: [String]) throws -> [Int: String] {
        var out: [Int: String] = [:]
        for entry in entries.flatMap({ $0.split(separator: ",").map(String.init) }) where !entry.isEmpty {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let major = Int(parts[0]), major >= 10, !parts[1].isEmpty else {
                throw ProvisioningError(.misconfigured, "--postgres-bin-dir \"\(entry)\": expected MAJOR=DIR, e.g. 18=/usr/local/lib/devdb/postgresql/18/bin")
            }
            out[major] = parts[1]
        }
        return out
    }

    public var majors: [Int] { binDirectories.keys.sorted() }
    public var newest: Int? { majors.last }

    public func bin(_ major: Int) -> String? { binDirectories[major] }

    /// Why `major` cannot run here, with what to do; nil when it can.
    public func problem(with major: Int) -> (message: String, hint: String)? {
        guard bin(major) == nil else { return nil }
        let have = majors.map(String.init).joined(separator: ", ")
        return ("PostgreSQL \(major) is not installed on this DevDB server (it has \(have.isEmpty ? "none" : have))",
                "choose one of those with --postgres, or ask the operator to add \(major): install its binaries and start devdb-api with --postgres-bin-dir \(major)=DIR (scripts/install-deps installs 17 and 18)")
    }

    /// The major of a data directory (its PG_VERSION file).
    public static func major(ofDataDirectory pgdata: String) -> Int? {
        guard let text = try? String(contentsOfFile: "\(pgdata)/PG_VERSION", encoding: .utf8) else { return nil }
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
