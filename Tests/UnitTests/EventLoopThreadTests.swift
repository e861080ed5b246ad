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
}
