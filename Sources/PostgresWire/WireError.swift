/// Why a packet was refused. Each case maps to one SQLSTATE and one metric label, chosen where
/// the router turns it into an `ErrorResponse`.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The packet is not what the protocol allows at this point; the text says what was wrong.
    case malformed(String)
    /// A length field claims more than the router accepts.
    case oversized(length: Int, limit: Int)
    /// A StartupMessage for a protocol version this router cannot forward.
    case unsupportedProtocol(major: UInt16, minor: UInt16)

    public var description: String {
        switch self {
        case .malformed(let why): return "malformed packet: \(why)"
        case .oversized(let length, let limit): return "packet of \(length) bytes exceeds the limit of \(limit) bytes"
        case .unsupportedProtocol(let major, let minor): return "unsupported frontend protocol \(major).\(minor)"
        }
    }
}

/// Result of feeding a parser a prefix of a stream.
public enum ParseResult<Value: Sendable>: Sendable {
    /// More bytes are needed; nothing was consumed.
    case needMore
    /// A complete value that used the first `consumed` bytes.
    case complete(Value, consumed: Int)
}

extension ParseResult: Equatable where Value: Equatable {}
