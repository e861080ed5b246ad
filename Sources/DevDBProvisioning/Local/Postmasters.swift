import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Finds postmasters on this machine and stops them, and the helpers left in a directory being
/// removed. Found through /proc: a postmaster's command line keeps the `-D <data directory>`
/// pg_ctl started it with (its children rename themselves).
enum Postmasters {
    struct Entry { let pid: pid_t; let dataDirectory: String }

    static func list() -> [Entry] {
        var out: [Entry] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), let argv = commandLine(pid), let first = argv.first,
                  (first as NSString).lastPathComponent == "postgres", let i = argv.firstIndex(of: "-D"), i + 1 < argv.count else { continue }
            out.append(Entry(pid: pid, dataDirectory: URL(fileURLWithPath: argv[i + 1]).standardizedFileURL.path))
        }
        return out
    }

    static func commandLine(_ pid: pid_t) -> [String]? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"), !data.isEmpty else { return nil }
        return data.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }.filter { !$0.isEmpty }
    }

    /// Kills processes other than postmasters whose command line names `path` (a `cp -a` into an
    /// instance directory started by an API that was killed).
    static func killHelpers(mentioning path: String) {
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), pid != getpid(), let argv = commandLine(pid), let first = argv.first,
                  (first as NSString).lastPathComponent != "postgres", !argv.contains("-D"),
                  argv.contains(where: { $0.hasPrefix(path) || $0 + "/" == path }) else { continue }
            kill(pid, SIGKILL)
        }
    }

    /// SIGQUIT (immediate shutdown: the postmaster stops its children), then SIGKILL if it stays.
    static func stop(_ pid: pid_t) async {
        guard commandLine(pid) != nil else { return }
        kill(pid, SIGQUIT)
        for _ in 0..<50 {
            if commandLine(pid) == nil { return }
            try? await Task.sleep(for: .milliseconds(100))
        }
        kill(pid, SIGKILL)
    }

    /// Stops the postmaster of `pgdata` however it can: `pg_ctl stop -m immediate`, then the pid
    /// in `postmaster.pid` (checked to be that postmaster), then any postmaster whose command
    /// line names this data directory (its directory may be gone already).
    static func stop(pgdata: String, tools: PostgresTools) async {
        if FileManager.default.fileExists(atPath: "\(pgdata)/postmaster.pid") {
            _ = try? await Subprocess.run([tools.tool("pg_ctl", pgdata: pgdata), "-D", pgdata, "-m", "immediate", "-w", "-t", "10", "stop"], asPostgres: true)
        }
        for p in list() where p.dataDirectory == pgdata { await stop(p.pid) }
    }
}
