import DevDBAPIContract
import DevDBProvisioning
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

/// What to do next, in the CLI's words: the hints API errors carry, worded here rather than in
/// the catalog or the provisioners.
enum Hints {
    static let listProjects = "run \"devdb project list\""
    static func listSnapshots(of database: String) -> String { "run \"devdb db snapshots \(database)\"" }
    /// A create refused by the catalog: the name is taken, or the project is being deleted.
    static func createConflict(nameTaken: Bool) -> String {
        nameTaken ? "choose another name; names are unique in the installation" : "wait until it is gone, then create it again"
    }
    /// For a dump URL refused when a project is made.
    static func dump(_ error: DumpError) -> String? {
        switch error {
        case .privateHost: return "dump URLs must name a public host; an operator can allow private hosts with devdb-api --allow-private-dump-hosts"
        case .unresolvable: return "check the host name in the URL"
        case .unsupportedURL: return "e.g. s3://bucket/shop.dump, https://host/shop.dump or file:///path/shop.dump"
        default: return nil
        }
    }
}

extension DumpError {
    /// What to do, for API error hints (`Hints.dump`).
    var hint: String? { Hints.dump(self) }
}
