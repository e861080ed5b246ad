import DevDBAPIContract
import Foundation
import Hummingbird

/// Every error the API returns: `{"error": {"code", "message", "hint"}}` with its status.
/// Internal failures are logged and answered with a generic message.
public struct APIError: HTTPResponseError {
    public let status: HTTPResponse.Status
    public let code: String
    public let message: String
    public let hint: String?

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String, hint: String? = nil) {
        self.status = status; self.code = code; self.message = message; self.hint = hint
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        try jsonResponse(ErrorBody(error: .init(code: code, message: message, hint: hint)), status: status)
    }

    static let unauthorized = APIError(.unauthorized, "unauthorized", "missing or invalid API token",
                                       hint: "pass 'Authorization: Bearer <token>'; with the CLI run \"devdb login --with-token < token.txt\"")
    static let forbidden = APIError(.forbidden, "forbidden", "this needs an admin token", hint: "ask a DevDB admin")
    static func notFound(_ what: String, hint: String? = nil) -> APIError { APIError(.notFound, "not_found", "\(what) does not exist", hint: hint) }
    static func badRequest(_ message: String, hint: String? = nil) -> APIError { APIError(.badRequest, "bad_request", message, hint: hint) }
    static func conflict(_ message: String, hint: String? = nil) -> APIError { APIError(.conflict, "conflict", message, hint: hint) }
    static func unavailable(_ message: String) -> APIError {
        APIError(.serviceUnavailable, "unavailable", message, hint: "try again shortly; the operator should check Redis")
    }
}

func jsonResponse<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    let data = try APIJSON.encoder.encode(value)
    var headers = HTTPFields()
    headers[.contentType] = "application/json"
    return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: data + [0x0A])))
}
