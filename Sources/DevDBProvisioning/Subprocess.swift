import CCurlShims
import DevDBCore
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Runs external tools (initdb, pg_ctl, pg_restore, psql, cp). Spawned with posix_spawn and an
/// empty signal mask: children of Dispatch/Foundation threads would otherwise inherit blocked
/// signals, and a postmaster that cannot see SIGINT never stops.
public enum Subprocess {
    public struct Output: Sendable {
        public var status: Int32
        public var output: String
        /// The last lines of the output, for error messages.
        public var tail: String {
            output.split(separator: "\n").suffix(6).joined(separator: "\n")
        }
    }

    /// Runs `argv` to completion; stdout and stderr are captured together. Cancelling the task
    /// kills the child's process group (pg_restore and its workers, psql, initdb).
    /// With `outputPath`, the output is written there as it comes (for progress read while it
    /// runs) and the caller removes the file.
    public static func run(_ argv: [String], environment: [String: String] = [:], asPostgres: Bool = false, outputPath: String? = nil) async throws -> Output {
        let command = asPostgres ? Self.asPostgres(argv) : argv
        let child = Mutex<(pid: pid_t, cancelled: Bool)>((0, false))
        let out = try await withTaskCancellationHandler {
            try await BlockingExecutor.processes.run { () throws(ProvisioningError) -> Output in
                try runBlocking(command, environment: environment, outputPath: outputPath) { pid in
                    // Cancelled before the child existed: kill it as soon as it does.
                    let cancelled = child.withLock { $0.pid = pid; return $0.cancelled }
                    if cancelled { kill(-pid, SIGKILL) }
                }
            }
        } onCancel: {
            let pid = child.withLock { $0.cancelled = true; return $0.pid }
            if pid > 0 { kill(-pid, SIGKILL) }
        }
        try Task.checkCancellation()
        return out
    }

    /// `argv` run as the `postgres` user when we are root (initdb and postgres refuse root).
    public static func asPostgres(_ argv: [String]) -> [String] {
        getuid() == 0 ? ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + argv : argv
    }

    public static func runBlocking(_ argv: [String], environment: [String: String] = [:], outputPath: String? = nil,
                                   spawned: (pid_t) -> Void = { _ in }) throws(ProvisioningError) -> Output {
        let logPath = outputPath ?? NSTemporaryDirectory() + "devdb-sub-\(UUID().uuidString)"
        defer { if outputPath == nil { unlink(logPath) } }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        _ = devdb_spawn_close_from(&actions, 3)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP))
        posix_spawnattr_setpgroup(&attr, 0)

        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let envStrings = env.map { "\($0.key)=\($0.value)" }
        var pid: pid_t = 0
        let rc = withCStrings(argv) { args in
            withCStrings(envStrings) { envp in posix_spawnp(&pid, argv[0], &actions, &attr, args, envp) }
        }
        guard rc == 0 else { throw .internal("running \(argv[0])", detail: "cannot run \(argv[0]): \(String(cString: strerror(rc)))") }
        spawned(pid)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
        let exit: Int32 = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return Output(status: exit, output: output)
    }

    private static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
        pointers.append(nil)
        defer { pointers.forEach { free($0) } }
        return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
    }

    /// Runs and throws when the command fails: users read "`what` failed", the log the output's tail.
    @discardableResult
    public static func check(_ argv: [String], asPostgres: Bool = false, environment: [String: String] = [:], what: String,
                             kind: ProvisioningError.Kind = .internal) async throws -> Output {
        let out = try await run(argv, environment: environment, asPostgres: asPostgres)
        guard out.status == 0 else {
            throw ProvisioningError(kind, "\(what) failed on the server; an operator finds the cause in devdb-api's log", detail: "\(what) failed: \(out.tail)")
        }
        return out
    }
}
