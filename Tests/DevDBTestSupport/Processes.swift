import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Errors from the test support code, with what to do about them.
public struct SupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Where things are: the repository, the built binaries, Postgres' tools.
public enum TestPaths {
    public static let repositoryRoot: URL = {
        var url = URL(fileURLWithPath: #filePath)
        while url.path != "/" {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
        }
        fatalError("cannot find Package.swift above \(#filePath)")
    }()

    /// Directory of the built executables: `DEVDB_BIN_DIR`, else `.build/debug`.
    public static var binDirectory: URL {
        if let dir = ProcessInfo.processInfo.environment["DEVDB_BIN_DIR"] { return URL(fileURLWithPath: dir) }
        return repositoryRoot.appendingPathComponent(".build/debug")
    }

    public static func binary(_ name: String) throws -> String {
        let path = binDirectory.appendingPathComponent(name).path
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw SupportError("\(path) is missing: run `swift build` before `swift test` (or set DEVDB_BIN_DIR)")
        }
        return path
    }

    public static let postgresBin = "/usr/lib/postgresql/15/bin"

    /// PostgreSQL 17 and 18 as scripts/install-deps unpacks them (major -> bin directory).
    public static var extraPostgresMajors: [Int: String] {
        var out: [Int: String] = [:]
        for m in [17, 18] where FileManager.default.isExecutableFile(atPath: "/usr/local/lib/devdb/postgresql/\(m)/bin/postgres") {
            out[m] = "/usr/local/lib/devdb/postgresql/\(m)/bin"
        }
        return out
    }

    /// The repository's venv Python (scripts/install-deps puts psycopg 3 with libpq 18 there).
    public static var venvPython: String { repositoryRoot.appendingPathComponent(".venv/bin/python3").path }

    /// A fresh directory the `postgres` user can write to.
    public static func makeTemporaryDirectory(_ prefix: String) throws -> URL {
        let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        if getuid() == 0 { try run(["chown", "postgres:postgres", url.path]) }
        try TestDirectoryCleaner.removeWhenTestsEnd(url)
        return url
    }
}

/// What the tests leave under their directories is cleaned up once the test process has exited,
/// by one watcher per test process reading a list: `kill DIR` kills every process whose command
/// line mentions DIR (daemons the code under test started, pg_ctl's postmasters) or whose working
/// directory is in it (redis-server rewrites its command line, and this watcher may kill the
/// wrapper whose own watchdog would have killed it); `remove DIR`
/// kills them too, then removes the directory (installations of 1-2 GB for the control-plane
/// suites). `DEVDB_KEEP_TEST_DIRS=1` keeps directories for a post-mortem.
enum TestDirectoryCleaner {
    private static let list: Result<FileHandle, any Error> = Result {
        let path = NSTemporaryDirectory() + "devdb-test-dirs-\(getpid()).list"
        FileManager.default.createFile(atPath: path, contents: nil)
        let script = """
            while kill -0 \(getpid()) 2>/dev/null; do sleep 1; done
            while read -r what d; do
                pkill -KILL -f "$d"
                for p in /proc/[0-9]*; do
                    case "$(readlink "$p/cwd" 2>/dev/null)" in "$d"|"$d"/*) kill -KILL "${p#/proc/}" 2>/dev/null;; esac
                done
            done < '\(path)'
            sleep 1
            while read -r what d; do [ "$what" = remove ] && rm -rf "$d"; done < '\(path)'
            rm -f '\(path)'
            """
        _ = try spawn(["setsid", "sh", "-c", script])
        return try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    }
    private static let lock = NSLock()

    static func register(_ what: String, _ directory: URL) throws {
        let handle = try list.get()
        lock.lock()
        defer { lock.unlock() }
        handle.seekToEndOfFile()
        handle.write(Data("\(what) \(directory.path)\n".utf8))
    }

    static func removeWhenTestsEnd(_ directory: URL) throws {
        let keep = ProcessInfo.processInfo.environment["DEVDB_KEEP_TEST_DIRS"] == "1"
        try register(keep ? "kill" : "remove", directory)
    }
}

/// The result of a finished command.
public struct CommandResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var output: String { stdout + stderr }
}

/// Runs a command to completion (killing it after `timeout` seconds).
@discardableResult
public func run(_ argv: [String], environment: [String: String] = [:], stdin: Data? = nil, timeout: Double = 60,
                check: Bool = true) throws -> CommandResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
    p.arguments = withCleanSignalMask(argv)
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    let input = Pipe()
    p.standardInput = stdin == nil ? FileHandle.nullDevice : input
    try p.run()
    if let stdin {
        // Write from another thread so a large input cannot deadlock against a full stdout pipe.
        let handle = input.fileHandleForWriting
        Thread.detachNewThread {
            handle.write(stdin)
            try? handle.close()
        }
    }
    // Drain both pipes concurrently (a full pipe would block the child).
    let outData = DataCollector(out.fileHandleForReading)
    let errData = DataCollector(err.fileHandleForReading)
    let deadline = Date().addingTimeInterval(timeout)
    while p.isRunning {
        if Date() > deadline {
            p.terminate()
            usleep(200_000)
            if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            throw SupportError("\(argv.joined(separator: " ")) did not finish within \(timeout) s")
        }
        usleep(10_000)
    }
    p.waitUntilExit()
    let result = CommandResult(status: p.terminationStatus, stdout: outData.finish(), stderr: errData.finish())
    if check && result.status != 0 {
        throw SupportError("\(argv.joined(separator: " ")) failed (\(result.status)): \(result.stderr)\(result.stdout)")
    }
    return result
}

/// Foundation spawns children from threads that block most signals, and the mask is
/// inherited: a shell's `wait` never returns, servers ignore SIGTERM, psql ignores SIGINT.
/// Arguments for `/usr/bin/perl` that clear the mask and exec `argv`.
public func withCleanSignalMask(_ argv: [String]) -> [String] {
    ["-MPOSIX", "-e", "sigprocmask(SIG_SETMASK, POSIX::SigSet->new); exec { $ARGV[0] } @ARGV or die \"cannot run $ARGV[0]: $!\\n\"", "--"] + argv
}

/// Starts `argv` (looked up on PATH) with a clean signal mask; the caller waits for it.
public func spawn(_ argv: [String], environment: [String: String] = [:], stdout: Any? = nil, stderr: Any? = nil) throws -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
    p.arguments = withCleanSignalMask(argv)
    p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    p.standardInput = FileHandle.nullDevice
    p.standardOutput = stdout ?? FileHandle.nullDevice
    p.standardError = stderr ?? FileHandle.nullDevice
    try p.run()
    return p
}

/// Reads a pipe to its end on a background thread.
final class DataCollector: @unchecked Sendable {  // `data` is written by one thread, read after join
    private var data = Data()
    private let done = DispatchSemaphore(value: 0)
    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            data = handle.readDataToEndOfFile()
            done.signal()
        }
    }
    func finish() -> String {
        done.wait()
        return String(decoding: data, as: UTF8.self)
    }
}

/// A server process started for tests. It runs under a small shell watchdog that kills it
/// if the test process goes away, so no server outlives `swift test`.
public final class ServerProcess: @unchecked Sendable {  // mutated only by its owner's test
    public let name: String
    public let logFile: URL
    private let process: Process
    public private(set) var pid: pid_t = 0

    /// Starts `argv`; with `asPostgresUser` it runs as `postgres` when the tests run as root.
    public init(name: String, argv: [String], logDirectory: URL, asPostgresUser: Bool = false,
                environment: [String: String] = [:]) throws {
        self.name = name
        logFile = logDirectory.appendingPathComponent("\(name).log")
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
        if getuid() == 0 { _ = try? run(["chown", "postgres:postgres", logFile.path]) }
        let pidFile = logDirectory.appendingPathComponent("\(name).pid")
        var command = argv
        if asPostgresUser && getuid() == 0 {
            command = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] + argv
        }
        let script = """
            "$@" >>'\(logFile.path)' 2>&1 &
            c=$!
            echo $c > '\(pidFile.path)'
            ( while kill -0 \(getpid()) 2>/dev/null; do sleep 0.5; done; kill -KILL $c 2>/dev/null ) &
            w=$!
            wait $c
            rc=$?
            kill $w 2>/dev/null
            exit $rc
            """
        process = Process()
        // Foundation spawns from a thread that blocks most signals, and children inherit that
        // mask: a shell's `wait` would never return and servers would ignore SIGTERM. Clear it.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/perl")
        process.arguments = withCleanSignalMask(["/bin/sh", "-c", script, "sh"] + command)
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<200 {
            if let text = try? String(contentsOf: pidFile, encoding: .utf8), let p = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) {
                pid = p
                return
            }
            usleep(10_000)
        }
        throw SupportError("\(name) did not start")
    }

    public var isRunning: Bool { process.isRunning }

    public func signal(_ sig: Int32) { if pid > 0 { kill(pid, sig) } }

    /// Sends `sig` and waits for the process to exit; returns its exit status.
    @discardableResult
    public func stop(_ sig: Int32 = SIGTERM, timeout: Double = 30) -> Int32 {
        guard process.isRunning else { return process.terminationStatus }
        signal(sig)
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(pid, SIGKILL); process.waitUntilExit() }
        return process.terminationStatus
    }

    /// Waits for the process to exit by itself.
    public func waitForExit(timeout: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    public var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    deinit { stop(SIGKILL, timeout: 5) }
}

/// A TCP port that was free a moment ago.
public func freePort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// Polls `condition` until it holds or `timeout` passes.
public func waitUntil(timeout: Double = 20, interval: Double = 0.05, _ what: String, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if condition() { return }
        usleep(UInt32(interval * 1_000_000))
    }
    throw SupportError("timed out after \(timeout) s waiting for \(what)")
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
public func isListening(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = UInt16(port).bigEndian
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

/// Kills every process whose command line mentions `directory` once the test process has
/// exited: daemons the code under test started (pg_ctl's postmasters) must not outlive the tests.
public func killLeftoversWhenTestsEnd(under directory: URL) throws {
    try TestDirectoryCleaner.register("kill", directory)
}
