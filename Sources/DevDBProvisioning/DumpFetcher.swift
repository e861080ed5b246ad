// About 400 lines: one libcurl transfer type for every dump scheme (file, http(s), s3 with SigV4);
// the schemes share its handle set-up, limits and errors.
import CCurl
import CCurlShims
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where dumps live in S3-compatible storage and how to sign for them.
public struct S3Settings: Sendable {
    /// `https://s3.example.com` for S3-compatible stores (path-style URLs); nil for AWS.
    public var endpoint: String?
    public var region: String
    public var accessKeyID: String?
    public var secretAccessKey: String?
    public var sessionToken: String?
    /// Keyless credentials a platform gives a service account, used when no keys are set:
    /// IRSA (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE: STS AssumeRoleWithWebIdentity) or EKS
    /// Pod Identity (AWS_CONTAINER_CREDENTIALS_FULL_URI + AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE).
    public var roleARN: String?
    public var webIdentityTokenFile: String?
    public var stsEndpoint: String?
    public var containerCredentialsURI: String?
    public var containerAuthorizationTokenFile: String?

    public init(endpoint: String? = nil, region: String = "us-east-1", accessKeyID: String? = nil,
                secretAccessKey: String? = nil, sessionToken: String? = nil) {
        self.endpoint = endpoint; self.region = region; self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey; self.sessionToken = sessionToken
    }

    public var hasKeylessCredentials: Bool {
        (roleARN != nil && webIdentityTokenFile != nil) || containerCredentialsURI != nil
    }

    /// Temporary keys from IRSA or EKS Pod Identity (one HTTP call; they last an hour or more,
    /// longer than a fetch).
    func keylessCredentials() throws(DumpError) -> (id: String, secret: String, token: String?) {
        if let role = roleARN, let file = webIdentityTokenFile {
            guard let token = try? String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) else {
                throw .transfer("cannot read the web identity token at \(file)")
            }
            let sts = stsEndpoint ?? "https://sts.\(region).amazonaws.com"
            func q(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }
            let url = "\(sts)/?Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleSessionName=devdb-restore&RoleArn=\(q(role))&WebIdentityToken=\(q(token))"
            let (code, body) = try Self.get(url, header: nil)
            guard code == 200 else { throw .transfer("STS AssumeRoleWithWebIdentity for \(role) answered \(code): \(Self.xml("Message", body) ?? String(body.prefix(200)))") }
            guard let id = Self.xml("AccessKeyId", body), let secret = Self.xml("SecretAccessKey", body) else {
                throw .transfer("STS AssumeRoleWithWebIdentity answered without credentials")
            }
            return (id, secret, Self.xml("SessionToken", body))
        }
        if let uri = containerCredentialsURI {
            var header: String?
            if let file = containerAuthorizationTokenFile {
                guard let t = try? String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines) else {
                    throw .transfer("cannot read the container authorization token at \(file)")
                }
                header = "Authorization: \(t)"
            }
            let (code, body) = try Self.get(uri, header: header)
            struct Creds: Decodable { let AccessKeyId: String; let SecretAccessKey: String; let Token: String? }
            guard code == 200, let c = try? JSONDecoder().decode(Creds.self, from: Data(body.utf8)) else {
                throw .transfer("EKS Pod Identity credentials at \(uri) answered \(code)")
            }
            return (c.AccessKeyId, c.SecretAccessKey, c.Token)
        }
        throw .missingCredentials
    }

    static func xml(_ tag: String, _ body: String) -> String? {
        guard let open = body.range(of: "<\(tag)>"), let close = body.range(of: "</\(tag)>", range: open.upperBound..<body.endIndex) else { return nil }
        return String(body[open.upperBound..<close.lowerBound])
    }

    /// A plain GET (the credential endpoints are the platform's, so no address filtering).
    static func get(_ url: String, header: String?) throws(DumpError) -> (Int, String) {
        guard let curl = curl_easy_init() else { throw .transfer("cannot initialise libcurl") }
        defer { curl_easy_cleanup(curl) }
        var headers: UnsafeMutablePointer<curl_slist>?
        defer { if let headers { curl_slist_free_all(headers) } }
        _ = devdb_curl_set_string(curl, CURLOPT_URL, url)
        _ = devdb_curl_set_string(curl, CURLOPT_PROTOCOLS_STR, "http,https")
        _ = devdb_curl_set_long(curl, CURLOPT_TIMEOUT, 30)
        if let header {
            headers = curl_slist_append(headers, header)
            _ = devdb_curl_set_pointer(curl, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headers))
        }
        let box = BodyBox.capture(curl)
        defer { box.release() }
        let rc = curl_easy_perform(curl)
        guard rc == CURLE_OK else { throw .transfer("\(String(cString: curl_easy_strerror(rc))) (\(url.split(separator: "?").first ?? ""))") }
        var code = 0
        _ = devdb_curl_get_response_code(curl, &code)
        return (code, String(decoding: box.takeUnretainedValue().data, as: UTF8.self))
    }

    /// The standard AWS variables: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
    /// AWS_REGION / AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL.
    /// Empty values count as unset.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> S3Settings {
        let env = environment.filter { !$0.value.isEmpty }
        var s = S3Settings(endpoint: env["AWS_ENDPOINT_URL_S3"] ?? env["AWS_ENDPOINT_URL"],
                   region: env["AWS_REGION"] ?? env["AWS_DEFAULT_REGION"] ?? "us-east-1",
                   accessKeyID: env["AWS_ACCESS_KEY_ID"], secretAccessKey: env["AWS_SECRET_ACCESS_KEY"],
                   sessionToken: env["AWS_SESSION_TOKEN"])
        s.roleARN = env["AWS_ROLE_ARN"]
        s.webIdentityTokenFile = env["AWS_WEB_IDENTITY_TOKEN_FILE"]
        s.stsEndpoint = env["AWS_ENDPOINT_URL_STS"]
        s.containerCredentialsURI = env["AWS_CONTAINER_CREDENTIALS_FULL_URI"]
        s.containerAuthorizationTokenFile = env["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]
        return s
    }
}

public enum DumpError: Error, Equatable, CustomStringConvertible {
    case unsupportedURL(String)
    case notFound(String)
    case denied(String, Int)
    case transfer(String)
    /// The URL and what it holds instead (the inspector's words).
    case notADump(String, found: String)
    case missingCredentials
    /// The host resolves to a loopback, private or link-local address (or does not resolve).
    case privateHost(String, String)
    case unresolvable(String)
    case cancelled

    public var isNotADump: Bool { if case .notADump = self { return true }; return false }

    public var description: String {
        switch self {
        case .unsupportedURL(let u): return "dump URL \"\(u)\" is not supported: use file://, http://, https:// or s3://bucket/key"
        case .notFound(let u): return "dump not found at \(u) (404): check the URL or upload the dump"
        case .denied(let u, let code): return "access to the dump at \(u) was denied (\(code)): check the credentials and the bucket policy"
        case .transfer(let why): return "fetching the dump failed: \(why)"
        case .notADump(let u, let found): return "\(u): \(found)"
        case .privateHost(let host, let address): return "dump host \(host) resolves to \(address), a loopback, private or link-local address; DevDB does not fetch dumps from such addresses"
        case .unresolvable(let host): return "dump host \(host) does not resolve"
        case .cancelled: return "the fetch was cancelled"
        case .missingCredentials: return "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (on one machine for devdb-api; in a cluster in the Secret named by the chart's databases.s3.secretName), or give restore pods a keyless identity (IRSA or EKS Pod Identity: databases.restoreServiceAccount)"
        }
    }
}

/// Streams a dump to a local file with libcurl: `file://`, `http(s)://`, and `s3://bucket/key`
/// signed with SigV4 (CURLOPT_AWS_SIGV4).
///
/// Unless `allowPrivateHosts`, http(s) dumps are fetched only from public addresses: a check of
/// the host when a project is made, and libcurl refusing to connect anywhere else (redirects and
/// changed DNS answers included). The operator's own S3 endpoint (AWS_ENDPOINT_URL_S3) is trusted.
public struct DumpFetcher: Sendable {
    public var s3: S3Settings
    public var allowPrivateHosts: Bool

    public init(s3: S3Settings, allowPrivateHosts: Bool = false) {
        self.s3 = s3
        self.allowPrivateHosts = allowPrivateHosts
        _ = devdb_curl_global_init()
    }

    /// Checks a dump URL when a project is made: supported, and (unless allowed) not naming a
    /// private host.
    public func check(_ url: String) throws(DumpError) {
        _ = try resolve(url)
        guard !allowPrivateHosts, url.hasPrefix("http://") || url.hasPrefix("https://"),
              let host = URLComponents(string: url)?.host, !host.isEmpty else { return }
        let bare = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(bare, nil, &hints, &list) == 0, let first = list else { throw .unresolvable(host) }
        defer { freeaddrinfo(list) }
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            if let sa = ai.pointee.ai_addr, devdb_is_private_address(sa) != 0 {
                var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
                getnameinfo(sa, ai.pointee.ai_addrlen, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST)
                throw .privateHost(host, String(cString: text))
            }
            cursor = ai.pointee.ai_next
        }
    }

    /// The HTTP(S) URL libcurl fetches for a dump URL, and whether to sign it.
    public func resolve(_ url: String) throws(DumpError) -> (url: String, sign: Bool) {
        if url.hasPrefix("file://") || url.hasPrefix("http://") || url.hasPrefix("https://") { return (url, false) }
        guard url.hasPrefix("s3://") else { throw .unsupportedURL(url) }
        let rest = url.dropFirst("s3://".count)
        guard let slash = rest.firstIndex(of: "/"), slash != rest.startIndex, rest.index(after: slash) != rest.endIndex else {
            throw .unsupportedURL(url)
        }
        let bucket = rest[..<slash], key = rest[rest.index(after: slash)...]
        let encodedKey = key.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "+"))) ?? String($0) }
            .joined(separator: "/")
        if let endpoint = s3.endpoint {
            let base = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
            return ("\(base)/\(bucket)/\(encodedKey)", true)
        }
        return ("https://\(bucket).s3.\(s3.region).amazonaws.com/\(encodedKey)", true)
    }

    /// Fetches `url` to `destination`, calling `progress` with the bytes received so far.
    /// The file is created 0600 (a dump holds a whole database). `cancelled` is polled while the
    /// transfer runs; returning true aborts it. With `firstBytes`, only that many bytes from the
    /// start are asked for (an HTTP range), to read the dump's format and version before a restore.
    /// The caller inspects what arrived (`DumpInspector`).
    public func fetch(_ url: String, to destination: String, progress: @escaping @Sendable (Int64) -> Void,
                      cancelled: @escaping @Sendable () -> Bool = { false }, firstBytes: Int? = nil) throws(DumpError) {
        let (target, sign) = try resolve(url)
        let fd = open(destination, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .transfer("cannot write \(destination): \(String(cString: strerror(errno)))") }
        fchmod(fd, 0o600)
        guard let file = fdopen(fd, "wb") else { close(fd); throw .transfer("cannot write \(destination)") }
        var closed = false
        defer { if !closed { fclose(file) } }
        guard let curl = curl_easy_init() else { throw .transfer("cannot initialise libcurl") }
        defer { curl_easy_cleanup(curl) }
        var headers: UnsafeMutablePointer<curl_slist>?
        defer { if let headers { curl_slist_free_all(headers) } }
        let trustedEndpoint = configure(curl, target, sign: sign, protocols: "file,http,https")
        if let firstBytes {
            _ = devdb_curl_set_string(curl, CURLOPT_RANGE, "0-\(firstBytes - 1)")
            // A look at the header, not the transfer: a slow server does not hold up the caller.
            _ = devdb_curl_set_long(curl, CURLOPT_TIMEOUT, 8)
        }
        _ = devdb_curl_set_write_function(curl) { ptr, size, count, userdata in
            fwrite(ptr, size, count, userdata!.assumingMemoryBound(to: FILE.self))
        }
        _ = devdb_curl_set_pointer(curl, CURLOPT_WRITEDATA, UnsafeMutableRawPointer(file))
        let box = Unmanaged.passRetained(ProgressBox(progress, cancelled: cancelled)).toOpaque()
        defer { Unmanaged<ProgressBox>.fromOpaque(box).release() }
        _ = devdb_curl_set_xferinfo_function(curl) { data, _, now, _, _ in
            let progress = Unmanaged<ProgressBox>.fromOpaque(data!).takeUnretainedValue()
            progress.report(Int64(now))
            return progress.cancelled() ? 1 : 0
        }
        _ = devdb_curl_set_pointer(curl, CURLOPT_XFERINFODATA, box)
        try signIfNeeded(curl, sign: sign, headers: &headers)
        let rc = curl_easy_perform(curl)
        fclose(file)
        closed = true
        var code: Int = 0
        _ = devdb_curl_get_response_code(curl, &code)
        if rc == CURLE_FILE_COULDNT_READ_FILE { throw .notFound(url) }
        if rc == CURLE_ABORTED_BY_CALLBACK { throw .cancelled }
        // A range past the end of a small file, or a server that sent more than asked: fine.
        if firstBytes != nil, rc == CURLE_WRITE_ERROR || rc == CURLE_RANGE_ERROR || rc == CURLE_BAD_DOWNLOAD_RESUME { return }
        if rc == CURLE_COULDNT_CONNECT, !allowPrivateHosts, !trustedEndpoint, let host = URLComponents(string: target)?.host {
            // libcurl refused every address (our socket callback) or the host did not answer.
            do throws(DumpError) { try check("http://\(host)/") } catch {
                if case .privateHost = error { throw error }
            }
        }
        guard rc == CURLE_OK else { throw .transfer("\(String(cString: curl_easy_strerror(rc))) (\(url))") }
        if !target.hasPrefix("file://") { try Self.checkStatus(code, url) }
    }

    /// The format and source version of the dump at `url`, from its first MiB (a ranged GET).
    /// Throws what the fetch throws, or `.notADump` naming what was found.
    public func inspect(_ url: String, cancelled: @escaping @Sendable () -> Bool = { false }) throws(DumpError) -> DumpInfo {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("devdb-prefix-\(UUID().uuidString)")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("prefix").path
        try fetch(url, to: file, progress: { _ in }, cancelled: cancelled, firstBytes: DumpInspector.prefixLength)
        // A server that ignores ranges sends it all; only the prefix is read either way.
        do { return try DumpInspector.inspect(prefix: Self.readPrefix(file)) } catch {
            throw .notADump(url, found: error.description)
        }
    }

    static func readPrefix(_ path: String) -> [UInt8] {
        guard let f = fopen(path, "rb") else { return [] }
        defer { fclose(f) }
        var buf = [UInt8](repeating: 0, count: DumpInspector.prefixLength)
        let n = fread(&buf, 1, buf.count, f)
        return Array(buf[0..<n])
    }

    /// What fetch and fingerprint set alike: the URL, redirects, timeouts, protocols, and (unless
    /// allowed, or the operator's own S3 endpoint) public addresses only. Returns whether the
    /// endpoint is trusted.
    func configure(_ curl: UnsafeMutableRawPointer, _ target: String, sign: Bool, protocols: String) -> Bool {
        _ = devdb_curl_set_string(curl, CURLOPT_URL, target)
        _ = devdb_curl_set_long(curl, CURLOPT_FOLLOWLOCATION, 1)
        _ = devdb_curl_set_long(curl, CURLOPT_CONNECTTIMEOUT, 20)
        _ = devdb_curl_set_string(curl, CURLOPT_PROTOCOLS_STR, protocols)
        _ = devdb_curl_set_string(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https")
        let trustedEndpoint = sign && s3.endpoint != nil
        if !allowPrivateHosts && !trustedEndpoint { _ = devdb_curl_public_addresses_only(curl) }
        return trustedEndpoint
    }

    /// An HTTP answer as a dump error: found, missing, denied, or something else.
    static func checkStatus(_ code: Int, _ url: String) throws(DumpError) {
        switch code {
        case 200..<300: return
        case 404: throw .notFound(url)
        case 401, 403: throw .denied(url, code)
        default: throw .transfer("HTTP \(code) from \(url)")
        }
    }

    /// Signs an S3 request (SigV4 through libcurl); the header list is the caller's to free.
    func signIfNeeded(_ curl: UnsafeMutableRawPointer, sign: Bool, headers: inout UnsafeMutablePointer<curl_slist>?) throws(DumpError) {
        if sign {
            var id = s3.accessKeyID, secret = s3.secretAccessKey, token = s3.sessionToken
            if id == nil || secret == nil, s3.hasKeylessCredentials {
                (id, secret, token) = try s3.keylessCredentials()
            }
            guard let id, let secret else { throw .missingCredentials }
            _ = devdb_curl_set_string(curl, CURLOPT_AWS_SIGV4, "aws:amz:\(s3.region):s3")
            _ = devdb_curl_set_string(curl, CURLOPT_USERPWD, "\(id):\(secret)")
            // S3 wants the payload hash; a GET has an empty body.
            headers = curl_slist_append(headers, "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            if let token { headers = curl_slist_append(headers, "x-amz-security-token: \(token)") }
            _ = devdb_curl_set_pointer(curl, CURLOPT_HTTPHEADER, UnsafeMutableRawPointer(headers))
        }
    }

    /// What the dump looks like now, cheaply: ETag, Last-Modified and Content-Length from a HEAD
    /// (http, https, s3), size and modification time for files. A change means a new dump.
    public func fingerprint(_ url: String) throws(DumpError) -> String {
        let (target, sign) = try resolve(url)
        if target.hasPrefix("file://") {
            let path = String(target.dropFirst("file://".count)).removingPercentEncoding ?? String(target.dropFirst("file://".count))
            var st = stat()
            guard stat(path, &st) == 0 else { throw .notFound(url) }
            return "size=\(st.st_size);mtime=\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)"
        }
        guard let curl = curl_easy_init() else { throw .transfer("cannot initialise libcurl") }
        defer { curl_easy_cleanup(curl) }
        var headers: UnsafeMutablePointer<curl_slist>?
        defer { if let headers { curl_slist_free_all(headers) } }
        _ = configure(curl, target, sign: sign, protocols: "http,https")
        _ = devdb_curl_set_long(curl, CURLOPT_NOBODY, 1)
        _ = devdb_curl_set_long(curl, CURLOPT_TIMEOUT, 60)
        let box = HeaderBox.capture(curl)
        defer { box.release() }
        try signIfNeeded(curl, sign: sign, headers: &headers)
        let rc = curl_easy_perform(curl)
        guard rc == CURLE_OK else { throw .transfer("\(String(cString: curl_easy_strerror(rc))) (\(url))") }
        var code: Int = 0
        _ = devdb_curl_get_response_code(curl, &code)
        try Self.checkStatus(code, url)
        let h = box.takeUnretainedValue().fields
        let parts = ["etag", "last-modified", "content-length"].compactMap { k in h[k].map { "\(k)=\($0)" } }
        guard !parts.isEmpty else { throw .transfer("\(url) answers without ETag, Last-Modified or Content-Length: its changes cannot be seen") }
        return parts.joined(separator: ";")
    }

}

/// A response body, collected by libcurl's write callback.
final class BodyBox: @unchecked Sendable {  // written by libcurl's callback during the transfer, read after it
    var data = Data()

    /// A box that collects `curl`'s response body; the caller releases it after the transfer.
    static func capture(_ curl: UnsafeMutableRawPointer) -> Unmanaged<BodyBox> {
        let box = Unmanaged.passRetained(BodyBox())
        _ = devdb_curl_set_write_function(curl) { ptr, size, count, data in
            Unmanaged<BodyBox>.fromOpaque(data!).takeUnretainedValue().data.append(UnsafeRawPointer(ptr!).assumingMemoryBound(to: UInt8.self), count: size * count)
            return size * count
        }
        _ = devdb_curl_set_pointer(curl, CURLOPT_WRITEDATA, box.toOpaque())
        return box
    }
}

/// Response headers of the last response (a redirect's are replaced by the final answer's).
final class HeaderBox: @unchecked Sendable {  // written by libcurl's callback on the transfer's thread, read after it
    var fields: [String: String] = [:]

    /// A box that collects `curl`'s response headers; the caller releases it after the transfer.
    static func capture(_ curl: UnsafeMutableRawPointer) -> Unmanaged<HeaderBox> {
        let box = Unmanaged.passRetained(HeaderBox())
        _ = devdb_curl_set_header_function(curl) { ptr, size, count, data in
            let line = String(decoding: UnsafeRawBufferPointer(start: ptr, count: size * count), as: UTF8.self)
            Unmanaged<HeaderBox>.fromOpaque(data!).takeUnretainedValue().add(line)
            return size * count
        }
        _ = devdb_curl_set_pointer(curl, CURLOPT_HEADERDATA, box.toOpaque())
        return box
    }

    func add(_ line: String) {
        if line.hasPrefix("HTTP/") { fields = [:]; return }
        guard let colon = line.firstIndex(of: ":") else { return }
        fields[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

final class ProgressBox: Sendable {
    private let last = Atomic<Int64>(-1)
    private let sink: @Sendable (Int64) -> Void
    let cancelled: @Sendable () -> Bool
    init(_ sink: @escaping @Sendable (Int64) -> Void, cancelled: @escaping @Sendable () -> Bool) { self.sink = sink; self.cancelled = cancelled }
    func report(_ bytes: Int64) {
        // libcurl calls this very often; pass on changes of at least 1 MiB.
        let previous = last.load(ordering: .relaxed)
        if previous < 0 || bytes - previous >= 1 << 20 {
            last.store(bytes, ordering: .relaxed)
            sink(bytes)
        }
    }
}
