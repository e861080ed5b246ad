import CCurl
import CCurlShims
import DevDBCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public enum KubeError: Error, CustomStringConvertible, Equatable {
    /// The API server answered with an error status (a `Status` object's reason and message).
    case status(code: Int, reason: String, message: String, request: String)
    /// The request did not get an answer: connection, TLS verification, timeout. `transient`:
    /// worth trying again (refused, reset, timed out), unlike a TLS verification failure.
    case transport(String, transient: Bool = false)

    public var description: String {
        switch self {
        case .status(let code, let reason, let message, let request):
            if code == 403 {
                return "the Kubernetes API refused \(request) (403 Forbidden): \(message). The API's service account needs the Role in charts/devdb/templates/rbac.yaml"
            }
            if code == 401 {
                return "the Kubernetes API did not accept DevDB's credentials (401) for \(request): check the service-account token or kubeconfig user"
            }
            return "Kubernetes API \(request): \(code) \(reason): \(message)"
        case .transport(let why, _): return why
        }
    }

    public var code: Int? { if case .status(let c, _, _, _) = self { return c }; return nil }

    /// Worth trying again later: throttling, server errors, an unreachable server. What remains
    /// after the client's own retry budget: long waits keep polling through it until their deadline.
    public var isTransient: Bool {
        switch self {
        case .status(let c, _, _, _): return KubeClient.retriedStatuses.contains(c)
        case .transport(_, let transient): return transient
        }
    }
}

/// A small Kubernetes REST client over libcurl: JSON in, JSON out, TLS always verified.
public struct KubeClient: Sendable {
    public let connection: KubeConnection
    /// Seconds for one request.
    public var timeout: Int = 30
    /// Seconds a request is retried through throttling (429), server errors (500, 502, 503, 504)
    /// and transient transport errors, with backoff (0.2 s doubling to 5 s) or the server's
    /// Retry-After. A one-hour seed outlives a blip of the API server.
    public var retryBudget: Double = 60

    /// libcurl handles kept between requests: each keeps its connection (and TLS session) to the
    /// API server open, so polls do not pay a handshake each.
    let handles = HandlePool()

    public init(connection: KubeConnection) {
        self.connection = connection
        _ = devdb_curl_global_init()
    }

    public var namespace: String { connection.namespace }

    public func get(_ path: String) async throws -> JSONValue { try await request("GET", path) }
    /// GET that answers nil for 404.
    public func getIfPresent(_ path: String) async throws -> JSONValue? {
        do { return try await request("GET", path) } catch let e as KubeError where e.code == 404 { return nil }
    }
    /// `fieldSelector` narrows on the server (events of one object), e.g. `involvedObject.name=x`.
    public func list(_ path: String, labelSelector: String, fieldSelector: String? = nil) async throws -> [JSONValue] {
        func encoded(_ s: String) -> String {
            s.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+,"))) ?? s
        }
        let fields = fieldSelector.map { "&fieldSelector=\(encoded($0))" } ?? ""
        return try await request("GET", "\(path)?labelSelector=\(encoded(labelSelector))\(fields)")["items"].array
    }
    /// POST with `fieldValidation=Strict`: a field the server does not know is an error (422), as
    /// the tests' API server double makes it, instead of being dropped with only a warning (the
    /// server's default).
    @discardableResult
    public func create(_ path: String, _ body: JSONValue) async throws -> JSONValue {
        try await request("POST", path + "?fieldValidation=Strict", body: body)
    }
    /// DELETE with background propagation (owned objects go too); nil when already gone.
    @discardableResult
    public func delete(_ path: String) async throws -> JSONValue? {
        let options: JSONValue = ["apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"]
        do { return try await request("DELETE", path, body: options) } catch let e as KubeError where e.code == 404 { return nil }
    }

    static let retriedStatuses: Set<Int> = [429, 500, 502, 503, 504]

    public func request(_ method: String, _ path: String, body: JSONValue? = nil) async throws -> JSONValue {
        let connection = self.connection, timeout = self.timeout
        let handles = self.handles
        let deadline = Date().addingTimeInterval(retryBudget)
        var attempt = 0
        // Jittered ±20% so many waiting requests do not come back at once.
        var backoff = Backoff(initial: 0.2, cap: 5)
        var code = 0, data = Data()
        while true {
            var wait: Double?
            do {
                let answer = try await BlockingExecutor.io.run { () throws -> (Int, Data, Double?) in
                    try Self.perform(method, connection.server + path, body: body?.encoded(), connection: connection, timeout: timeout, handles: handles)
                }
                (code, data) = (answer.0, answer.1)
                if Self.retriedStatuses.contains(code) { wait = answer.2 ?? backoff.next() * Double.random(in: 0.8...1.2) }
            } catch let e as KubeError {
                guard case .transport(_, true) = e, Date() < deadline else { throw e }
                wait = backoff.next() * Double.random(in: 0.8...1.2)
            }
            guard let pause = wait, Date().addingTimeInterval(pause) < deadline else { break }
            attempt += 1
            try await Task.sleep(for: .seconds(pause))
        }
        // A create retried after an answer that never arrived may have happened: it is there now.
        if code == 409, method == "POST", attempt > 0, let name = body?["metadata"]["name"].string {
            return try await request("GET", "\(path.split(separator: "?").first.map(String.init) ?? path)/\(name)")
        }
        let json = (try? JSONValue.decode(data)) ?? .null
        guard (200..<300).contains(code) else {
            let plainPath = path.split(separator: "?").first.map(String.init) ?? path
            throw KubeError.status(code: code, reason: json["reason"].string ?? "HTTP \(code)",
                                   message: json["message"].string ?? String(decoding: data.prefix(300), as: UTF8.self),
                                   request: "\(method) \(plainPath)")
        }
        return json
    }


    /// 0.2 s doubling to 5 s, with jitter.
    /// One request: status, body and the Retry-After header in seconds (when it has one).
    static func perform(_ method: String, _ url: String, body: Data?, connection: KubeConnection, timeout: Int, handles: HandlePool) throws -> (Int, Data, Double?) {
        guard let curl = handles.take() else { throw KubeError.transport("cannot initialise libcurl") }
        defer { handles.give(curl) }
        var headers: UnsafeMutablePointer<curl_slist>?
        defer { if let headers { curl_slist_free_all(headers) } }
        _ = devdb_curl_set_string(curl, CURLOPT_URL, url)
        _ = devdb_curl_set_string(curl, CURLOPT_CUSTOMREQUEST, method)
        _ = devdb_curl_set_string(curl, CURLOPT_PROTOCOLS_STR, "https")
        _ = devdb_curl_set_long(curl, CURLOPT_SSL_VERIFYPEER, 1)
        _ = devdb_curl_set_long(curl, CURLOPT_SSL_VERIFYHOST, 2)
        _ = devdb_curl_set_long(curl, CURLOPT_CONNECTTIMEOUT, 10)
        _ = devdb_curl_set_long(curl, CURLOPT_TIMEOUT, timeout)
        _ = devdb_curl_set_long(curl, CURLOPT_NOSIGNAL, 1)
        headers = curl_slist_append(headers, "Accept: application/json")
        var blobs: [Data] = []  // kept alive until the transfer is done
        defer { _ = blobs }
        func setBlob(_ option: CURLoption, _ data: Data) {
            blobs.append(data)
            data.withUnsafeBytes { raw in
                var blob = curl_blob(data: UnsafeMutableRawPointer(mutating: raw.baseAddress), len: raw.count, flags: 1 /* CURL_BLOB_COPY */)
                _ = devdb_curl_set_pointer(curl, option, &blob)
            }
        }
        if let ca = connection.caPEM { setBlob(CURLOPT_CAINFO_BLOB, ca) }
        switch connection.credential {
        case .token(let t):
            headers = curl_slist_append(headers, "Authorization: Bearer \(t)")
        case .tokenFile(let path):
            guard let t = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) else {
                throw KubeError.transport("cannot read the service-account token at \(path)")
            }
            headers = curl_slist_append(headers, "Authorization: Bearer \(t)")
        case .clientCertificate(let cert, let key):
            _ = devdb_curl_set_string(curl, CURLOPT_SSLCERTTYPE, "PEM")
            setBlob(CURLOPT_SSLCERT_BLOB, cert)
            _ = devdb_curl_set_string(curl, CURLOPT_SSLKEYTYPE, "PEM")
            setBlob(CURLOPT_SSLKEY_BLOB, key)
        case .none: break
        }
        if let body {
            headers = curl_slist_append(headers, "Content-Type: application/json")
            _ = devdb_curl_set_long(curl, CURLOPT_POSTFIELDSIZE, body.count)
            body.withUnsafeBytes { raw in
                _ = devdb_curl_set_pointer(curl, CURLOPT_COPYPOSTFIELDS, UnsafeMutableRawPointer(mutating: raw.baseAddress!))
            }
        }
        _ = devdb_curl_set_pointer(curl, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headers))
        let body = BodyBox.capture(curl)
        defer { body.release() }
        let headerBox = HeaderBox.capture(curl)
        defer { headerBox.release() }
        let rc = curl_easy_perform(curl)
        guard rc == CURLE_OK else {
            let why = String(cString: curl_easy_strerror(rc))
            if rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_SSL_CONNECT_ERROR {
                throw KubeError.transport("TLS to the Kubernetes API at \(connection.server) failed (\(why)); check the CA in \(connection.source)")
            }
            let transient: Set<CURLcode> = [CURLE_COULDNT_CONNECT, CURLE_OPERATION_TIMEDOUT, CURLE_RECV_ERROR, CURLE_SEND_ERROR,
                                            CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_COULDNT_RESOLVE_HOST]
            throw KubeError.transport("cannot reach the Kubernetes API at \(connection.server) (\(why)); from \(connection.source)",
                                      transient: transient.contains(rc))
        }
        var code = 0
        _ = devdb_curl_get_response_code(curl, &code)
        let retryAfter = headerBox.takeUnretainedValue().fields["retry-after"].flatMap(Double.init)
        return (code, body.takeUnretainedValue().data, retryAfter.map { min($0, 30) })
    }
}

/// A few reusable libcurl easy handles. `curl_easy_reset` clears their options but keeps their
/// open connections.
final class HandlePool: @unchecked Sendable {  // `handles` only under `lock`
    private let lock = NSLock()
    private var handles: [UnsafeMutableRawPointer] = []
    private let keep = 4

    func take() -> UnsafeMutableRawPointer? {
        lock.lock()
        let h = handles.popLast()
        lock.unlock()
        if let h {
            curl_easy_reset(h)
            return h
        }
        return curl_easy_init()
    }

    func give(_ h: UnsafeMutableRawPointer) {
        lock.lock()
        if handles.count < keep {
            handles.append(h)
            lock.unlock()
        } else {
            lock.unlock()
            curl_easy_cleanup(h)
        }
    }

    deinit { handles.forEach { curl_easy_cleanup($0) } }
}
