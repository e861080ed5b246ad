import DevDBCatalog
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Queries for schema diffs (`Provisioner.query`): on a running instance over its private
/// socket; on a generation or snapshot through a temporary instance made like a database's
/// (a reflink clone where the filesystem can, a copy elsewhere) under `<data-dir>/scratch/`,
/// listening on no TCP port, stopped and removed when the query is done. Reconcile leaves
/// scratch postmasters alone while their query runs (`activeScratch`) and removes what a
/// crash left.
extension LocalProvisioner {
    /// How many temporary instances schema diffs may run at once.
    static let maxScratch = 4

    public func query(_ sql: String, on target: QueryTarget) async throws -> String {
        switch target {
        case .database(let d):
            guard let port = d.backendPort, await isRunning(d.name) else {
                throw ProvisioningError(.instanceGone, "database \(d.name) is not running (asleep or being changed): start it with devdb db start \(d.name) and try again")
            }
            return try await psql(sql, socket: layout.socketDirectory(database: d.name), port: port, database: d.database)
        case .source(let source):
            let from = layout.sourceDataDirectory(source)
            guard FileManager.default.fileExists(atPath: "\(from)/PG_VERSION") else {
                throw ProvisioningError(.sourceUnavailable, "\(source.description) has no data on this machine")
            }
            let id = UUID().uuidString.lowercased().prefix(12)
            let dir = "\(layout.path("scratch"))/\(id)"
            let sockets = layout.socketDir("x:\(id)")
            // Each read copies a data directory and starts a Postgres: a few at a time.
            guard activeScratch.withLock({ active in active.count < Self.maxScratch ? active.insert(dir).inserted : false }) else {
                throw ProvisioningError(.capacity, "\(Self.maxScratch) schema reads of generations or snapshots are running; try again in a moment")
            }
            defer { activeScratch.withLock { _ = $0.remove(dir) } }
            do {
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try LocalDataLayout.giveToPostgres(layout.path("scratch"), recursive: false)
                try LocalDataLayout.giveToPostgres(dir, recursive: false)
                _ = try await LocalDataLayout.cloneDirectory(from: from, to: "\(dir)/pgdata")
                try PostgresTools.writeAuthentication(pgdata: "\(dir)/pgdata")
                try layout.makeSocketDir(sockets)
                try await Subprocess.check([tools.tool("pg_ctl", pgdata: "\(dir)/pgdata"), "-D", "\(dir)/pgdata", "-w", "-t", "60", "-l", "\(dir)/postgres.log", "-o",
                                            "-p 5432 -c listen_addresses= -k \(sockets)", "start"], asPostgres: true, what: "starting a temporary instance of \(source.description)")
                let out = try await psql(sql, socket: sockets, port: 5432, database: Self.appDatabase)
                await removeScratch(dir, sockets)
                return out
            } catch {
                await removeScratch(dir, sockets)
                throw error
            }
        }
    }

    private func psql(_ sql: String, socket: String, port: Int, database: String) async throws -> String {
        let out = try await Subprocess.check([tools.restoreTool("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", socket, "-p", String(port), "-U", "postgres",
                                              "-d", database, "-c", "SET TimeZone = 'UTC'", "-c", "SET search_path = public", "-c", sql],
                                             asPostgres: true, what: "reading the schema")
        return out.output
    }

    func removeScratch(_ dir: String, _ sockets: String) async {
        await Postmasters.stop(pgdata: "\(dir)/pgdata", tools: tools)
        try? await LocalDataLayout.removeTree(dir)
        try? FileManager.default.removeItem(atPath: sockets)
    }

    /// Scratch directories no query uses (left by a crash), for reconcile.
    func orphanScratch() -> [String] {
        let root = layout.path("scratch")
        let active = activeScratch.withLock { $0 }
        return ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).map { "\(root)/\($0)" }.filter { !active.contains($0) }
    }
}
