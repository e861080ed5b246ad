import Foundation

/// Runs `body(0..<count)` each on a thread of its own and returns when all have returned.
/// Unlike `DispatchQueue.concurrentPerform`, which runs only as many iterations at once as the
/// machine has cores (two here), every iteration runs at the same time: what tests of sessions
/// that mostly wait (sleep, hold a connection) need to put real concurrency on the system.
public func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let done = DispatchGroup()
    for k in 0..<count {
        done.enter()
        let thread = Thread {
            body(k)
            done.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    done.wait()
}
