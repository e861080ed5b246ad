#if canImport(Glibc)
import Glibc
#endif
import CDevDBShims
import Dispatch
import Synchronization

/// Monotonic seconds.
@inline(__always)
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Linux's epoll constants (the header's enum does not reach Swift through the shim).
enum Epoll {
    static let input: UInt32 = 0x001
    static let output: UInt32 = 0x004
    static let error: UInt32 = 0x008
    static let hangUp: UInt32 = 0x010
    static let add: Int32 = 1
    static let delete: Int32 = 2
    static let modify: Int32 = 3
}

/// Something that runs closures on its own thread or queue.
public protocol JobExecutor: Sendable {
    func execute(_ job: @escaping @Sendable () -> Void)
}

extension DispatchQueue: JobExecutor {
    public func execute(_ job: @escaping @Sendable () -> Void) { async(execute: job) }
}

/// One thread blocked in `epoll_wait` that runs, inline, the handlers of every descriptor that
/// became ready: no hand-off to another thread per readiness event (what a Dispatch source pays:
/// libdispatch's epoll thread wakes, then a worker thread runs the handler). Level-triggered.
///
/// Everything that touches a `PolledDescriptor` runs on the loop's thread. Other threads hand
/// work over with `execute` (a mutex-guarded list and an eventfd wake-up). Timers are the loop's
/// own (a min-heap looked at before each wait), so a session's deadlines cost no other thread.
///
/// Thread confinement: `execute` is the one call for any thread; every other method, and the
/// descriptors' handlers, belong to the loop's thread, which debug builds check
/// (`isOnLoopThread`).
public final class EventLoop: JobExecutor, @unchecked Sendable {  // loop-thread state is touched only on that thread
    /// Read buffer shared by everything on this loop (one read runs at a time).
    public let scratch: UnsafeMutableRawBufferPointer
    public static let scratchSize = 64 * 1024
    public let name: String

    private let epfd: Int32
    private let wakeFD: Int32
    private let jobs = Mutex<[@Sendable () -> Void]>([])
    /// The loop's thread (`pthread_t`), 0 until it runs; written once by that thread, read by
    /// the debug-build checks on any thread.
    private let thread = Atomic<UInt>(0)
    /// Work queued by the loop for itself, run after the current batch (loop thread only).
    private var local: [() -> Void] = []
    /// Descriptors closed during the current batch: kept alive until the batch ends, because
    /// later events of the same batch still carry pointers to them.
    private var graveyard: [PolledDescriptor] = []
    private let events = UnsafeMutablePointer<devdb_event>.allocate(capacity: 256)
    /// Timers of this loop (loop thread only): a min-heap of (deadline, id) and the jobs by id.
    /// A cancelled timer's job is dropped at once; its 16-byte heap entry goes when it is due.
    private var timerHeap: [(deadline: Double, id: UInt64)] = []
    private var timerJobs: [UInt64: () -> Void] = [:]
    private var nextTimerID: UInt64 = 1
    /// Objects holding memory they can give back once idle, asked every `idleSweepInterval`.
    private var idleTracked: [WeakIdleReleasable] = []
    private var idleSweepScheduled = false
    public static let idleSweepInterval = 1.0

    public init(name: String) throws(Errno) {
        self.name = name
        epfd = devdb_epoll_create()
        guard epfd >= 0 else { throw Errno.current }
        wakeFD = devdb_eventfd()
        guard wakeFD >= 0 else { let e = Errno.current; Glibc.close(epfd); throw e }
        guard devdb_epoll_ctl(epfd, Epoll.add, wakeFD, Epoll.input, 0) == 0 else {
            let e = Errno.current; Glibc.close(epfd); Glibc.close(wakeFD); throw e
        }
        scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.scratchSize, alignment: 16)
    }

    /// Starts the loop's thread. The loop runs for the life of the process.
    public func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let loop = Unmanaged<EventLoop>.fromOpaque(arg!).takeRetainedValue()
            loop.run()
            return nil
        }, box)
        precondition(rc == 0, "cannot start the event loop thread \(name): \(Errno(rc))")
        pthread_detach(thread)
    }

    /// Whether the caller runs on the loop's thread. Loop-only calls `assert` it: the check is
    /// compiled out of release builds, so the relay pays nothing for it.
    public var isOnLoopThread: Bool {
        pthread_equal(pthread_self(), thread.load(ordering: .relaxed)) != 0
    }

    /// Runs `job` on the loop's thread (from any thread).
    public func execute(_ job: @escaping @Sendable () -> Void) {
        jobs.withLock { $0.append(job) }
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, 8)
    }

    /// From the loop's thread: runs `job` on it after `seconds`, unless cancelled first.
    @discardableResult
    public func schedule(after seconds: Double, _ job: @escaping () -> Void) -> UInt64 {
        assert(isOnLoopThread, "EventLoop.schedule off the loop thread of \(name)")
        let id = nextTimerID
        nextTimerID += 1
        timerJobs[id] = job
        timerHeap.append((monotonicSeconds() + seconds, id))
        var i = timerHeap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard timerHeap[parent].deadline > timerHeap[i].deadline else { break }
            timerHeap.swapAt(parent, i)
            i = parent
        }
        return id
    }

    /// From the loop's thread: drops a timer's job (a no-op when it already ran).
    public func cancel(timer id: UInt64) {
        assert(isOnLoopThread, "EventLoop.cancel off the loop thread of \(name)")
        timerJobs.removeValue(forKey: id)
    }

    private func popTimer() {
        let last = timerHeap.removeLast()
        guard !timerHeap.isEmpty else { return }
        timerHeap[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < timerHeap.count && timerHeap[l].deadline < timerHeap[m].deadline { m = l }
            if r < timerHeap.count && timerHeap[r].deadline < timerHeap[m].deadline { m = r }
            if m == i { return }
            timerHeap.swapAt(i, m)
            i = m
        }
    }

    /// Runs due timers; returns the epoll timeout until the next one (-1: none).
    private func runTimers() -> Int32 {
        let now = monotonicSeconds()
        while let first = timerHeap.first, first.deadline <= now {
            popTimer()
            if let job = timerJobs.removeValue(forKey: first.id) { job() }
        }
        // Cancelled timers at the top would wake the loop for nothing: drop them.
        while let first = timerHeap.first, timerJobs[first.id] == nil { popTimer() }
        guard let next = timerHeap.first else { return -1 }
        return Int32(min(60_000, max(1, ((next.deadline - now) * 1000).rounded(.up))))
    }

    /// From the loop's thread: asks `object` every `idleSweepInterval` seconds whether it is idle
    /// until it gives its memory back (or goes away). One timer per loop, not per object.
    public func trackUntilIdle(_ object: IdleReleasable) {
        assert(isOnLoopThread, "EventLoop.trackUntilIdle off the loop thread of \(name)")
        idleTracked.append(WeakIdleReleasable(object: object))
        guard !idleSweepScheduled else { return }
        idleSweepScheduled = true
        schedule(after: Self.idleSweepInterval) { [self] in sweepIdle() }
    }

    private func sweepIdle() {
        // Freed record buffers go back to malloc, not to the system: after many (a burst of TLS
        // sessions going quiet) give the free pages back too, so the process's resident memory
        // reflects what idle sessions hold. At most once per sweep interval.
        if sweepIdleNow() >= 32 { _ = devdb_malloc_trim() }
        if idleTracked.isEmpty {
            idleTracked = []  // removeAll keeps the capacity a burst grew; let it go
            idleSweepScheduled = false
        } else {
            schedule(after: Self.idleSweepInterval) { [self] in sweepIdle() }
        }
    }

    /// From the loop's thread: one sweep now (what the timer does every interval). Returns how
    /// many objects gave their memory back.
    @discardableResult
    public func sweepIdleNow() -> Int {
        assert(isOnLoopThread, "EventLoop.sweepIdleNow off the loop thread of \(name)")
        var released = 0
        idleTracked.removeAll { box in
            guard let object = box.object else { return true }
            guard object.releaseIfIdle() else { return false }
            released += 1
            return true
        }
        return released
    }

    /// From the loop's thread: runs `job` after the descriptors ready now had their turn.
    public func soon(_ job: @escaping () -> Void) {
        assert(isOnLoopThread, "EventLoop.soon off the loop thread of \(name)")
        local.append(job)
    }

    // MARK: the loop

    private func run() {
        thread.store(pthread_self(), ordering: .relaxed)
        while true {
            let timeout = runTimers()
            let n = waitForEvents(timeout: local.isEmpty ? timeout : 0)
            if n < 0 {
                if errno == EINTR { continue }
                fatalError("epoll_wait failed on \(name): \(Errno.current)")
            }
            var woken = false
            for i in 0..<Int(n) {
                let token = events[i].token
                if token == 0 { woken = true; continue }
                let d = Unmanaged<PolledDescriptor>.fromOpaque(UnsafeRawPointer(bitPattern: UInt(token))!).takeUnretainedValue()
                d.handle(events[i].events)
            }
            if woken {
                var count: UInt64 = 0
                _ = Glibc.read(wakeFD, &count, 8)
                let batch = jobs.withLock { j -> [@Sendable () -> Void] in
                    let b = j
                    j.removeAll(keepingCapacity: true)
                    return b
                }
                for job in batch { job() }
            }
            if !local.isEmpty {
                let batch = local
                local.removeAll(keepingCapacity: true)
                for job in batch { job() }
            }
            if !graveyard.isEmpty { graveyard.removeAll(keepingCapacity: true) }
        }
    }

    /// `epoll_wait`, but before sleeping the thread yields its CPU once and looks again: on a
    /// machine whose cores the clients and Postgres share, the processes this loop just woke
    /// (with a send) run in that turn and answer, so the loop finds their bytes without going to
    /// sleep and being woken for them. Measured (docs/router.md): about 5-9% more TPS, CPU per
    /// transaction within noise or lower, voluntary context switches per transaction from 0.38
    /// to 0.03. With a core to itself the yield returns at once and costs two syscalls per sleep.
    private func waitForEvents(timeout: Int32) -> Int32 {
        if timeout != 0 {
            let ready = devdb_epoll_wait(epfd, events, 256, 0)
            if ready != 0 { return ready }
            sched_yield()
        }
        return devdb_epoll_wait(epfd, events, 256, timeout)
    }

    // MARK: registrations (loop thread)

    /// Every `PolledDescriptor` change (watch, pause, close) comes through these three.
    fileprivate func apply(_ d: PolledDescriptor, mask: UInt32) {
        assert(isOnLoopThread, "descriptor \(d.fd) changed off the loop thread of \(name)")
        let token = UInt64(UInt(bitPattern: Unmanaged.passUnretained(d).toOpaque()))
        if d.registered {
            if devdb_epoll_ctl(epfd, Epoll.modify, d.fd, mask, token) == 0 { d.mask = mask; return }
            // Not there any more: add it again below.
            d.registered = false
        }
        if devdb_epoll_ctl(epfd, Epoll.add, d.fd, mask, token) == 0 {
            d.registered = true
            d.mask = mask
        } else {
            // The descriptor is unusable (closed under us); report it as an error to its owner.
            d.mask = mask
            soon { [d] in d.handle(Epoll.error) }
        }
    }

    fileprivate func remove(_ d: PolledDescriptor) {
        assert(isOnLoopThread, "descriptor \(d.fd) removed off the loop thread of \(name)")
        if d.registered {
            _ = devdb_epoll_ctl(epfd, Epoll.delete, d.fd, 0, 0)
            d.registered = false
        }
    }

    fileprivate func bury(_ d: PolledDescriptor) {
        assert(isOnLoopThread, "descriptor \(d.fd) closed off the loop thread of \(name)")
        graveyard.append(d)
    }
}

/// Something on a loop that holds memory while busy and can give it back when idle.
public protocol IdleReleasable: AnyObject {
    /// On the loop's thread: gives the memory back if the object was idle since the last call;
    /// true when it did (the loop stops asking until it is tracked again).
    func releaseIfIdle() -> Bool
}

private struct WeakIdleReleasable {
    weak var object: IdleReleasable?
}

/// A non-blocking descriptor watched by an `EventLoop`. Its handlers run on the loop's thread;
/// `closeDescriptor` unregisters and closes it and drops the handlers (breaking their cycles).
open class PolledDescriptor: @unchecked Sendable {  // confined to its loop's thread
    public let fd: Int32
    public let loop: EventLoop
    fileprivate var registered = false
    fileprivate var mask: UInt32 = 0
    public private(set) var readWatched = false
    public private(set) var writeWatched = false
    public private(set) var isClosed = false
    private var readHandler: (() -> Void)?
    private var writeHandler: (() -> Void)?

    public init(fd: Int32, loop: EventLoop) {
        self.fd = fd
        self.loop = loop
    }

    /// Calls `handler` whenever the descriptor is readable (or hung up, or in error).
    public func watchReadable(_ handler: @escaping () -> Void) {
        readHandler = handler
        resumeReading()
    }

    /// Read notifications on again, with the last handler (a no-op when they are on).
    public func resumeReading() {
        guard !isClosed, !readWatched || !registered else { return }
        readWatched = true
        update()
    }

    public func pauseReading() {
        guard readWatched else { return }
        readWatched = false
        update()
    }

    public func watchWritable(_ handler: @escaping () -> Void) {
        writeHandler = handler
        guard !isClosed, !writeWatched || !registered else { return }
        writeWatched = true
        update()
    }

    /// Write notifications off; the handler is dropped (an idle session keeps no closure for it).
    public func stopWatchingWritable() {
        writeHandler = nil
        guard writeWatched else { return }
        writeWatched = false
        update()
    }

    private func update() {
        guard !isClosed else { return }
        let mask = (readWatched ? Epoll.input : 0) | (writeWatched ? Epoll.output : 0)
        if registered && mask == self.mask { return }
        if mask == 0 && !registered { return }
        loop.apply(self, mask: mask)
    }

    fileprivate func handle(_ events: UInt32) {
        guard !isClosed else { return }
        let trouble = events & (Epoll.hangUp | Epoll.error) != 0
        if readWatched && (trouble || events & Epoll.input != 0) { readHandler?() }
        guard !isClosed else { return }
        if writeWatched && (trouble || events & Epoll.output != 0) { writeHandler?() }
        guard !isClosed else { return }
        // Level-triggered HUP/ERR is reported whatever the mask: with nothing watched it would
        // fire forever, so take the descriptor out until someone watches it again.
        if trouble && !readWatched && !writeWatched { loop.remove(self) }
    }

    /// Unregisters and closes the descriptor. Safe to call more than once.
    open func closeDescriptor() {
        guard !isClosed else { return }
        isClosed = true
        loop.remove(self)
        readHandler = nil
        writeHandler = nil
        readWatched = false
        writeWatched = false
        Glibc.close(fd)
        loop.bury(self)
    }
}
