import Foundation

/// How to reach a Kubernetes API server: from inside a pod (service-account token and CA) or
/// from a kubeconfig file. TLS is always verified against the cluster's CA or the system's.
public struct KubeConnection: Sendable {
    public enum Credential: Sendable, Equatable {
        /// A bearer token; from a file it is read again on every request (bound tokens rotate).
        case token(String)
        case tokenFile(String)
        /// PEM client certificate and key.
        case clientCertificate(cert: Data, key: Data)
        case none
    }

    public var server: String
    /// PEM of the CA that signs the API server's certificate; nil means the system's trust store.
    public var caPEM: Data?
    public var credential: Credential
    public var namespace: String
    /// Where this came from, for messages ("in-cluster service account", "kubeconfig /path context ctx").
    public var source: String

    public init(server: String, caPEM: Data?, credential: Credential, namespace: String, source: String) {
        self.server = server.hasSuffix("/") ? String(server.dropLast()) : server
        self.caPEM = caPEM; self.credential = credential; self.namespace = namespace; self.source = source
    }

    public struct ConfigError: Error, CustomStringConvertible {
        public let description: String
        init(_ d: String) { description = d }
    }

    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// Picks the connection the way kubectl and client libraries do: `--kubeconfig`, then
    /// `KUBECONFIG`, then the in-cluster service account, then `~/.kube/config`.
    /// `namespace` (a flag) wins over the kubeconfig's or the pod's own namespace.
    public static func resolve(kubeconfig: String?, context: String?, namespace: String?,
                               environment: [String: String] = ProcessInfo.processInfo.environment,
                               serviceAccountDirectory: String = serviceAccountDirectory) throws -> KubeConnection {
        if let path = kubeconfig ?? environment["KUBECONFIG"].flatMap({ $0.split(separator: ":").first.map(String.init) }), !path.isEmpty {
            return try fromKubeconfig(path: path, context: context, namespace: namespace)
        }
        if let host = environment["KUBERNETES_SERVICE_HOST"], let port = environment["KUBERNETES_SERVICE_PORT"] {
            return try inCluster(host: host, port: port, namespace: namespace, directory: serviceAccountDirectory)
        }
        if let home = environment["HOME"], FileManager.default.fileExists(atPath: "\(home)/.kube/config") {
            return try fromKubeconfig(path: "\(home)/.kube/config", context: context, namespace: namespace)
        }
        throw ConfigError("no Kubernetes API to talk to: run in a pod with a service account, or pass --kubeconfig (or set KUBECONFIG)")
    }

    public static func inCluster(host: String, port: String, namespace: String?, directory: String) throws -> KubeConnection {
        let tokenPath = "\(directory)/token"
        guard FileManager.default.isReadableFile(atPath: tokenPath) else {
            throw ConfigError("in-cluster: no service-account token at \(tokenPath); set automountServiceAccountToken or pass --kubeconfig")
        }
        guard let ca = FileManager.default.contents(atPath: "\(directory)/ca.crt") else {
            throw ConfigError("in-cluster: no CA certificate at \(directory)/ca.crt")
        }
        let ns = namespace ?? (try? String(contentsOfFile: "\(directory)/namespace", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
        guard let ns, !ns.isEmpty else { throw ConfigError("in-cluster: no namespace file in \(directory); pass --namespace") }
        let h = host.contains(":") ? "[\(host)]" : host
        return KubeConnection(server: "https://\(h):\(port)", caPEM: ca, credential: .tokenFile(tokenPath), namespace: ns,
                              source: "in-cluster service account")
    }

    public static func fromKubeconfig(path: String, context wanted: String?, namespace: String?) throws -> KubeConnection {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConfigError("cannot read kubeconfig \(path)")
        }
        let doc: JSONValue
        do { doc = try KubeYAML.parse(text) } catch { throw ConfigError("kubeconfig \(path): \(error)") }
        let base = (path as NSString).deletingLastPathComponent
        func file(_ p: String) -> String { p.hasPrefix("/") ? p : "\(base)/\(p)" }
        func named(_ list: String, _ name: String) -> JSONValue? {
            doc[list].array.first { $0["name"].string == name }
        }
        guard let contextName = wanted ?? doc["current-context"].string, !contextName.isEmpty else {
            throw ConfigError("kubeconfig \(path) has no current-context; pass --kube-context")
        }
        guard let context = named("contexts", contextName)?["context"], !context.isNull else {
            throw ConfigError("kubeconfig \(path) has no context \"\(contextName)\"")
        }
        guard let clusterName = context["cluster"].string, let cluster = named("clusters", clusterName)?["cluster"],
              let server = cluster["server"].string else {
            throw ConfigError("kubeconfig \(path): context \"\(contextName)\" names no cluster with a server")
        }
        guard server.hasPrefix("https://") else {
            throw ConfigError("kubeconfig \(path): server \(server) is not https; DevDB only talks to the API server over verified TLS")
        }
        if cluster["insecure-skip-tls-verify"].bool == true {
            throw ConfigError("kubeconfig \(path): cluster \"\(clusterName)\" sets insecure-skip-tls-verify; DevDB never skips TLS verification: add certificate-authority-data")
        }
        var ca: Data?
        if let b64 = cluster["certificate-authority-data"].string {
            guard let d = Data(base64Encoded: b64, options: .ignoreUnknownCharacters) else {
                throw ConfigError("kubeconfig \(path): certificate-authority-data is not base64")
            }
            ca = d
        } else if let caFile = cluster["certificate-authority"].string {
            guard let d = FileManager.default.contents(atPath: file(caFile)) else { throw ConfigError("cannot read CA file \(file(caFile))") }
            ca = d
        }
        var credential = Credential.none
        if let userName = context["user"].string, let user = named("users", userName)?["user"] {
            if let t = user["token"].string {
                credential = .token(t)
            } else if let tf = user["tokenFile"].string {
                credential = .tokenFile(file(tf))
            } else if let certB64 = user["client-certificate-data"].string, let keyB64 = user["client-key-data"].string {
                guard let cert = Data(base64Encoded: certB64, options: .ignoreUnknownCharacters),
                      let key = Data(base64Encoded: keyB64, options: .ignoreUnknownCharacters) else {
                    throw ConfigError("kubeconfig \(path): client-certificate-data or client-key-data is not base64")
                }
                credential = .clientCertificate(cert: cert, key: key)
            } else if let certFile = user["client-certificate"].string, let keyFile = user["client-key"].string {
                guard let cert = FileManager.default.contents(atPath: file(certFile)),
                      let key = FileManager.default.contents(atPath: file(keyFile)) else {
                    throw ConfigError("kubeconfig \(path): cannot read the client certificate or key")
                }
                credential = .clientCertificate(cert: cert, key: key)
            } else if !user["exec"].isNull || !user["auth-provider"].isNull {
                throw ConfigError("kubeconfig \(path): user \"\(userName)\" uses an exec or auth-provider plugin, which DevDB does not run; make a token with \"kubectl create token <service-account>\" and use a kubeconfig with it")
            }
        }
        let ns = namespace ?? context["namespace"].string ?? "default"
        return KubeConnection(server: server, caPEM: ca, credential: credential, namespace: ns,
                              source: "kubeconfig \(path) context \(contextName)")
    }
}
