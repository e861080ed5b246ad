import DevDBNet
import Foundation
import Synchronization
import Testing

/// The event loop's loop-only calls (timers, `soon`, descriptor changes) assert in debug builds
/// that they run on the loop's thread; this pins down what that check sees.
@Suite struct EventLoopThreadTests {
    @Test func onlyTheLoopsOwnThreadIsOnTheLoop() throws {
        let loop = try EventLoop(name: "thread-check-test")
        #expect(!loop.isOnLoopThread)  // not started: no thread is the loop's
        loop.start()
        let seen = Mutex<(job: Bool, timer: Bool)?>(nil)
        loop.execute {
            let inJob = loop.isOnLoopThread
            loop.schedule(after: 0.01) {
                seen.withLock { $0 = (inJob, loop.isOnLoopThread) }
            }
        }
        let deadline = Date().addingTimeInterval(10)
        while seen.withLock({ $0 == nil }) && Date() < deadline { usleep(5_000) }
        let result = try #require(seen.withLock { $0 })
        #expect(result.job)
        #expect(result.timer)
        #expect(!loop.isOnLoopThread)  // the test's thread
    }

    #if DEBUG
    /// A timer set from another thread would race the loop's heap: a debug build stops there.
    @Test func aLoopOnlyCallOffTheLoopStopsADebugBuild() async {
        let result = await #expect(processExitsWith: .failure, observing: [\.standardErrorContent]) {
            guard let loop = try? EventLoop(name: "off-loop-test") else { return }  // exits 0: the test fails
            loop.start()
            loop.schedule(after: 1) {}
        }
        let stderr = String(decoding: result?.standardErrorContent ?? [], as: UTF8.self)
        #expect(stderr.contains("EventLoop.schedule off the loop thread of off-loop-test"))
    }
    #endif
}
