/// ErrorResponse ('E'): what a client shows when the router refuses a connection.
/// psql prints the message and, on its own line, the hint.
public struct ErrorResponse: Equatable, Sendable {
    public var severity: String
    public var sqlState: String
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(severity: String = "FATAL", sqlState: String, message: String, detail: String? = nil, hint: String? = nil) {
        self.severity = severity
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    public func encode() -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "E"), 0, 0, 0, 0]
        func field(_ code: Character, _ value: String) {
            out.append(code.asciiValue!)
            out.appendCString(value.replacingNULs())
        }
        field("S", severity)
        field("V", severity)
        field("C", sqlState)
        field("M", message)
        if let detail { field("D", detail) }
        if let hint { field("H", hint) }
        out.append(0)
        out.setU32(UInt32(out.count - 1), at: 1)
        return out
    }

    /// Decodes the body of an 'E' or 'N' message (used by tests and the bench harness).
    public static func decode(_ message: [UInt8]) throws(WireError) -> ErrorResponse {
        guard message.count >= 5, message[0] == UInt8(ascii: "E") || message[0] == UInt8(ascii: "N") else {
            throw .malformed("not an ErrorResponse")
        }
        var reader = ByteReader(message, from: 5)
        var fields: [UInt8: String] = [:]
        while let code = reader.u8(), code != 0 {
            guard let value = reader.cString() else { throw .malformed("ErrorResponse field is not NUL-terminated") }
            fields[code] = value
        }
        return ErrorResponse(severity: fields[UInt8(ascii: "S")] ?? "", sqlState: fields[UInt8(ascii: "C")] ?? "",
                             message: fields[UInt8(ascii: "M")] ?? "", detail: fields[UInt8(ascii: "D")],
                             hint: fields[UInt8(ascii: "H")])
    }
}

extension String {
    fileprivate func replacingNULs() -> String {
        contains("\0") ? String(unicodeScalars.map { $0 == "\0" ? " " : Character($0) }) : self
    }
}

/// SQLSTATE codes the router uses, named as in PostgreSQL's errcodes.txt.
public enum SQLState {
    public static let protocolViolation = "08P01"
    public static let connectionFailure = "08006"
    public static let connectionRejected = "08004"
    public static let invalidCatalogName = "3D000"
    public static let cannotConnectNow = "57P03"
    public static let tooManyConnections = "53300"
    public static let invalidAuthorization = "28000"
    public static let programLimitExceeded = "54000"
    public static let featureNotSupported = "0A000"
    public static let adminShutdown = "57P01"
}
