import Synchronization

/// The console's questions to database instances across all page requests of the API: at most
/// `width` running at a time, and at most one per instance, whose answer goes to every request
/// that asked for it meanwhile. A mutex rather than an actor: a request out of time must stop
/// waiting at once, from a cancellation handler, which cannot await an actor.
final class ConsoleInstanceQuestions<Answer: Sendable>: Sendable {
    private enum Wake: Sendable { case slot, answer(Answer), cancelled }

    private struct State {
        var running = 0
        var nextID: UInt64 = 0
        /// Suspended waiters by id.
        var waiters: [UInt64: CheckedContinuation<Wake, Never>] = [:]
        /// Wakes that came before their waiter suspended.
        var early: [UInt64: Wake] = [:]
        /// Waiting for a free slot, first come first served.
        var slotQueue: [UInt64] = []
        /// Questions running, by key, with who else waits for their answer.
        var inFlight: [String: [UInt64]] = [:]
    }

    let width: Int
    private let state = Mutex(State())

    init(width: Int) { self.width = width }

    /// `question`'s answer for `key`, asked once however many ask at the same time; nil when the
    /// calling task was cancelled before it had one.
    func ask(_ key: String, _ question: @Sendable () async -> Answer) async -> Answer? {
        // A follower's id, or nil for the one who asks.
        let follower = state.withLock { s -> UInt64? in
            if s.inFlight[key] != nil {
                s.nextID += 1
                s.inFlight[key]!.append(s.nextID)
                return s.nextID
            }
            s.inFlight[key] = []
            return nil
        }
        if let id = follower {
            if case .answer(let a) = await suspend(id) { return a }
            return nil
        }
        var answer: Answer?
        if await acquireSlot() {
            answer = await question()
            releaseSlot()
        }
        // A cancelled question's answer (its psql killed) is no answer for the others either.
        if Task.isCancelled { answer = nil }
        let followers = state.withLock { $0.inFlight.removeValue(forKey: key) ?? [] }
        for id in followers { wake(id, answer.map { .answer($0) } ?? .cancelled) }
        return answer
    }

    /// Waits for one of the `width` slots; false when cancelled first (then it holds none).
    private func acquireSlot() async -> Bool {
        let id = state.withLock { s -> UInt64? in
            if s.running < width { s.running += 1; return nil }
            s.nextID += 1
            s.slotQueue.append(s.nextID)
            return s.nextID
        }
        guard let id else { return true }
        guard case .slot = await suspend(id) else { return false }
        if Task.isCancelled { releaseSlot(); return false }
        return true
    }

    /// Hands the slot to the next waiter, or frees it.
    private func releaseSlot() {
        let next = state.withLock { s -> UInt64? in
            if s.slotQueue.isEmpty { s.running -= 1; return nil }
            return s.slotQueue.removeFirst()
        }
        if let next { wake(next, .slot) }
    }

    private func wake(_ id: UInt64, _ w: Wake) {
        let c = state.withLock { s -> CheckedContinuation<Wake, Never>? in
            if let c = s.waiters.removeValue(forKey: id) { return c }
            s.early[id] = w
            return nil
        }
        c?.resume(returning: w)
    }

    private func suspend(_ id: UInt64) async -> Wake {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Wake, Never>) in
                let early = state.withLock { s -> Wake? in
                    if let w = s.early.removeValue(forKey: id) { return w }
                    s.waiters[id] = c
                    return nil
                }
                if let early { c.resume(returning: early) }
            }
        } onCancel: {
            // Out of the queues, so no slot or answer is handed to a waiter that left; a wake
            // already given (in `early`) stays, and its receiver hands a slot back itself.
            let c = state.withLock { s -> CheckedContinuation<Wake, Never>? in
                var queued = s.slotQueue.contains(id)
                s.slotQueue.removeAll { $0 == id }
                for key in s.inFlight.keys where s.inFlight[key]!.contains(id) {
                    queued = true
                    s.inFlight[key]!.removeAll { $0 == id }
                }
                guard queued else { return nil }  // already woken
                if let c = s.waiters.removeValue(forKey: id) { return c }
                s.early[id] = .cancelled  // not suspended yet
                return nil
            }
            c?.resume(returning: .cancelled)
        }
    }
}
