import DevDBNet
import Synchronization

/// Counts unfinished connection starts, per client address and in all. An address is held to
/// `perAddress` unfinished starts only while the router is under pressure (`pressure` or more
/// unfinished starts in all), so a burst from one address (an office NAT, a pool warming up) is
/// served, while a flood of stalled starts cannot crowd everyone else out. The caller refuses a
/// start that was not admitted where the client can read it (after TLS), and always ends it.
public final class StartLimiter: Sendable {
    private let perAddress: Int
    private let pressure: Int
    private let counts = Mutex<(total: Int, byAddress: [SocketAddress.Host: Int])>((0, [:]))

    public init(perAddress: Int, pressure: Int) {
        self.perAddress = perAddress
        self.pressure = pressure
    }

    /// Counts a start; returns whether it is admitted. Every `begin` needs one `end`.
    public func begin(_ host: SocketAddress.Host) -> Bool {
        counts.withLock { c in
            let mine = c.byAddress[host, default: 0]
            let admitted = c.total < pressure || mine < perAddress
            c.total += 1
            c.byAddress[host] = mine + 1
            return admitted
        }
    }

    public func end(_ host: SocketAddress.Host) {
        counts.withLock { c in
            c.total -= 1
            let n = (c.byAddress[host] ?? 1) - 1
            c.byAddress[host] = n > 0 ? n : nil
        }
    }
}

/// A token bucket per client address (for cancel requests).
public final class AddressRateLimiter: Sendable {
    private let rate: Double
    private let burst: Double
    private let buckets = Mutex<[SocketAddress.Host: (tokens: Double, at: Double)]>([:])

    public init(ratePerSecond: Double) {
        rate = ratePerSecond
        burst = max(1, ratePerSecond * 2)
    }

    public func allow(_ host: SocketAddress.Host) -> Bool {
        let now = monotonicSeconds()
        return buckets.withLock { b in
            if b.count > 100_000 { b.removeAll() }  // bound memory under address-spraying floods
            var entry = b[host] ?? (burst, now)
            entry.tokens = min(burst, entry.tokens + (now - entry.at) * rate)
            entry.at = now
            let ok = entry.tokens >= 1
            if ok { entry.tokens -= 1 }
            b[host] = entry
            return ok
        }
    }
}

