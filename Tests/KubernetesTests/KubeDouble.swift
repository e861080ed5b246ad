import DevDBCatalog
import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

/// The Kubernetes provisioner's tests run one at a time, each against its own API server double.
@Suite(.serialized) struct KubernetesProvisionerTests {}

/// Starts `Fixtures/kube_apiserver_double.py`: a TEST DOUBLE of the Kubernetes API server (no
/// kube-apiserver can run here). It speaks HTTPS with a test CA, checks a bearer token, validates
/// every object against the official schemas (kubernetes-validate) and the published CRDs
/// (`<repo>/../shared/kubernetes/crds`), authorizes every request with the Role and ClusterRole
/// the chart renders, applies Pod Security "restricted" admission and the API server's deletion
/// semantics, records requests and moves objects through statuses.
final class KubeDouble: @unchecked Sendable {
    static let namespace = "devdb-test"
    let directory: URL
    let certs: TestCertificates
    let token: String
    let port: Int
    let process: ServerProcess
    let kubeconfig: URL

    /// The published CRDs (VolumeSnapshot, cert-manager's Certificate), read where they are kept:
    /// `shared/kubernetes/crds` next to the repository (CI's copy of shared/ is at ../shared).
    static let crdDirectory: String? = {
        let dir = TestPaths.repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared/kubernetes/crds").path
        return FileManager.default.fileExists(atPath: dir) ? dir : nil
    }()

    /// The RBAC rules the chart renders (its Role, and its ClusterRole with rbac.readSnapshotClass
    /// for the class the tests use), as the double enforces them. Rendered once per test run.
    static let rbacRules: Result<String, any Error> = Result {
        let values = #"{"rbac": {"readSnapshotClass": true}, "databases": {"snapshotClass": "csi-hostpath-snapclass"}}"#
        let script = TestPaths.repositoryRoot.appendingPathComponent("Tests/ChartTests/render.py").path
        let role = try JSONValue.decode(Data(try run([python, script, "Role", "devdb-provisioner", values]).stdout.utf8))
        let clusterRole = try JSONValue.decode(Data(try run([python, script, "ClusterRole", "devdb-devdb-snapshot-class", values]).stdout.utf8))
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("devdb-kube-rbac-\(getpid()).json")
        let rules: JSONValue = ["role": role["rules"], "clusterRole": clusterRole["rules"]]
        try rules.encoded().write(to: file)
        return file.path
    }

    static var python: String {
        let venv = TestPaths.repositoryRoot.appendingPathComponent(".venv/bin/python3").path
        return FileManager.default.isExecutableFile(atPath: venv) ? venv : "python3"
    }

    init() throws {
        directory = try TestPaths.makeTemporaryDirectory("devdb-kube")
        certs = try TestCertificates(directory: directory, domain: "kube.test", name: "kube", extraNames: ["IP:127.0.0.1"])
        token = "test-token-" + UUID().uuidString.lowercased()
        port = freePort()
        let script = Bundle.module.url(forResource: "Fixtures/kube_apiserver_double", withExtension: "py")!.path
        var argv = [Self.python, script, String(port), certs.certificate, certs.key, token, Self.namespace, "--rbac", try Self.rbacRules.get()]
        if let crds = Self.crdDirectory { argv += ["--crds", crds] } else {
            print("note: \(TestPaths.repositoryRoot.deletingLastPathComponent().path)/shared/kubernetes/crds is absent: the API server double checks VolumeSnapshots by hand instead of against the published CRD")
        }
        process = try ServerProcess(name: "kube-apiserver-double", argv: argv, logDirectory: directory)
        kubeconfig = directory.appendingPathComponent("kubeconfig")
        try Self.kubeconfigText(server: "https://127.0.0.1:\(port)", caFile: certs.caCertificate, token: token)
            .write(to: kubeconfig, atomically: true, encoding: .utf8)
        let log = process.logFile
        try waitUntil(timeout: 30, "the API server double to listen") {
            (try? String(contentsOf: log, encoding: .utf8))?.contains("test double on") ?? false
        }
    }

    deinit { process.stop(SIGTERM) }

    /// A kubeconfig the way `kind` and `kubectl` write one.
    static func kubeconfigText(server: String, caFile: String, token: String, extraCluster: String = "") throws -> String {
        let ca = try Data(contentsOf: URL(fileURLWithPath: caFile)).base64EncodedString()
        return """
            apiVersion: v1
            clusters:
            - cluster:
                certificate-authority-data: \(ca)
                server: \(server)\(extraCluster)
              name: kind-devdb
            contexts:
            - context:
                cluster: kind-devdb
                namespace: \(namespace)
                user: devdb-api
              name: kind-devdb
            current-context: kind-devdb
            kind: Config
            preferences: {}
            users:
            - name: devdb-api
              user:
                token: "\(token)"   # a service-account token

            """
    }

    func client() throws -> KubeClient {
        KubeClient(connection: try KubeConnection.fromKubeconfig(path: kubeconfig.path, context: nil, namespace: nil))
    }

    func provisioner(_ tweak: (inout KubernetesSettings) -> Void = { _ in }, projects: [Project] = []) throws -> KubernetesProvisioner {
        var s = KubernetesSettings()
        s.instance = "devdb"
        s.snapshotClass = "csi-hostpath-snapclass"
        s.storageClass = "csi-hostpath-sc"
        s.toolsImage = "registry.example.com/devdb:1.0"
        s.s3SecretName = "devdb-s3"
        s.pollInterval = 0.05
        s.bindTimeout = 20
        s.readyTimeout = 20
        s.snapshotTimeout = 20
        s.restoreTimeout = 20
        s.transientPodErrorTimeout = 20
        s.orphanGracePeriod = 0
        tweak(&s)
        let known = projects
        return KubernetesProvisioner(client: try client(), settings: s) { name in known.first { $0.name == name } }
    }

    // MARK: the double's test endpoints

    func requests() async throws -> [JSONValue] { try await client().request("GET", "/_double/requests").array }
    func objects() async throws -> [JSONValue] { try await client().request("GET", "/_double/objects").array }
    func faults(_ f: JSONValue) async throws { _ = try await client().request("POST", "/_double/faults", body: f) }
    func setPod(_ name: String, ready: Bool) async throws {
        _ = try await client().request("POST", "/_double/pods/\(name)/\(ready ? "ready" : "unready")")
    }
    func removeBehindOurBack(_ resource: String, _ name: String) async throws {
        _ = try await client().request("DELETE", "/_double/objects/\(resource)/\(name)")
    }

    /// Waits (up to 10 s) until nothing is being deleted and the garbage collector has nothing
    /// left to do: deletes on a cluster finish a moment after they are answered.
    func settle() async throws {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, try await client().request("GET", "/_double/settled")["settled"] != true {
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Objects the double holds once it has settled, by kind and name ("Secret/devdb-db-kate").
    func inventory() async throws -> [String] {
        try await settle()
        // Events are the cluster's own records of what happened, not objects DevDB makes.
        return try await objects().filter { $0["kind"].string != "Event" }.map { "\($0["kind"].string ?? "?")/\($0.at("metadata.name").string ?? "?")" }.sorted()
    }
    func object(_ kind: String, _ name: String) async throws -> JSONValue? {
        try await objects().first { $0["kind"].string == kind && $0.at("metadata.name").string == name }
    }
    /// Bodies the provisioner POSTed, by kind.
    func created(_ kind: String) async throws -> [JSONValue] {
        try await requests().filter { $0["verb"].string == "create" && $0.at("body.kind").string == kind }.map { $0["body"] }
    }
}

let shop = Project(name: "shop", postgresMajor: 15, dumpUrl: "s3://dumps/shop.dump")

/// A seeded generation and a ready database `kate-pg` made from it, as the catalog would record it.
func readyDatabase(_ p: KubernetesProvisioner) async throws -> DatabaseRecord {
    try await p.seed(project: shop, generation: generation()) { _, _ in }
    var d = database()
    let info = try await p.create(database: d, from: generation()) { _ in }
    d.backendHost = info.host; d.backendPort = info.port; d.state = .ready
    return d
}
func generation(_ n: Int = 1) -> Generation { Generation(project: "shop", number: n, state: .ready) }
func database(_ name: String = "kate-pg") -> DatabaseRecord {
    DatabaseRecord(name: name, project: "shop", owner: "kate@example.com", user: "app", password: "pw-" + UUID().uuidString.prefix(8).lowercased(),
                   database: "app")
}

/// Collects phases reported from inside the provisioner.
final class Phases: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ p: String) { lock.lock(); items.append(p); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return items }
}
