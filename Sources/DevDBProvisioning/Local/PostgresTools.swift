import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// PostgreSQL's own programs for the local provisioner: which installed major's binary runs a
/// job, psql over a private socket, and the authentication files every data directory it starts
/// gets.
struct PostgresTools: Sendable {
    let installations: PostgresInstallations

    /// A server tool of the data directory's own major (its PG_VERSION), else of the newest.
    func tool(_ name: String, pgdata: String) -> String {
        let major = PostgresInstallations.major(ofDataDirectory: pgdata)
        return "\(major.flatMap(installations.bin) ?? installations.bin(installations.newest!)!)/\(name)"
    }

    /// A tool of one major (initdb of a new generation).
    func tool(_ name: String, major: Int) throws -> String {
        if let problem = installations.problem(with: major) { throw ProvisioningError(.misconfigured, "\(problem.message): \(problem.hint)") }
        return "\(installations.bin(major)!)/\(name)"
    }

    /// Client tools for restores: the target major's own when it can read the archive (one made
    /// by a pg_dump no newer than it), else the oldest installed one that can. (A newer pg_restore
    /// sends settings an older server does not know, such as 17's transaction_timeout.)
    func restoreTool(_ name: String, target: Int? = nil, dumpedBy: String? = nil) -> String {
        let needed = dumpedBy.flatMap(DumpInspector.major(of:)) ?? 0
        let major = target.flatMap { t in t >= needed ? installations.bin(t).map { _ in t } : nil }
            ?? installations.majors.first(where: { $0 >= max(needed, target ?? 0) }) ?? installations.newest!
        return "\(installations.bin(major)!)/\(name)"
    }

    /// Runs `sql` as the superuser over the socket in `socket`, stopping at the first error.
    func psql(socket: String, database: String, sql: String) async throws {
        try await Subprocess.check([restoreTool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", socket, "-p", "5432", "-U", "postgres",
                                    "-d", database, "-c", sql], asPostgres: true, what: "psql", kind: .restoreFailed)
    }

    /// Local logins by peer for the instance user only, TCP by password. Written into every data
    /// directory this provisioner starts.
    static func writeAuthentication(pgdata: String) throws {
        let hba = """
            # DevDB: the superuser only over this instance's own 0700 socket, as the OS user \(LocalProvisioner.instanceOSUser) (peer);
            # everyone else over TCP with a password. No trust.
            local all postgres peer map=devdb
            host all all 127.0.0.1/32 scram-sha-256
            host all all ::1/128 scram-sha-256

            """
        try hba.write(toFile: "\(pgdata)/pg_hba.conf", atomically: true, encoding: .utf8)
        try "devdb \(LocalProvisioner.instanceOSUser) postgres\n".write(toFile: "\(pgdata)/pg_ident.conf", atomically: true, encoding: .utf8)
        for f in ["pg_hba.conf", "pg_ident.conf"] {
            chmod("\(pgdata)/\(f)", 0o600)
            try LocalDataLayout.giveToPostgres("\(pgdata)/\(f)", recursive: false)
        }
    }
}
