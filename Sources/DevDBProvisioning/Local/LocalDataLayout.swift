import DevDBCatalog
import DevDBCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where the local provisioner's files live under `--data-dir` (the layout is drawn on
/// `LocalProvisioner`), and making, handing to the `postgres` user, copying and removing them.
struct LocalDataLayout: Sendable {
    /// The data directory, standardized.
    let root: URL

    static let subdirectories = ["dumps", "generations", "instances", "snapshots", "s", "scratch"]

    /// Checks that socket paths fit under `root` and makes its subdirectories, owned by the
    /// instance user.
    init(root: URL) throws {
        self.root = root.standardizedFileURL
        // The longest socket path is <data-dir>/s/<12 hex>/.s.PGSQL.<5 digits>.lock.
        let longest = self.root.path.utf8.count + "/s/".count + 12 + "/.s.PGSQL.65535.lock".count
        guard longest <= 107 else {
            throw ProvisioningError(.misconfigured, "--data-dir \(self.root.path) is too long for unix socket paths (at most \(107 - longest + self.root.path.utf8.count) characters): choose a shorter directory")
        }
        for sub in Self.subdirectories {
            try FileManager.default.createDirectory(at: root.appendingPathComponent(sub), withIntermediateDirectories: true)
        }
        // Dumps hold whole databases: only the API's user (and root) may read them.
        chmod(root.appendingPathComponent("dumps").path, 0o700)
        try Self.giveToPostgres(root.path, recursive: false)
        if getuid() == 0, let check = try? Subprocess.runBlocking(Subprocess.asPostgres(["test", "-w", self.root.path])), check.status != 0 {
            throw ProvisioningError(.misconfigured, "the postgres user cannot reach \(self.root.path): let it pass through the parent directories (chmod o+x on each) or choose another --data-dir")
        }
        for sub in ["generations", "instances", "snapshots", "s", "dumps", "scratch"] { try Self.giveToPostgres(root.appendingPathComponent(sub).path, recursive: false) }
    }

    // MARK: paths

    func dumpPath(_ g: Generation) -> String { root.appendingPathComponent("dumps/\(g.project)-\(g.number).dump").path }
    func generationDir(_ g: Generation) -> String { generationDir(g.project, g.number) }
    func generationDir(_ project: String, _ number: Int) -> String { root.appendingPathComponent("generations/\(project)/\(number)").path }
    /// The directory of a project's generations.
    func generationsDir(_ project: String) -> String { root.appendingPathComponent("generations/\(project)").path }
    func instanceDir(_ name: String) -> String { root.appendingPathComponent("instances/\(name)").path }
    func snapshotDir(_ s: SnapshotRecord) -> String { root.appendingPathComponent("snapshots/\(s.database)/\(s.name)").path }
    /// The directory of a database's snapshots.
    func snapshotsDir(_ database: String) -> String { root.appendingPathComponent("snapshots/\(database)").path }
    /// The directory `sub` (one of `subdirectories`).
    func path(_ sub: String) -> String { root.appendingPathComponent(sub).path }

    /// The stopped data directory a clone source names.
    func sourceDataDirectory(_ source: CloneSource) -> String {
        switch source {
        case .generation(let g): return "\(generationDir(g))/pgdata"
        case .snapshot(let s): return "\(snapshotDir(s))/pgdata"
        }
    }

    /// A short, private socket directory for an instance (`i:<name>`) or a seed (`g:<project>/<n>`).
    func socketDir(_ key: String) -> String { root.appendingPathComponent("s/\(TokenSecrets.sha256Hex(key).prefix(12))").path }
    func socketDirectory(database name: String) -> String { socketDir("i:\(name)") }

    /// Makes a 0700 socket directory owned by the instance user.
    func makeSocketDir(_ path: String) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        chmod(path, 0o700)
        try Self.giveToPostgres(path, recursive: false)
    }

    // MARK: files and trees

    /// Hands a path to the `postgres` user (when the API runs as root; otherwise the API's user
    /// runs the instances and already owns it).
    static func giveToPostgres(_ path: String, recursive: Bool) throws {
        guard getuid() == 0 else { return }
        let out = try Subprocess.runBlocking(["chown"] + (recursive ? ["-R"] : []) + ["postgres:postgres", path])
        guard out.status == 0 else { throw ProvisioningError.internal("giving files to the postgres user", detail: "chown \(path): \(out.tail)") }
    }

    /// Removes a directory tree for good. Helpers an API killed mid-work left running (a `cp -a`
    /// still filling it) are stopped first, and `rm -rf` tolerates entries that vanish underneath
    /// it (a reconcile removing the same orphan); tried a few times.
    static func removeTree(_ dir: String) async throws {
        var backoff = Backoff(initial: 0.2, cap: 1.6)
        for attempt in 0..<5 {
            Postmasters.killHelpers(mentioning: dir + "/")
            guard FileManager.default.fileExists(atPath: dir) else { return }
            let out = try await Subprocess.run(["rm", "-rf", dir])
            if out.status == 0 && !FileManager.default.fileExists(atPath: dir) { return }
            if attempt == 4 { throw ProvisioningError.internal("removing files", detail: "cannot remove \(dir): \(out.tail)") }
            try? await Task.sleep(nanoseconds: Backoff.nanoseconds(backoff.next()))
        }
    }

    /// Removes `dir` when it is empty (a project's generations, a database's snapshots).
    static func removeIfEmpty(_ dir: String) {
        if (try? FileManager.default.contentsOfDirectory(atPath: dir))?.isEmpty == true { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// Copies a stopped data directory, with reflinks when the filesystem supports them.
    /// Returns `reflink` or `copy`.
    static func cloneDirectory(from source: String, to destination: String) async throws -> String {
        let reflink = await supportsReflink(near: source, destinationDir: (destination as NSString).deletingLastPathComponent)
        try await Subprocess.check(["cp", "-a"] + (reflink ? ["--reflink=always"] : []) + [source, destination], what: "cloning the data directory")
        return reflink ? "reflink" : "copy"
    }

    /// Tries FICLONE (through `cp --reflink=always`) on a small file from `near` into the destination's filesystem.
    static func supportsReflink(near source: String, destinationDir: String) async -> Bool {
        let probe = "\(source)/PG_VERSION"
        let target = "\(destinationDir)/.reflink-probe-\(getpid())"
        defer { unlink(target) }
        let out = try? await Subprocess.run(["cp", "--reflink=always", probe, target])
        return out?.status == 0
    }

    /// The size of a tree in bytes (`du -sb`), or nil.
    static func size(of dir: String) async -> Int64? {
        let out = try? await Subprocess.run(["du", "-sb", dir])
        return out.flatMap { Int64($0.output.split(separator: "\t").first ?? "") }
    }
}
