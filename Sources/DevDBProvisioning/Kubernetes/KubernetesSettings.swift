import COpenSSL
import Foundation

/// Settings of the Kubernetes provisioner (the chart passes them as devdb-api flags).
public struct KubernetesSettings: Sendable {
    /// Prefix of every object name and the `app.kubernetes.io/instance` label: the release's full name.
    public var instance = "devdb"
    /// The Postgres image of a major: `postgresImages[major]`, else the template with {major} replaced.
    public var postgresImageTemplate = "postgres:{major}-bookworm"
    public var postgresImages: [Int: String] = [:]
    public func postgresImage(major: Int) -> String {
        postgresImages[major] ?? postgresImageTemplate.replacingOccurrences(of: "{major}", with: String(major))
    }
    /// DevDB's own image: the restore Job's fetch step runs `devdb-fetch-dump` from it.
    public var toolsImage = "ghcr.io/devdb/devdb:latest"
    /// Pull policy of DevDB's own image (the restore Job's fetch step).
    public var imagePullPolicy = "IfNotPresent"
    /// Pull policy of the Postgres images: its own, so a kind cluster that loads DevDB's image
    /// (`Never`) still pulls Postgres.
    public var postgresImagePullPolicy = "IfNotPresent"
    /// Secrets every pod the provisioner makes may pull with (a private registry).
    public var imagePullSecrets: [String] = []
    /// Size of the memory-backed /dev/shm of database and restore pods (Postgres' parallel
    /// queries use it; the container default is 64 MiB). It counts against the memory limit.
    public var shmSize = "256Mi"
    /// Seconds a pod may stay unschedulable (PodScheduled=False, Unschedulable) for a reason
    /// other than its volume binding, before the step fails with the cluster's message.
    public var unschedulableTimeout: Double = 120
    /// Seconds a container may wait in a state the kubelet retries (ErrImagePull,
    /// ImagePullBackOff, CreateContainerError: registry rate limits are common) before the step
    /// fails with the kubelet's message. ErrImageNeverPull and InvalidImageName fail at once.
    public var transientPodErrorTimeout: Double = 300
    /// nil: the cluster's default StorageClass.
    public var storageClass: String?
    /// nil or empty: no CSI snapshots; every database restores the dump itself.
    public var snapshotClass: String?
    public var volumeSize = "10Gi"
    /// The service account restore pods run as: keyless S3 credentials (IRSA, EKS Pod Identity)
    /// are given to it. nil: the namespace's default, with no token mounted.
    public var restoreServiceAccount: String?
    /// The uid of the Postgres image (999 Debian, 70 alpine); nil: the platform assigns uids.
    public var postgresUID: Int? = 999
    /// Size of a restore's volume; nil: sized from the dump (see `restoreVolumeSize`).
    public var restoreVolumeSize: String?
    public var cpuRequest = "100m", memoryRequest = "256Mi", cpuLimit = "1", memoryLimit = "1Gi"
    /// Restore pods' own resources: pg_restore -j N with maintenance_work_mem needs more than a
    /// database at rest (a mid-size dump runs out of memory at 1 Gi).
    public var restoreCPURequest = "500m", restoreMemoryRequest = "1Gi", restoreCPULimit = "2", restoreMemoryLimit = "4Gi"
    /// Annotations of every pod DevDB makes. By default no service-mesh sidecar: a Job whose pod
    /// has one never completes (the sidecar keeps running), and the router speaks to Postgres directly.
    public var podAnnotations: [String: String] = ["sidecar.istio.io/inject": "false"]
    /// Annotations of restore pods, on top of `podAnnotations`: an hour-long restore is not
    /// something a cluster autoscaler or Karpenter may evict to consolidate nodes.
    public var restorePodAnnotations: [String: String] = ["karpenter.sh/do-not-disrupt": "true",
                                                          "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"]
    /// Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) for s3:// dumps.
    public var s3SecretName: String?
    public var s3Region: String?
    public var s3Endpoint: String?
    public var restoreJobs = 2
    public var clusterDomain = "cluster.local"
    /// Seconds: a PVC that is not Bound by then fails the step.
    public var bindTimeout: Double = 300
    /// Seconds for a pod to become ready, a restore Job to finish, a snapshot to be readyToUse.
    public var readyTimeout: Double = 300
    public var restoreTimeout: Double = 3600
    public var snapshotTimeout: Double = 900
    public var pollInterval: Double = 2
    /// This installation's identity (the catalog's `devdb:installation`), put on every object as
    /// the label `devdb.io/installation`. nil: none known (`devdb-api --uninstall` runs without
    /// the catalog): every object of `instance` counts as this installation's.
    public var installation: String?
    /// Objects without the installation label count as this installation's (it was upgraded from
    /// a version that did not set it). False for a new, empty catalog.
    public var adoptUnlabelled = true
    /// Seconds an object is left alone by the reconcile after it was made, even when no catalog
    /// entry wants it yet: work that is making it may not have recorded it.
    public var orphanGracePeriod: Double = 300
    /// The API's --allow-private-dump-hosts, passed on to the restore Job's fetch step.
    public var allowPrivateDumpHosts = false

    public init() {}
}

/// Kubernetes resource quantities ("10Gi", "500M", "1.5Ti", "1073741824") in bytes.
public enum Quantity {
    public static func bytes(_ text: String) -> Double? {
        let suffixes: [(String, Double)] = [("Ki", 1024), ("Mi", pow(1024, 2)), ("Gi", pow(1024, 3)), ("Ti", pow(1024, 4)),
                                            ("Pi", pow(1024, 5)), ("Ei", pow(1024, 6)), ("k", 1e3), ("M", 1e6), ("G", 1e9),
                                            ("T", 1e12), ("P", 1e15), ("E", 1e18)]
        for (suffix, factor) in suffixes where text.hasSuffix(suffix) {
            return Double(text.dropLast(suffix.count)).map { $0 * factor }
        }
        return Double(text)
    }
}

/// Names and labels of the objects DevDB makes. Every object name is a DNS-1035 label of at most
/// 63 characters, so it is valid for Services too.
public enum KubeNames {
    public static let managedBy = "devdb-api"
    public static let projectLabel = "devdb.io/project"
    public static let databaseLabel = "devdb.io/database"
    public static let ownerLabel = "devdb.io/owner"
    public static let generationLabel = "devdb.io/generation"
    /// On a database's VolumeSnapshots: the database and the snapshot's name (not the database
    /// label: a snapshot outlives its database while branches use it).
    public static let snapshotOfLabel = "devdb.io/snapshot-of"
    public static let snapshotLabel = "devdb.io/snapshot"
    /// The installation (catalog) that made an object.
    public static let installationLabel = "devdb.io/installation"

    /// `<instance>-<kind>-<name>`, shortened with a hash when it would be too long or end badly.
    public static func object(_ instance: String, _ kind: String, _ name: String) -> String {
        let full = "\(instance)-\(kind)-\(name)"
        if full.count <= 63 && full.last != "-" { return full }
        let hash = shortHash(full)
        var head = String(full.prefix(63 - 9))
        while head.last == "-" { head.removeLast() }
        return "\(head)-\(hash)"
    }

    /// A label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
    public static func labelValue(_ raw: String) -> String {
        var s = String(raw.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") ? $0 : "_" })
        if s.count > 63 { s = String(s.prefix(54)) + "-" + shortHash(raw) }
        while let f = s.first, !(f.isLetter || f.isNumber) { s.removeFirst() }
        while let l = s.last, !(l.isLetter || l.isNumber) { s.removeLast() }
        return s
    }

    static func shortHash(_ s: String) -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        let bytes = Array(s.utf8)
        _ = SHA256(bytes, bytes.count, &digest)
        return digest.prefix(4).map { String(format: "%02x", $0) }.joined()
    }
}
