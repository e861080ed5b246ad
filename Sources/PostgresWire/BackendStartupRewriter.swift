/// A backend's cancel key as sent in BackendKeyData ('K').
public struct BackendKey: Equatable, Hashable, Sendable {
    public var processID: UInt32
    public var secretKey: [UInt8]
    public init(processID: UInt32, secretKey: [UInt8]) {
        self.processID = processID
        self.secretKey = secretKey
    }

    public func encodeMessage() -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "K"), 0, 0, 0, 0]
        out.appendU32(processID)
        out.append(contentsOf: secretKey)
        out.setU32(UInt32(out.count - 1), at: 1)
        return out
    }
}

/// Watches the backend's side of connection start (authentication up to the first
/// ReadyForQuery) and swaps the backend's BackendKeyData for the router's own key, so cancel
/// requests come to the router. After ReadyForQuery everything passes through untouched.
/// No I/O: bytes in, bytes and events out.
public struct BackendStartupRewriter: Sendable {
    public enum Event: Equatable, Sendable {
        /// The backend sent its key; the client was given `routerKey` instead.
        case backendKey(backend: BackendKey, routerKey: BackendKey)
        /// ReadyForQuery: the session is established.
        case ready
        /// The backend refused the connection (ErrorResponse during startup).
        case backendError(ErrorResponse)
    }

    public private(set) var isFinished = false
    private var pending: [UInt8] = []
    /// Startup messages from a backend are small; a larger one is a protocol error.
    public static let maxMessageLength = 1 << 20
    public init() {}

    /// Feeds bytes from the backend. Returns the bytes to send to the client and the events seen.
    /// `makeRouterKey` chooses the key the client gets in place of the backend's.
    public mutating func feed(_ bytes: some Collection<UInt8>, makeRouterKey: (BackendKey) -> BackendKey) throws(WireError) -> (output: [UInt8], events: [Event]) {
        if isFinished { return (Array(bytes), []) }
        pending.append(contentsOf: bytes)
        var output: [UInt8] = []
        var events: [Event] = []
        var start = 0
        while !isFinished, pending.count - start >= 5 {
            let type = pending[start]
            let length = Int(readU32(pending, at: start + 1))
            guard length >= 4 else { throw .malformed("backend message '\(Character(UnicodeScalar(type)))' has length \(length)") }
            guard length <= Self.maxMessageLength else { throw .oversized(length: length, limit: Self.maxMessageLength) }
            guard pending.count - start >= 1 + length else { break }
            let end = start + 1 + length
            switch type {
            case UInt8(ascii: "K"):
                guard length >= 12, length - 8 <= CancelRequest.maxSecretLength else {
                    throw .malformed("BackendKeyData has length \(length)")
                }
                let key = BackendKey(processID: readU32(pending, at: start + 5), secretKey: Array(pending[(start + 9)..<end]))
                let routerKey = makeRouterKey(key)
                output.append(contentsOf: routerKey.encodeMessage())
                events.append(.backendKey(backend: key, routerKey: routerKey))
            case UInt8(ascii: "Z"):
                output.append(contentsOf: pending[start..<end])
                events.append(.ready)
                isFinished = true
            case UInt8(ascii: "E"):
                let message = Array(pending[start..<end])
                output.append(contentsOf: message)
                events.append(.backendError((try? ErrorResponse.decode(message)) ?? ErrorResponse(sqlState: "XX000", message: "backend error")))
            default:
                output.append(contentsOf: pending[start..<end])
            }
            start = end
        }
        if isFinished {
            // Whatever follows ReadyForQuery belongs to the session.
            output.append(contentsOf: pending[start...])
            pending = []
        } else {
            pending.removeFirst(start)
        }
        return (output, events)
    }
}
