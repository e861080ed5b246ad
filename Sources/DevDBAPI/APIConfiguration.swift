import DevDBProvisioning
import DevDBRedis
import Foundation

public struct APIConfiguration: Sendable {
    public var host = "0.0.0.0"
    public var port = 5000
    public var redis = RedisURL()
    public var provisioner = "local"
    /// `--provisioner stand-in` (bench/scale only): where every route points.
    public var standInBackend: (host: String, port: Int) = ("127.0.0.1", 5432)
    public var dataDirectory = URL(fileURLWithPath: "/var/lib/devdb")
    public var dbDomain = "db.devdb.localhost"
    /// What clients are told to connect to: the router.
    public var routerHost = "127.0.0.1"
    public var routerPort = 5432
    /// Plaintext admin token (from --admin-token-file or DEVDB_ADMIN_TOKEN); generated when nil.
    public var adminToken: String?
    public var portRange: ClosedRange<Int> = 16000...16999
    public var s3 = S3Settings.fromEnvironment()
    public var reapIntervalSeconds: Double = 30
    /// Extra PostgreSQL majors for the local provisioner (--postgres-bin-dir MAJOR=DIR), besides Debian's.
    public var postgresBinDirectories: [Int: String] = [:]
    /// Seconds between reconciles of the catalog with what runs.
    public var reconcileIntervalSeconds: Double = 60
    /// Fetch dumps from loopback, private and link-local hosts too (tests with local servers).
    public var allowPrivateDumpHosts = false
    /// Seconds between checks of dumps for changes and of refresh schedules.
    public var refreshCheckIntervalSeconds: Double = 300
    /// Seconds without a session before a database hibernates (0: never); per database too.
    public var hibernateAfterSeconds: Double = 1800
    /// The longest ttl a database may be given (create or update).
    public var maxTTLSeconds: Double = 90 * 86400
    /// Snapshots one database may have.
    public var maxSnapshotsPerDatabase = 10
    /// Single sign-on: ID tokens of this issuer are bearer credentials too (nil: API tokens only).
    public var oidc: OIDCSettings?
    /// The audit log's bounds (#27).
    public var audit = AuditSettings()
    // Kubernetes provisioner.
    public var kubeconfig: String?
    public var kubeContext: String?
    public var namespace: String?
    public var kubernetes = KubernetesSettings()

    public init() {}
}
