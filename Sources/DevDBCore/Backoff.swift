/// Capped exponential backoff: the one retry schedule every retry loop in DevDB uses.
///
/// A value type: each loop owns its own. `next()` returns the delay to wait now and doubles the
/// following one up to `cap`; `reset()` starts over after a success. Optionally bounded by a
/// deadline on a monotonic clock (`expired(now:)`, `fits(now:)`) so a loop can stop retrying
/// when the next wait would pass it.
public struct Backoff: Sendable, Equatable {
    public let initial: Double
    public let cap: Double
    public let factor: Double
    public private(set) var current: Double

    public init(initial: Double, cap: Double, factor: Double = 2) {
        precondition(initial > 0 && cap >= initial && factor >= 1, "Backoff needs 0 < initial <= cap and factor >= 1")
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.current = initial
    }

    /// The delay to wait now; the one after it is `factor` times longer, at most `cap`.
    public mutating func next() -> Double {
        let delay = current
        current = min(current * factor, cap)
        return delay
    }

    /// After a success: the next failure waits `initial` again.
    public mutating func reset() { current = initial }

    /// Whether waiting the next delay from `now` still ends before `deadline`.
    public func fits(now: Double, deadline: Double) -> Bool { now + current < deadline }

    /// The delay as nanoseconds, for `Task.sleep(nanoseconds:)`.
    public static func nanoseconds(_ seconds: Double) -> UInt64 { UInt64(max(0, seconds) * 1_000_000_000) }
}
