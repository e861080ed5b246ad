/// The first packet a client sends: a length-prefixed packet with no type byte.
/// https://www.postgresql.org/docs/current/protocol-message-formats.html
public enum StartupPacket: Equatable, Sendable {
    case sslRequest
    case gssEncRequest
    case cancel(CancelRequest)
    case startup(StartupMessage)

    public static let sslRequestCode: UInt32 = 80_877_103
    public static let gssEncRequestCode: UInt32 = 80_877_104
    public static let cancelRequestCode: UInt32 = 80_877_102
    /// The largest startup packet the router reads (PostgreSQL itself allows 10,000 bytes).
    public static let defaultMaxLength = 10_000

    /// Parses one startup packet from the front of `bytes`. Bytes after the packet are left
    /// for the caller (they belong to the next protocol phase).
    public static func parse(_ bytes: [UInt8], maxLength: Int = defaultMaxLength) throws(WireError) -> ParseResult<StartupPacket> {
        guard bytes.count >= 4 else { return .needMore }
        let length = Int(readU32(bytes, at: 0))
        // The code is checked before the length so that garbage (an HTTP request, say) is
        // reported as garbage rather than as an oversized packet.
        if bytes.count >= 8 {
            let code = readU32(bytes, at: 4)
            let known = code == sslRequestCode || code == gssEncRequestCode || code == cancelRequestCode || code >> 16 == 3
            if !known {
                if code >> 16 < 10 {
                    throw .unsupportedProtocol(major: UInt16(code >> 16), minor: UInt16(code & 0xFFFF))
                }
                throw .malformed("unknown startup packet code \(code)")
            }
        }
        guard length >= 8 else { throw .malformed("startup packet length \(length) is shorter than 8 bytes") }
        guard length <= maxLength else { throw .oversized(length: length, limit: maxLength) }
        guard bytes.count >= length else { return .needMore }
        let code = readU32(bytes, at: 4)
        switch code {
        case sslRequestCode, gssEncRequestCode:
            guard length == 8 else { throw .malformed("\(code == sslRequestCode ? "SSLRequest" : "GSSENCRequest") must be 8 bytes, not \(length)") }
            return .complete(code == sslRequestCode ? .sslRequest : .gssEncRequest, consumed: 8)
        case cancelRequestCode:
            return .complete(.cancel(try CancelRequest(packet: bytes, length: length)), consumed: length)
        default:
            return .complete(.startup(try StartupMessage(packet: bytes, length: length)), consumed: length)
        }
    }
}

/// CancelRequest: the backend process id and the secret key from BackendKeyData.
/// Protocol 3.0 uses a 4-byte key; 3.2 allows up to 256 bytes.
public struct CancelRequest: Equatable, Sendable {
    public var processID: UInt32
    public var secretKey: [UInt8]

    public static let maxSecretLength = 256

    public init(processID: UInt32, secretKey: [UInt8]) {
        self.processID = processID
        self.secretKey = secretKey
    }

    init(packet: [UInt8], length: Int) throws(WireError) {
        let secretLength = length - 12
        guard secretLength >= 4, secretLength <= Self.maxSecretLength else {
            throw .malformed("CancelRequest must carry a 4 to 256 byte secret key, not \(max(secretLength, 0))")
        }
        processID = readU32(packet, at: 8)
        secretKey = Array(packet[12..<length])
    }

    public func encode() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(12 + secretKey.count)
        out.appendU32(UInt32(12 + secretKey.count))
        out.appendU32(StartupPacket.cancelRequestCode)
        out.appendU32(processID)
        out.append(contentsOf: secretKey)
        return out
    }
}

/// StartupMessage: protocol version and parameters, kept in the client's order.
public struct StartupMessage: Equatable, Sendable {
    public var majorVersion: UInt16
    public var minorVersion: UInt16
    public var parameters: [(name: String, value: String)]

    public init(majorVersion: UInt16 = 3, minorVersion: UInt16 = 0, parameters: [(name: String, value: String)]) {
        self.majorVersion = majorVersion
        self.minorVersion = minorVersion
        self.parameters = parameters
    }

    public static func == (a: StartupMessage, b: StartupMessage) -> Bool {
        a.majorVersion == b.majorVersion && a.minorVersion == b.minorVersion
            && a.parameters.elementsEqual(b.parameters, by: { $0.name == $1.name && $0.value == $1.value })
    }

    public subscript(name: String) -> String? {
        parameters.first(where: { $0.name == name })?.value
    }

    init(packet: [UInt8], length: Int) throws(WireError) {
        let version = readU32(packet, at: 4)
        majorVersion = UInt16(version >> 16)
        minorVersion = UInt16(version & 0xFFFF)
        guard majorVersion == 3 else { throw .unsupportedProtocol(major: majorVersion, minor: minorVersion) }
        var reader = ByteReader(packet, from: 8, to: length)
        var params: [(name: String, value: String)] = []
        while true {
            // Parameters are forwarded re-encoded, so they must decode without loss.
            let name: String
            switch reader.strictCString() {
            case .ok(let s): name = s
            case .unterminated: throw .malformed("StartupMessage parameters are not NUL-terminated")
            case .invalidUTF8: throw .malformed("a StartupMessage parameter name is not valid UTF-8")
            }
            if name.isEmpty { break }
            let value: String
            switch reader.strictCString() {
            case .ok(let s): value = s
            case .unterminated: throw .malformed("StartupMessage parameter \"\(name)\" has no value")
            case .invalidUTF8: throw .malformed("StartupMessage parameter \"\(name)\" is not valid UTF-8")
            }
            if params.contains(where: { $0.name == name }) {
                throw .malformed("StartupMessage repeats parameter \"\(name)\"")
            }
            params.append((name, value))
        }
        guard reader.remaining == 0 else { throw .malformed("StartupMessage has \(reader.remaining) bytes after its terminator") }
        guard params.contains(where: { $0.name == "user" }) else {
            throw .malformed("StartupMessage has no \"user\" parameter")
        }
        parameters = params
    }

    public func encode() -> [UInt8] {
        var out: [UInt8] = [0, 0, 0, 0]
        out.appendU32(UInt32(majorVersion) << 16 | UInt32(minorVersion))
        for p in parameters {
            out.appendCString(p.name)
            out.appendCString(p.value)
        }
        out.append(0)
        out.setU32(UInt32(out.count), at: 0)
        return out
    }
}
