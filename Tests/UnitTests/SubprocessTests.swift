import DevDBProvisioning
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What the provisioner needs from the tools it runs (initdb, pg_ctl, pg_restore, psql): they
/// start with default signal handling whatever the API blocks or ignores (a postmaster that
/// cannot see SIGINT never stops; a psql that ignores SIGPIPE spins on a closed pipe), they get
/// none of the API's descriptors (sockets, Redis, the listener), cancelling kills the whole
/// process group (pg_restore's workers too), and their output can be read while they run.
@Suite struct SubprocessTests {
    /// The mask of signals `field` (SigBlk, SigIgn) lists in the child's /proc status.
    static func mask(_ field: String, in status: String) -> UInt64? {
        status.split(separator: "\n").first { $0.hasPrefix(field + ":") }
            .flatMap { UInt64($0.dropFirst(field.count + 1).trimmingCharacters(in: .whitespaces), radix: 16) }
    }

    @Test func childrenStartWithDefaultSignalsWhateverTheCallerBlocksOrIgnores() throws {
        let previous = signal(SIGPIPE, SIG_IGN)
        defer { signal(SIGPIPE, previous) }
        // Spawned from a thread that blocks SIGINT and SIGTERM, as Dispatch's threads may.
        let result = Mutex<Subprocess.Output?>(nil)
        let thread = Thread {
            var blocked = sigset_t()
            sigemptyset(&blocked)
            sigaddset(&blocked, SIGINT)
            sigaddset(&blocked, SIGTERM)
            pthread_sigmask(SIG_BLOCK, &blocked, nil)
            result.withLock { $0 = try? Subprocess.runBlocking(["cat", "/proc/self/status"]) }
        }
        thread.start()
        while result.withLock({ $0 == nil }) && !thread.isFinished { usleep(10_000) }
        let deadline = Date().addingTimeInterval(10)
        while result.withLock({ $0 == nil }) && Date() < deadline { usleep(10_000) }
        let status = try #require(result.withLock { $0 }).output
        #expect(Self.mask("SigBlk", in: status) == 0, "\(status)")
        let ignored = try #require(Self.mask("SigIgn", in: status))
        #expect(ignored & (1 << (UInt64(SIGPIPE) - 1)) == 0, "SIGPIPE is not ignored in the child: \(String(ignored, radix: 16))")
    }

    @Test func childrenInheritNoDescriptorsButTheStandardOnes() async throws {
        let fd = open("/dev/null", O_RDONLY)  // no O_CLOEXEC, as C libraries open sockets
        #expect(fd >= 0)
        let high = dup2(fd, 117)
        defer { close(fd); close(high) }
        let out = try await Subprocess.run(["ls", "/proc/self/fd"])
        let fds = Set(out.output.split(separator: "\n").map(String.init))
        #expect(!fds.contains("117") && !fds.contains(String(fd)), "\(fds)")
        #expect(fds.isSuperset(of: ["0", "1", "2"]))
    }

    @Test func cancellingKillsTheWholeProcessGroup() async throws {
        let pidFile = NSTemporaryDirectory() + "subprocess-grandchild-\(UUID().uuidString)"
        defer { unlink(pidFile) }
        let task = Task { try await Subprocess.run(["sh", "-c", "sleep 300 & echo $! > \"$1\"; wait", "sh", pidFile]) }
        var grandchild: pid_t = 0
        for _ in 0..<500 where grandchild == 0 {
            grandchild = pid_t((try? String(contentsOfFile: pidFile, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(grandchild > 0)
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        var gone = false
        for _ in 0..<500 where !gone {
            let state = (try? String(contentsOfFile: "/proc/\(grandchild)/stat", encoding: .utf8))?.split(separator: " ").dropFirst(2).first
            gone = state == nil || state == "Z"
            if !gone { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(gone, "the grandchild \(grandchild) (sleep 300) survived the cancel")
    }

    @Test func outputCanBeReadWhileTheToolRuns() async throws {
        // The tool waits for a gate file (at most 20 s) instead of sleeping a fixed time, so a
        // busy machine that starts it late or wakes the test late cannot make "second" appear
        // before the test has read the early output.
        let path = NSTemporaryDirectory() + "subprocess-output-\(UUID().uuidString)"
        let gate = path + ".gate"
        defer { unlink(path); unlink(gate) }
        let script = "echo first; echo err >&2; i=0; while [ ! -e \"$1\" ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; echo second; exit 3"
        async let done = Subprocess.run(["sh", "-c", script, "sh", gate], outputPath: path)
        var early = ""
        for _ in 0..<1000 where !(early.contains("first") && early.contains("err")) {
            try await Task.sleep(for: .milliseconds(10))
            early = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        }
        #expect(early.contains("first") && early.contains("err") && !early.contains("second"), "\(early)")
        FileManager.default.createFile(atPath: gate, contents: nil)
        let out = try await done
        #expect(out.status == 3 && out.output.contains("second"), "\(out)")
    }
}
