import Foundation

/// Runs blocking work (hiredis calls, libcurl transfers, waiting on a child process) from async
/// code, on a bounded set of threads of its own rather than on Swift's cooperative pool or on
/// ad-hoc `DispatchQueue.global()` bridges.
///
/// At most `width` jobs run at once; more wait their turn in arrival order (its own
/// threads started on demand and kept; never the cooperative pool). One shared instance per
/// kind of work (`BlockingExecutor.io` for network-bound calls, `.processes` for child processes)
/// so a burst of one kind cannot starve the other.
public final class BlockingExecutor: @unchecked Sendable {  // `jobs` and `threads` are guarded by `condition`
    public let label: String
    public let width: Int
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var threads = 0
    private var idle = 0

    public init(label: String, width: Int) {
        precondition(width > 0, "a BlockingExecutor needs at least one thread")
        self.label = label
        self.width = width
    }

    /// Redis and HTTP calls: short, network-bound.
    public static let io = BlockingExecutor(label: "io", width: 64)
    /// Child processes (pg_restore, pg_ctl, psql) and long transfers: a restore holds its thread
    /// for minutes, so the lane is wide enough that a storm of them does not queue short reads.
    public static let processes = BlockingExecutor(label: "processes", width: 64)

    /// Queues a job; starts a thread for it when none is idle and fewer than `width` exist.
    /// Threads are started on demand and then kept (they wait on the condition when idle).
    private func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        if idle == 0 && threads < width {
            threads += 1
            let thread = Thread { [self] in work() }
            thread.name = "devdb-\(label)-\(threads)"
            thread.start()
        } else {
            condition.signal()
        }
        condition.unlock()
    }

    private func work() {
        while true {
            condition.lock()
            while jobs.isEmpty {
                idle += 1
                condition.wait()
                idle -= 1
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job()
        }
    }

    /// Runs `body` on one of the executor's threads and returns its result.
    public func run<T: Sendable, E: Error>(_ body: @escaping @Sendable () throws(E) -> T) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { cont in
            submit { cont.resume(returning: Result { () throws(E) -> T in try body() }) }
        }
        return try result.get()
    }

    /// Runs a body that cannot fail.
    public func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { cont in submit { cont.resume(returning: body()) } }
    }
}
