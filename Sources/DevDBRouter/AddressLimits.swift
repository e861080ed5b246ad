import DevDBNet
import Synchronization

/// Counts unfinished handshakes per client address and refuses more than `limit`, so one
/// address cannot hold the router's startup slots (slowloris).
public final class HandshakeLimiter: Sendable {
    private let limit: Int
    private let counts = Mutex<[SocketAddress.Host: Int]>([:])

    public init(limit: Int) { self.limit = limit }

    public func acquire(_ host: SocketAddress.Host) -> Bool {
        counts.withLock { c in
            let n = c[host, default: 0]
            guard n < limit else { return false }
            c[host] = n + 1
            return true
        }
    }

    public func release(_ host: SocketAddress.Host) {
        counts.withLock { c in
            let n = (c[host] ?? 1) - 1
            c[host] = n > 0 ? n : nil
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

