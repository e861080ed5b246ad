import CHiredis
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where Redis is: `redis://[[user]:password@]host[:port][/db]`.
public struct RedisURL: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String?
    public var password: String?
    public var database: Int

    public struct ParseError: Error, CustomStringConvertible { public let description: String }

    public init(host: String = "127.0.0.1", port: Int = 6379, user: String? = nil, password: String? = nil, database: Int = 0) {
        self.host = host; self.port = port; self.user = user; self.password = password; self.database = database
    }

    public init(parsing text: String) throws(ParseError) {
        guard text.hasPrefix("redis://") else {
            throw ParseError(description: "Redis URL \"\(text)\" must start with redis:// (rediss:// is not supported)")
        }
        var rest = Substring(text.dropFirst("redis://".count))
        var user: String?, password: String?
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                let u = credentials[..<colon]
                user = u.isEmpty ? nil : String(u)
                password = String(credentials[credentials.index(after: colon)...])
            } else {
                password = String(credentials)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty {
                guard let d = Int(db), d >= 0 else { throw ParseError(description: "Redis database \"\(db)\" is not a number") }
                database = d
            }
            rest = rest[..<slash]
        }
        var host = String(rest), port = 6379
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let p = Int(rest[rest.index(after: colon)...]), (1...65535).contains(p) else {
                throw ParseError(description: "Redis port in \"\(text)\" is not a number")
            }
            port = p
            host = String(rest[..<colon])
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "127.0.0.1" }
        self.init(host: host, port: port, user: user, password: password, database: database)
    }

    /// Takes the password from a file, such as a mounted Secret (surrounding whitespace dropped).
    public mutating func readPassword(fromFile path: String) throws(ParseError) {
        guard let f = fopen(path, "r") else { throw ParseError(description: "cannot read the Redis password from \(path)") }
        defer { fclose(f) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while case let n = fread(&chunk, 1, chunk.count, f), n > 0 { bytes += chunk[0..<n] }
        let text = String(decoding: bytes, as: UTF8.self)
        let trimmed = String(text.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
        guard !trimmed.isEmpty else { throw ParseError(description: "the Redis password file \(path) is empty") }
        password = trimmed
    }

    /// Never prints the password.
    public var description: String {
        let auth = password == nil ? "" : "\(user ?? ""):***@"
        return "redis://\(auth)\(host):\(port)/\(database)"
    }
}

public enum RedisValue: Equatable, Sendable {
    case string(String)
    case integer(Int)
    case array([RedisValue])
    case status(String)
    case null

    public var string: String? {
        switch self {
        case .string(let s), .status(let s): return s
        case .integer(let i): return String(i)
        default: return nil
        }
    }

    public var integer: Int? {
        switch self {
        case .integer(let i): return i
        case .string(let s): return Int(s)
        default: return nil
        }
    }

    /// A flat `[field, value, ...]` array (HGETALL) as a dictionary.
    public var fieldMap: [String: String] {
        guard case .array(let items) = self else { return [:] }
        var out: [String: String] = [:]
        var i = 0
        while i + 1 < items.count {
            if let k = items[i].string, let v = items[i + 1].string { out[k] = v }
            i += 2
        }
        return out
    }
}

public enum RedisError: Error, Equatable, CustomStringConvertible {
    /// Redis could not be reached or the connection broke.
    case unavailable(String)
    /// Redis answered with an error reply.
    case reply(String)

    public var description: String {
        switch self {
        case .unavailable(let why): return "Redis is unavailable: \(why)"
        case .reply(let text): return "Redis error: \(text)"
        }
    }
}

/// A few blocking connections used in turn, so concurrent callers do not queue behind one
/// socket (a burst of API requests, a worker writing while a reconcile reads).
public final class RedisPool: Sendable {
    public let url: RedisURL
    private let clients: [RedisClient]
    private let next = Atomic<Int>(0)

    public init(url: RedisURL, size: Int = 8, timeoutSeconds: Double = 5) {
        self.url = url
        clients = (0..<max(1, size)).map { _ in RedisClient(url: url, timeoutSeconds: timeoutSeconds) }
    }

    /// The next connection in turn.
    public var client: RedisClient {
        clients[Int(UInt(bitPattern: next.add(1, ordering: .relaxed).oldValue) % UInt(clients.count))]
    }
}

/// A blocking hiredis connection. Commands are serialized by a mutex, so one client may be
/// shared; callers keep it off latency-sensitive queues. A broken connection is dropped and
/// made again on the next command.
public final class RedisClient: Sendable {
    public let url: RedisURL
    public let timeoutSeconds: Double
    // Protects the hiredis context, which is not thread-safe.
    private let context = Mutex<RedisContextBox>(RedisContextBox())

    public init(url: RedisURL, timeoutSeconds: Double = 2) {
        self.url = url
        self.timeoutSeconds = timeoutSeconds
    }

    /// Round trips to Redis by every client of this process (commands and pipelines): the scale
    /// bench reads it per reconcile and reaper pass (the API's /metrics).
    public static let roundTrips = Atomic<Int>(0)

    public func command(_ args: [String]) throws(RedisError) -> RedisValue {
        Self.roundTrips.add(1, ordering: .relaxed)
        return try context.withLock { (box: inout RedisContextBox) throws(RedisError) -> RedisValue in
            if box.pointer == nil { box.pointer = try Self.connect(url, timeout: timeoutSeconds) }
            do throws(RedisError) {
                return try Self.send(box.pointer!, args)
            } catch {
                if case .unavailable = error { redisFree(box.pointer); box.pointer = nil }
                throw error
            }
        }
    }

    /// Sends several commands in one round trip and returns their replies in order.
    public func pipeline(_ commands: [[String]]) throws(RedisError) -> [Result<RedisValue, RedisError>] {
        Self.roundTrips.add(1, ordering: .relaxed)
        return try context.withLock { (box: inout RedisContextBox) throws(RedisError) -> [Result<RedisValue, RedisError>] in
            if box.pointer == nil { box.pointer = try Self.connect(url, timeout: timeoutSeconds) }
            let c = box.pointer!
            for args in commands { Self.append(c, args) }
            var results: [Result<RedisValue, RedisError>] = []
            for _ in commands {
                do throws(RedisError) {
                    results.append(.success(try Self.readReply(c)))
                } catch {
                    guard case .reply = error else {
                        redisFree(box.pointer); box.pointer = nil
                        throw error
                    }
                    results.append(.failure(error))
                }
            }
            return results
        }
    }

    /// Runs a Lua script (`EVAL script numkeys keys... args...`).
    public func eval(_ script: String, keys: [String], args: [String]) throws(RedisError) -> RedisValue {
        try command(["EVAL", script, String(keys.count)] + keys + args)
    }

    public func close() {
        context.withLock { box in
            if let p = box.pointer { redisFree(p) }
            box.pointer = nil
        }
    }

    deinit { close() }

    // MARK: hiredis calls

    static func connect(_ url: RedisURL, timeout: Double) throws(RedisError) -> UnsafeMutablePointer<redisContext> {
        let tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - Double(Int(timeout))) * 1_000_000))
        guard let c = redisConnectWithTimeout(url.host, Int32(url.port), tv) else {
            throw .unavailable("cannot allocate a connection")
        }
        if c.pointee.err != 0 {
            let why = errorText(c)
            redisFree(c)
            throw .unavailable("cannot connect to \(url.host):\(url.port): \(why)")
        }
        _ = redisSetTimeout(c, tv)
        do {
            if let password = url.password {
                _ = try send(c, url.user.map { ["AUTH", $0, password] } ?? ["AUTH", password])
            }
            if url.database != 0 { _ = try send(c, ["SELECT", String(url.database)]) }
        } catch {
            redisFree(c)
            throw error
        }
        return c
    }

    static func errorText(_ c: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: c.pointee.errstr) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
    }

    static func withArgv<R>(_ args: [String], _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R) -> R {
        let cStrings = args.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var argv: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
        let lengths = args.map { $0.utf8.count }
        return argv.withUnsafeMutableBufferPointer { a in
            lengths.withUnsafeBufferPointer { l in body(Int32(args.count), a.baseAddress!, l.baseAddress!) }
        }
    }

    static func send(_ c: UnsafeMutablePointer<redisContext>, _ args: [String]) throws(RedisError) -> RedisValue {
        let raw = withArgv(args) { redisCommandArgv(c, $0, $1, $2) }
        guard let raw else { throw .unavailable(errorText(c)) }
        let reply = raw.assumingMemoryBound(to: redisReply.self)
        defer { freeReplyObject(raw) }
        return try convert(reply)
    }

    static func append(_ c: UnsafeMutablePointer<redisContext>, _ args: [String]) {
        _ = withArgv(args) { redisAppendCommandArgv(c, $0, $1, $2) }
    }

    /// Reads one reply (blocking up to the timeout).
    static func readReply(_ c: UnsafeMutablePointer<redisContext>) throws(RedisError) -> RedisValue {
        var raw: UnsafeMutableRawPointer?
        guard redisGetReply(c, &raw) == REDIS_OK, let raw else { throw .unavailable(errorText(c)) }
        defer { freeReplyObject(raw) }
        return try convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    static func convert(_ r: UnsafeMutablePointer<redisReply>) throws(RedisError) -> RedisValue {
        let reply = r.pointee
        func text() -> String {
            guard let s = reply.str else { return "" }
            return String(decoding: UnsafeRawBufferPointer(start: s, count: Int(reply.len)), as: UTF8.self)
        }
        switch reply.type {
        case REDIS_REPLY_STRING: return .string(text())
        case REDIS_REPLY_STATUS: return .status(text())
        case REDIS_REPLY_INTEGER: return .integer(Int(reply.integer))
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ERROR: throw .reply(text())
        case REDIS_REPLY_ARRAY:
            var items: [RedisValue] = []
            for i in 0..<Int(reply.elements) {
                guard let e = reply.element[i] else { items.append(.null); continue }
                items.append((try? convert(e)) ?? .null)
            }
            return .array(items)
        default: return .null
        }
    }
}

/// Owns a hiredis context; only touched under `RedisClient.context`'s lock.
struct RedisContextBox: ~Copyable, @unchecked Sendable {
    var pointer: UnsafeMutablePointer<redisContext>? = nil
}

/// A blocking SUBSCRIBE loop on its own thread: calls `onMessage` for each message on the
/// channel, `onConnected` after every (re)subscribe, `onDisconnected` when the link breaks, and
/// reconnects with capped exponential backoff until `stop()`.
public final class RedisSubscriber: Sendable {
    private let url: RedisURL
    private let channel: String
    private let stopped = Atomic<Bool>(false)

    public init(url: RedisURL, channel: String) {
        self.url = url
        self.channel = channel
    }

    public func stop() { stopped.store(true, ordering: .relaxed) }

    public func start(onConnected: @escaping @Sendable () -> Void,
                      onDisconnected: @escaping @Sendable (String) -> Void,
                      onMessage: @escaping @Sendable (String) -> Void) {
        let thread = SubscriberThread { [self] in
            var backoff = 0.1
            while !stopped.load(ordering: .relaxed) {
                do {
                    let c = try RedisClient.connect(url, timeout: 2)
                    defer { redisFree(c) }
                    _ = try RedisClient.send(c, ["SUBSCRIBE", channel])
                    // Wake up once a second to notice stop(); a timeout is not an error here.
                    let tv = timeval(tv_sec: 1, tv_usec: 0)
                    _ = redisSetTimeout(c, tv)
                    backoff = 0.1
                    onConnected()
                    while !stopped.load(ordering: .relaxed) {
                        var raw: UnsafeMutableRawPointer?
                        if redisGetReply(c, &raw) != REDIS_OK {
                            if c.pointee.err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK) {
                                c.pointee.err = 0
                                continue
                            }
                            throw RedisError.unavailable(RedisClient.errorText(c))
                        }
                        guard let raw else { continue }
                        let value = try? RedisClient.convert(raw.assumingMemoryBound(to: redisReply.self))
                        freeReplyObject(raw)
                        if case .array(let parts) = value, parts.count == 3, parts[0].string == "message", let payload = parts[2].string {
                            onMessage(payload)
                        }
                    }
                } catch {
                    if stopped.load(ordering: .relaxed) { break }
                    onDisconnected(String(describing: error))
                    usleep(UInt32(backoff * 1_000_000))
                    backoff = min(backoff * 2, 5)
                }
            }
        }
        thread.start()
    }
}

/// A detached POSIX thread for blocking loops (keeps them off Dispatch's pool).
final class SubscriberThread: @unchecked Sendable {  // body is only run once, on the new thread
    private let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }

    func start() {
        let box = Unmanaged.passRetained(self).toOpaque()
        var tid = pthread_t()
        pthread_create(&tid, nil, { arg in
            let me = Unmanaged<SubscriberThread>.fromOpaque(arg!).takeRetainedValue()
            me.body()
            return nil
        }, box)
        pthread_detach(tid)
    }
}
