import DevDBCore
import Foundation
import Synchronization

/// `CatalogBackend` in memory, with Redis' semantics where the engine depends on them (empty
/// sets, hashes and lists cease to exist; a transaction applies all its writes or none). All
/// state is behind one mutex, so every call, and every commit with its guards, is atomic.
public final class MemoryBackend: CatalogBackend {
    struct State {
        var strings: [String: String] = [:]
        var sets: [String: Set<String>] = [:]
        var hashes: [String: [String: String]] = [:]
        var lists: [String: [String]] = [:]
        /// Sorted sets: member → score.
        var sortedSets: [String: [String: Double]] = [:]
        /// Streams: entries in id order, ids (milliseconds, sequence) as Redis makes them.
        var streams: [String: [(id: StreamID, value: String)]] = [:]
        /// Messages published, in order (channel, message): what a subscriber would have heard.
        var published: [(String, String)] = []

        func exists(_ key: String) -> Bool {
            strings[key] != nil || sets[key] != nil || hashes[key] != nil || lists[key] != nil || streams[key] != nil || sortedSets[key] != nil
        }

        func holds(_ g: Guard) -> Bool {
            switch g {
            case .value(let key, let raw): return strings[key] == raw
            case .field(let key, let field, let value): return hashes[key]?[field] == value
            case .cardinality(let key, let n): return (sets[key]?.count ?? 0) == n
            case .exists(let key): return exists(key)
            }
        }

        mutating func apply(_ w: RedisWrite) {
            switch w {
            case .set(let k, let v): strings[k] = v
            case .delete(let keys):
                for k in keys { strings[k] = nil; sets[k] = nil; hashes[k] = nil; lists[k] = nil; streams[k] = nil; sortedSets[k] = nil }
            case .setAdd(let k, let m): sets[k, default: []].insert(m)
            case .setRemove(let k, let m):
                sets[k]?.remove(m)
                if sets[k]?.isEmpty == true { sets[k] = nil }
            case .hashSet(let k, let fields): for f in fields { hashes[k, default: [:]][f.name] = f.value }
            case .hashDeleteIfEquals(let k, let f, let v):
                if hashes[k]?[f] == v { hashes[k]?[f] = nil }
                if hashes[k]?.isEmpty == true { hashes[k] = nil }
            case .hashIncrement(let k, let f, let n):
                hashes[k, default: [:]][f] = String((hashes[k]?[f].flatMap { Int($0) } ?? 0) + n)
            case .sortedSetAdd(let k, let m, let score): sortedSets[k, default: [:]][m] = score
            case .sortedSetRemove(let k, let m):
                sortedSets[k]?[m] = nil
                if sortedSets[k]?.isEmpty == true { sortedSets[k] = nil }
            case .listAppend(let k, let v): lists[k, default: []].append(v)
            case .listRemove(let k, let v):
                lists[k]?.removeAll { $0 == v }
                if lists[k]?.isEmpty == true { lists[k] = nil }
            case .listKeepLast(let k, let n):
                if let l = lists[k], l.count > max(1, n) { lists[k] = Array(l.suffix(max(1, n))) }
            case .publish(let channel, let message): published.append((channel, message))
            case .streamAdd(let k, let v, let n, _):
                // Exact trimming: what Redis' approximate trimming keeps is at least this.
                var entries = streams[k] ?? []
                let ms = Int64(Date().timeIntervalSince1970 * 1000)
                let last = entries.last?.id ?? StreamID(ms: 0, seq: 0)
                let id = ms > last.ms ? StreamID(ms: ms, seq: 0) : StreamID(ms: last.ms, seq: last.seq + 1)
                entries.append((id, v))
                if entries.count > n { entries.removeFirst(entries.count - n) }
                streams[k] = entries.isEmpty ? nil : entries
            case .streamTrimBefore(let k, let minimum):
                streams[k]?.removeAll { $0.id.ms < minimum }
            }
        }

        var allKeys: [String] { Array(strings.keys) + Array(sets.keys) + Array(hashes.keys) + Array(lists.keys) + Array(streams.keys) + Array(sortedSets.keys) }
    }

    private let state = Mutex(State())

    public init() {}

    public func get(_ key: String) throws -> String? { state.withLock { $0.strings[key] } }
    public func getMany(_ keys: [String]) throws -> [String?] { state.withLock { s in keys.map { s.strings[$0] } } }
    public func setMembers(_ key: String) throws -> [String] { state.withLock { Array($0.sets[key] ?? []) } }
    public func setCount(_ key: String) throws -> Int { state.withLock { $0.sets[key]?.count ?? 0 } }
    public func hashField(_ key: String, _ field: String) throws -> String? { state.withLock { $0.hashes[key]?[field] } }
    public func hash(_ key: String) throws -> [String: String] { state.withLock { $0.hashes[key] ?? [:] } }
    public func hashes(_ keys: [String]) throws -> [[String: String]] { state.withLock { s in keys.map { s.hashes[$0] ?? [:] } } }
    public func list(_ key: String) throws -> [String] { state.withLock { $0.lists[key] ?? [] } }
    public func sortedSet(_ key: String, maxScore: Double?) throws -> [ScoredMember] {
        state.withLock { $0.sortedSets[key] ?? [:] }.filter { $0.value <= (maxScore ?? .infinity) }
            .map { ScoredMember(member: $0.key, score: $0.value) }.sorted { ($0.score, $0.member) < ($1.score, $1.member) }
    }
    public func sortedSetMembers(_ key: String, after: String?, count: Int) throws -> [String] {
        // Byte order, as Redis compares members.
        let members = state.withLock { Array(($0.sortedSets[key] ?? [:]).keys) }.sorted { Array($0.utf8).lexicographicallyPrecedes($1.utf8) }
        let start = after.map { a in members.firstIndex { !Array($0.utf8).lexicographicallyPrecedes(Array(a.utf8)) && $0 != a } ?? members.endIndex } ?? 0
        return Array(members[start...].prefix(count))
    }
    public func sortedSetCount(_ key: String) throws -> Int { state.withLock { $0.sortedSets[key]?.count ?? 0 } }
    public func ping() throws {}

    public func streamRange(_ key: String, start: String, end: String, count: Int, reverse: Bool) throws -> [StreamEntry] {
        let (low, lowOpen) = StreamID.bound(start, upper: false), (high, highOpen) = StreamID.bound(end, upper: true)
        let entries = state.withLock { $0.streams[key] ?? [] }.filter {
            (lowOpen ? $0.id > low : $0.id >= low) && (highOpen ? $0.id < high : $0.id <= high)
        }
        return (reverse ? entries.reversed() : entries).prefix(count).map { StreamEntry(id: $0.id.text, value: $0.value) }
    }

    public func increment(_ key: String) throws -> Int {
        state.withLock { s in
            let n = (s.strings[key].flatMap { Int($0) } ?? 0) + 1
            s.strings[key] = String(n)
            return n
        }
    }

    public func setIfAbsent(_ key: String, _ value: String) throws {
        state.withLock { s in if !s.exists(key) { s.strings[key] = value } }
    }

    public func scan(_ pattern: String) throws -> [String] {
        state.withLock { $0.allKeys }.filter { Self.matches($0, pattern) }.sorted()
    }

    public func commit(_ t: Transaction) throws -> Bool {
        state.withLock { s in
            guard t.guards.allSatisfy(s.holds) else { return false }
            for w in t.allWrites { s.apply(w) }
            return true
        }
    }

    /// Router leases as `RouteContract.liveRoutersScript` reads them, on this process' clock.
    public func liveRouters(acksKey: String) throws -> [LiveRouter] {
        let now = Date().timeIntervalSince1970 * 1000
        return state.withLock { s in
            var out: [LiveRouter] = []
            for (id, value) in s.hashes[RouteContract.routers] ?? [:] {
                let parts = value.split(separator: " ", maxSplits: 1).map(String.init)
                if (Double(parts.first ?? "") ?? 0) <= now {
                    s.hashes[RouteContract.routers]?[id] = nil
                } else {
                    out.append(LiveRouter(id: id, interval: parts.count > 1 ? parts[1] : "5", acknowledgement: s.hashes[acksKey]?[id]))
                }
            }
            if s.hashes[RouteContract.routers]?.isEmpty == true { s.hashes[RouteContract.routers] = nil }
            return out.sorted { $0.id < $1.id }
        }
    }

    // MARK: for tests

    /// Applies writes as a router or another writer would (no guards).
    public func write(_ writes: [RedisWrite]) { _ = try? commit(Transaction(writes: writes)) }

    /// Every key that exists, sorted.
    public var keys: [String] { state.withLock { $0.allKeys }.sorted() }

    /// Messages published on `channel`, in order.
    public func published(on channel: String) -> [String] { state.withLock { $0.published.filter { $0.0 == channel }.map(\.1) } }

    /// Glob match with `*` only (the patterns the engine scans with).
    static func matches(_ key: String, _ pattern: String) -> Bool {
        let parts = pattern.split(separator: "*", omittingEmptySubsequences: false).map(String.init)
        guard parts.count > 1 else { return key == pattern }
        guard key.hasPrefix(parts[0]) else { return false }
        var rest = Substring(key.dropFirst(parts[0].count))
        for (i, part) in parts.dropFirst().enumerated() {
            if i == parts.count - 2 { return part.isEmpty || rest.hasSuffix(part) }
            guard let r = rest.range(of: part) else { return false }
            rest = rest[r.upperBound...]
        }
        return true
    }
}

/// A stream entry id as Redis makes them: milliseconds, then a sequence within the millisecond.
struct StreamID: Comparable, Sendable {
    var ms: Int64
    var seq: Int64
    var text: String { "\(ms)-\(seq)" }
    static func < (a: StreamID, b: StreamID) -> Bool { (a.ms, a.seq) < (b.ms, b.seq) }

    /// A range bound in XRANGE syntax, and whether it is exclusive (`(id`). A bare `ms` means its
    /// first sequence as a start, its last as an end.
    static func bound(_ text: String, upper: Bool) -> (StreamID, Bool) {
        if text == "-" { return (StreamID(ms: .min, seq: .min), false) }
        if text == "+" { return (StreamID(ms: .max, seq: .max), false) }
        let open = text.hasPrefix("(")
        let parts = (open ? String(text.dropFirst()) : text).split(separator: "-").map { Int64($0) ?? 0 }
        let ms = parts.first ?? 0
        let seq = parts.count > 1 ? parts[1] : (upper ? .max : 0)
        return (StreamID(ms: ms, seq: seq), open)
    }
}
