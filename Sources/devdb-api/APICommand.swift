import ArgumentParser
import DevDBAPI
import DevDBRedis
import DevDBCore
import DevDBProvisioning
import Foundation
import Hummingbird
import Logging

@main
struct APICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devdb-api",
        abstract: "DevDB's control plane: projects, databases and tokens over HTTP (OpenAPI at /openapi.yaml).",
        discussion: """
            Every option can also be set through DEVDB_API_<OPTION> (e.g. DEVDB_API_REDIS). The admin token \
            comes from --admin-token-file or DEVDB_ADMIN_TOKEN; without either, one is generated into \
            <data-dir>/admin-token. S3 dumps use AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, \
            AWS_REGION and, for S3-compatible stores, AWS_ENDPOINT_URL_S3.
            """)

    @Option(help: ArgumentHelp("Address to serve HTTP on.", valueName: "host:port")) var listen = "0.0.0.0:5000"
    @Option(help: ArgumentHelp("Redis holding the catalog and routes.", valueName: "url")) var redis = "redis://127.0.0.1:6379/0"
    @Option(help: "Where databases run: local (Postgres processes on this machine) or kubernetes (pods in a namespace).") var provisioner = "local"
    @Option(name: .customLong("redis-password-file"), help: ArgumentHelp("File holding Redis's password (instead of one in --redis).", valueName: "path"))
    var redisPasswordFile: String?
    @Option(name: .customLong("stand-in-backend"), help: .hidden) var standInBackend: String?
    @Option(name: .customLong("data-dir"), help: ArgumentHelp("Directory for generations and instances (local provisioner).", valueName: "path"))
    var dataDir = "/var/lib/devdb"
    @Option(name: .customLong("db-domain"), help: "Domain databases are named under: NAME.<db-domain>.") var dbDomain = "db.devdb.localhost"
    @Option(name: .customLong("router-host"), help: "Address clients reach the router at (given to libpq as hostaddr).") var routerHost = "127.0.0.1"
    @Option(name: .customLong("router-port"), help: "Port of the router.") var routerPort = 5432
    @Option(name: .customLong("admin-token-file"), help: ArgumentHelp("File holding the admin token.", valueName: "path")) var adminTokenFile: String?
    @Option(name: .customLong("port-range"), help: ArgumentHelp("Ports for local instances.", valueName: "first-last")) var portRange = "16000-16999"
    @Option(name: .customLong("reap-interval"), help: "Seconds between checks for expired databases.") var reapInterval: Double = 30
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.") var logLevel = "info"
    @Option(name: .customLong("reconcile-interval"), help: "Seconds between reconciles of the catalog with the instances that run.") var reconcileInterval: Double = 60
    @Flag(name: .customLong("allow-private-dump-hosts"),
          help: "Allow dump URLs whose host is loopback, private or link-local (refused by default: such URLs reach internal services).")
    var allowPrivateDumpHosts = false
    @Option(name: .customLong("refresh-check-interval"),
            help: ArgumentHelp("How often to check dumps of projects that refresh on change (a HEAD request) and refresh schedules.", valueName: "duration"))
    var refreshCheckInterval = "5m"
    @Option(name: .customLong("hibernate-after"),
            help: ArgumentHelp("Stop databases no session has used for this long; the router wakes them on the next connection (0: never). Per database: devdb db update NAME --hibernate-after.", valueName: "duration"))
    var hibernateAfter = "30m"
    @Option(name: .customLong("max-ttl"), help: "The longest --ttl a database may be given (create and update), e.g. 30d.")
    var maxTTL = "90d"
    @Option(name: .customLong("max-snapshots"), help: "Snapshots one database may have (devdb db snapshot); more are refused with 409.")
    var maxSnapshots = 10

    // Kubernetes provisioner.
    @Option(help: ArgumentHelp("kubernetes: kubeconfig to use outside a cluster (default: KUBECONFIG, then the pod's service account, then ~/.kube/config).", valueName: "path"))
    var kubeconfig: String?
    @Option(name: .customLong("kube-context"), help: "kubernetes: kubeconfig context (default: its current-context).") var kubeContext: String?
    @Option(help: "kubernetes: namespace for databases (default: the pod's own namespace, or the context's).") var namespace: String?
    @Option(help: "kubernetes: name prefix and app.kubernetes.io/instance label of every object (the chart passes its release name).") var instance = "devdb"
    @Option(name: .customLong("postgres-bin-dir"), help: ArgumentHelp("local: bin directory of another PostgreSQL major, as MAJOR=DIR (repeatable; Debian's /usr/lib/postgresql/*/bin are found by themselves). Environment: MAJOR=DIR,MAJOR=DIR.", valueName: "major=dir"))
    var postgresBinDir: [String] = []
    @Option(name: .customLong("postgres-image-template"), help: "kubernetes: image of PostgreSQL MAJOR for databases and restores; {major} is replaced.")
    var postgresImageTemplate = "postgres:{major}-bookworm"
    @Option(name: .customLong("postgres-image"), help: ArgumentHelp("kubernetes: the image of one major, as MAJOR=IMAGE (repeatable; wins over the template).", valueName: "major=image"))
    var postgresImage: [String] = []
    @Option(name: .customLong("tools-image"), help: "kubernetes: DevDB's image; the restore Job fetches the dump with its devdb-fetch-dump.") var toolsImage = "ghcr.io/devdb/devdb:latest"
    @Option(name: .customLong("image-pull-policy"), help: "kubernetes: pull policy of DevDB's image (the restore Job's fetch step): Always, IfNotPresent or Never.") var imagePullPolicy = "IfNotPresent"
    @Option(name: .customLong("postgres-image-pull-policy"), help: "kubernetes: pull policy of the Postgres images: Always, IfNotPresent or Never.") var postgresImagePullPolicy = "IfNotPresent"
    @Option(name: .customLong("image-pull-secret"), help: ArgumentHelp("kubernetes: a Secret every database and restore pod may pull images with (repeatable).", valueName: "name"))
    var imagePullSecret: [String] = []
    @Option(name: .customLong("shm-size"), help: "kubernetes: size of the memory-backed /dev/shm of database and restore pods.") var shmSize = "256Mi"
    @Option(name: .customLong("unschedulable-timeout"), help: "kubernetes: seconds a pod may stay unschedulable (other than for its volume) before the step fails with the cluster's reason.")
    var unschedulableTimeout: Double = 120
    @Option(name: .customLong("storage-class"), help: "kubernetes: StorageClass of database volumes (default: the cluster's default).") var storageClass: String?
    @Option(name: .customLong("snapshot-class"), help: "kubernetes: VolumeSnapshotClass for generations; empty: no snapshots, each database restores the dump.") var snapshotClass: String?
    @Option(name: .customLong("volume-size"), help: "kubernetes: size of each database volume.") var volumeSize = "10Gi"
    @Option(name: .customLong("postgres-uid"), help: "kubernetes: uid of the Postgres image (999 for Debian images, 70 for alpine), or none where the platform assigns uids (OpenShift).")
    var postgresUID = "999"
    @Option(name: .customLong("restore-service-account"), help: "kubernetes: service account of restore pods (IRSA / EKS Pod Identity: S3 credentials without a Secret).")
    var restoreServiceAccount: String?
    @Option(name: .customLong("restore-volume-size"), help: "kubernetes: size of a restore's volume (default: from the dump's size and the previous generation's, at least --volume-size).")
    var restoreVolumeSize: String?
    @Option(name: .customLong("db-cpu-request"), help: "kubernetes: CPU request of each database pod.") var dbCPURequest = "100m"
    @Option(name: .customLong("db-memory-request"), help: "kubernetes: memory request of each database pod.") var dbMemoryRequest = "256Mi"
    @Option(name: .customLong("db-cpu-limit"), help: "kubernetes: CPU limit of each database pod.") var dbCPULimit = "1"
    @Option(name: .customLong("db-memory-limit"), help: "kubernetes: memory limit of each database pod.") var dbMemoryLimit = "1Gi"
    @Option(name: .customLong("s3-secret"), help: "kubernetes: Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for the restore Job's s3:// fetch.") var s3Secret: String?
    @Option(name: .customLong("restore-jobs"), help: "pg_restore -j for restores.") var restoreJobs = 2
    @Option(name: .customLong("cluster-domain"), help: "kubernetes: the cluster's DNS domain (routes name <service>.<namespace>.svc.<domain>).") var clusterDomain = "cluster.local"
    @Option(name: .customLong("bind-timeout"), help: "kubernetes: seconds a volume may stay Pending.") var bindTimeout: Double = 300
    @Option(name: .customLong("ready-timeout"), help: "kubernetes: seconds for a database pod to become ready.") var readyTimeout: Double = 300
    @Option(name: .customLong("restore-timeout"), help: "kubernetes: seconds for a restore Job.") var restoreTimeout: Double = 3600
    @Option(name: .customLong("snapshot-timeout"), help: "kubernetes: seconds for a VolumeSnapshot to become readyToUse.") var snapshotTimeout: Double = 900
    @Option(name: .customLong("poll-interval"), help: "kubernetes: seconds between status checks.") var pollInterval: Double = 2
    @Option(name: .customLong("transient-pod-error-timeout"), help: "kubernetes: seconds a container may wait in ErrImagePull, ImagePullBackOff or CreateContainerError (the kubelet retries them) before the step fails with the kubelet's message.")
    var transientPodErrorTimeout: Double = 300
    @Option(name: .customLong("restore-cpu-request"), help: "kubernetes: CPU request of restore pods.") var restoreCPURequest = "500m"
    @Option(name: .customLong("restore-memory-request"), help: "kubernetes: memory request of restore pods.") var restoreMemoryRequest = "1Gi"
    @Option(name: .customLong("restore-cpu-limit"), help: "kubernetes: CPU limit of restore pods.") var restoreCPULimit = "2"
    @Option(name: .customLong("restore-memory-limit"), help: "kubernetes: memory limit of restore pods.") var restoreMemoryLimit = "4Gi"
    @Option(name: .customLong("pod-annotations"), help: ArgumentHelp("kubernetes: annotations of every pod DevDB makes, as a JSON object (default {\"sidecar.istio.io/inject\":\"false\"}).", valueName: "json"))
    var podAnnotations: String?
    @Option(name: .customLong("restore-pod-annotations"), help: ArgumentHelp("kubernetes: annotations of restore pods on top of --pod-annotations, as a JSON object (default: karpenter.sh/do-not-disrupt and cluster-autoscaler.kubernetes.io/safe-to-evict=false, so no autoscaler evicts an hour-long restore).", valueName: "json"))
    var restorePodAnnotations: String?
    @Option(name: .customLong("orphan-grace-period"), help: "kubernetes: seconds the reconcile leaves an object it does not know alone after the object was made (work making it may not have recorded it yet).")
    var orphanGracePeriod: Double = 300
    @Option(name: .customLong("s3-credentials-dir"), help: ArgumentHelp("Directory with files AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN (a mounted Secret): the API reads dump headers with them. They win over the environment.", valueName: "path"))
    var s3CredentialsDir: String?

    // Single sign-on (docs/sso.md).
    @Option(name: .customLong("oidc-issuer"), help: ArgumentHelp("OpenID Connect issuer whose ID tokens are bearer credentials too (single sign-on), exactly as its tokens' iss.", valueName: "url"))
    var oidcIssuer: String?
    @Option(name: .customLong("oidc-client-id"), help: ArgumentHelp("Client id DevDB is registered under at the issuer; ID tokens must name it in aud.", valueName: "id"))
    var oidcClientID: String?
    @Option(name: .customLong("oidc-client-secret-file"), help: ArgumentHelp("File holding the client secret (mode 0600; never on the command line).", valueName: "path"))
    var oidcClientSecretFile: String?
    @Option(name: .customLong("oidc-user-claim"), help: "The claim that names a user: email, preferred_username or sub.") var oidcUserClaim = "email"
    @Option(name: .customLong("oidc-admin-group"), help: ArgumentHelp("Members of this group (the groups claim) are admins.", valueName: "group"))
    var oidcAdminGroup: String?
    @Option(name: .customLong("console-url"), help: ArgumentHelp("The web console's public address, e.g. https://devdb.example.com: the single sign-on callback (<url>/sign-in/sso/callback) is built from it, not from the request's Host.", valueName: "url"))
    var consoleURL: String?

    // The audit log (docs/teams.md).
    @Option(name: .customLong("audit-max-entries"), help: "Audit log entries kept (about; the oldest go first).") var auditMaxEntries = 100_000
    @Option(name: .customLong("audit-max-age"), help: ArgumentHelp("How long audit log entries are kept.", valueName: "duration")) var auditMaxAge = "90d"

    static let environmentOptions = EnvironmentOptions(
        prefix: "DEVDB_API_",
        names: ["listen", "redis", "redis-password-file", "provisioner", "data-dir", "db-domain", "router-host", "router-port", "admin-token-file",
                "port-range", "reap-interval", "log-level", "reconcile-interval", "kubeconfig", "kube-context", "namespace", "instance",
                "restore-volume-size", "restore-service-account", "postgres-uid", "postgres-bin-dir", "postgres-image-template", "postgres-image", "tools-image", "postgres-image-pull-policy",
                "image-pull-secret", "shm-size", "unschedulable-timeout", "image-pull-policy", "storage-class", "snapshot-class", "volume-size",
                "db-cpu-request", "db-memory-request", "db-cpu-limit", "db-memory-limit", "s3-secret", "restore-jobs", "cluster-domain",
                "bind-timeout", "ready-timeout", "restore-timeout", "snapshot-timeout", "poll-interval", "transient-pod-error-timeout",
                "restore-cpu-request", "restore-memory-request", "restore-cpu-limit", "restore-memory-limit", "pod-annotations",
                "restore-pod-annotations", "s3-credentials-dir", "orphan-grace-period",
                "refresh-check-interval", "hibernate-after", "max-snapshots", "max-ttl",
                "oidc-issuer", "oidc-client-id", "oidc-client-secret-file", "oidc-user-claim", "oidc-admin-group", "console-url",
                "audit-max-entries", "audit-max-age"],
        repeatable: ["postgres-bin-dir", "postgres-image", "image-pull-secret"], flags: ["allow-private-dump-hosts"])

    func makeConfiguration() throws -> APIConfiguration {
        var c = APIConfiguration()
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
            throw ValidationError("--listen must be HOST:PORT, not \"\(listen)\"")
        }
        c.host = String(listen[..<colon])
        c.port = port
        do { c.redis = try RedisURL(parsing: redis) } catch { throw ValidationError(error.description) }
        if let redisPasswordFile {
            do { try c.redis.readPassword(fromFile: redisPasswordFile) } catch { throw ValidationError(error.description) }
        }
        guard ["local", "kubernetes", "stand-in"].contains(provisioner) else {
            throw ValidationError("--provisioner must be local or kubernetes, not \"\(provisioner)\"")
        }
        c.provisioner = provisioner
        if provisioner == "stand-in" {
            guard let text = standInBackend, let colon = text.lastIndex(of: ":"), let p = Int(text[text.index(after: colon)...]), (1...65535).contains(p) else {
                throw ValidationError("--provisioner stand-in (for bench/scale) needs --stand-in-backend HOST:PORT, the idle server every route names")
            }
            c.standInBackend = (String(text[..<colon]), p)
        }
        c.reconcileIntervalSeconds = reconcileInterval
        c.allowPrivateDumpHosts = allowPrivateDumpHosts
        c.maxSnapshotsPerDatabase = maxSnapshots
        guard let maxTTLSeconds = DurationText.seconds(maxTTL), maxTTLSeconds > 0 else {
            throw ValidationError("invalid --max-ttl \"\(maxTTL)\": use a duration such as 30d")
        }
        c.maxTTLSeconds = maxTTLSeconds
        guard let auditAge = DurationText.seconds(auditMaxAge), auditAge > 0, auditMaxEntries > 0 else {
            throw ValidationError("invalid --audit-max-age \"\(auditMaxAge)\" or --audit-max-entries \(auditMaxEntries): use a duration such as 90d and a positive count")
        }
        c.audit.maxEntries = auditMaxEntries
        c.audit.maxAgeSeconds = auditAge
        guard let refresh = DurationText.seconds(refreshCheckInterval) else {
            throw ValidationError("invalid --refresh-check-interval \"\(refreshCheckInterval)\": use a number and s, m or h, e.g. 5m")
        }
        c.refreshCheckIntervalSeconds = refresh
        guard let sleep = hibernateAfter == "0" ? 0 : DurationText.seconds(hibernateAfter) else {
            throw ValidationError("invalid --hibernate-after \"\(hibernateAfter)\": use a duration such as 30m, or 0 to never hibernate")
        }
        c.hibernateAfterSeconds = sleep
        c.kubeconfig = kubeconfig
        c.kubeContext = kubeContext
        c.namespace = namespace
        var k = KubernetesSettings()
        guard DatabaseName.isValid(instance), instance.count <= 30, instance.first!.isLetter else {
            throw ValidationError("--instance must be a DNS label of at most 30 characters starting with a letter, not \"\(instance)\"")
        }
        for (flag, policy) in [("--image-pull-policy", imagePullPolicy), ("--postgres-image-pull-policy", postgresImagePullPolicy)] {
            guard ["Always", "IfNotPresent", "Never"].contains(policy) else { throw ValidationError("\(flag) must be Always, IfNotPresent or Never") }
        }
        guard Quantity.bytes(shmSize) != nil else { throw ValidationError("--shm-size must be a quantity such as 256Mi") }
        k.postgresImagePullPolicy = postgresImagePullPolicy
        k.imagePullSecrets = imagePullSecret.flatMap { $0.split(separator: ",").map(String.init) }.filter { !$0.isEmpty }
        k.shmSize = shmSize
        if postgresUID == "none" { k.postgresUID = nil } else {
            guard let uid = Int(postgresUID), uid > 0 else { throw ValidationError("--postgres-uid must be a uid such as 999, or none") }
            k.postgresUID = uid
        }
        k.restoreServiceAccount = restoreServiceAccount.flatMap { $0.isEmpty ? nil : $0 }
        if let r = restoreVolumeSize, !r.isEmpty {
            guard Quantity.bytes(r) != nil else { throw ValidationError("--restore-volume-size must be a quantity such as 50Gi") }
            k.restoreVolumeSize = r
        }
        k.unschedulableTimeout = unschedulableTimeout
        guard restoreJobs >= 1 else { throw ValidationError("--restore-jobs must be at least 1") }
        k.instance = instance
        guard postgresImageTemplate.contains("{major}") else {
            throw ValidationError("--postgres-image-template must contain {major}, e.g. postgres:{major}-bookworm")
        }
        k.postgresImageTemplate = postgresImageTemplate
        for entry in postgresImage.flatMap({ $0.split(separator: ",").map(String.init) }) {
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let major = Int(parts[0]), !parts[1].isEmpty else {
                throw ValidationError("--postgres-image \"\(entry)\": expected MAJOR=IMAGE, e.g. 17=registry.example.com/postgres:17")
            }
            k.postgresImages[major] = parts[1]
        }
        do { c.postgresBinDirectories = try PostgresInstallations.parse(postgresBinDir) } catch { throw ValidationError("\(error)") }
        k.toolsImage = toolsImage
        k.imagePullPolicy = imagePullPolicy
        k.storageClass = storageClass.flatMap { $0.isEmpty ? nil : $0 }
        k.snapshotClass = snapshotClass.flatMap { $0.isEmpty ? nil : $0 }
        k.volumeSize = volumeSize
        (k.cpuRequest, k.memoryRequest, k.cpuLimit, k.memoryLimit) = (dbCPURequest, dbMemoryRequest, dbCPULimit, dbMemoryLimit)
        k.s3SecretName = s3Secret.flatMap { $0.isEmpty ? nil : $0 }
        k.s3Region = c.s3.region
        k.s3Endpoint = c.s3.endpoint
        k.restoreJobs = restoreJobs
        k.clusterDomain = clusterDomain
        (k.bindTimeout, k.readyTimeout, k.restoreTimeout, k.snapshotTimeout, k.pollInterval) = (bindTimeout, readyTimeout, restoreTimeout, snapshotTimeout, pollInterval)
        k.transientPodErrorTimeout = transientPodErrorTimeout
        guard orphanGracePeriod >= 0 else { throw ValidationError("--orphan-grace-period must be 0 or more seconds") }
        k.orphanGracePeriod = orphanGracePeriod
        (k.restoreCPURequest, k.restoreMemoryRequest, k.restoreCPULimit, k.restoreMemoryLimit) = (restoreCPURequest, restoreMemoryRequest, restoreCPULimit, restoreMemoryLimit)
        for (flag, text) in [("--pod-annotations", podAnnotations), ("--restore-pod-annotations", restorePodAnnotations)] {
            guard let text else { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data((text.isEmpty ? "{}" : text).utf8)) as? [String: Any],
                  let map = object as? [String: String] else {
                throw ValidationError("\(flag) must be a JSON object of strings, e.g. {\"sidecar.istio.io/inject\":\"false\"}")
            }
            if flag == "--pod-annotations" { k.podAnnotations = map } else { k.restorePodAnnotations = map }
        }
        c.kubernetes = k
        if let dir = s3CredentialsDir {
            // Files of a mounted Secret, never environment variables: the API reads dump headers with them.
            var environment = ProcessInfo.processInfo.environment
            var found = false
            for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
                if let value = try? String(contentsOfFile: "\(dir)/\(key)", encoding: .utf8) {
                    environment[key] = value.trimmingCharacters(in: .whitespacesAndNewlines)
                    found = found || key == "AWS_ACCESS_KEY_ID"
                }
            }
            guard found else { throw ValidationError("--s3-credentials-dir \(dir) has no file AWS_ACCESS_KEY_ID: mount the S3 Secret there (its keys become files)") }
            c.s3 = S3Settings.fromEnvironment(environment)
        }
        c.dataDirectory = URL(fileURLWithPath: dataDir)
        c.dbDomain = dbDomain.lowercased()
        c.routerHost = routerHost
        c.routerPort = routerPort
        if let adminTokenFile {
            guard let t = try? String(contentsOfFile: adminTokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty else {
                throw ValidationError("cannot read an admin token from \(adminTokenFile)")
            }
            c.adminToken = t
        } else if let t = ProcessInfo.processInfo.environment["DEVDB_ADMIN_TOKEN"], !t.isEmpty {
            c.adminToken = t
        }
        let parts = portRange.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] > 0, parts[0] <= parts[1], parts[1] < 65536 else {
            throw ValidationError("--port-range must be FIRST-LAST, e.g. 16000-16999")
        }
        c.portRange = parts[0]...parts[1]
        c.reapIntervalSeconds = reapInterval
        c.oidc = try makeOIDCSettings()
        return c
    }

    /// --oidc-*: nil without --oidc-issuer; the others without it are an error.
    func makeOIDCSettings() throws -> OIDCSettings? {
        guard let issuer = oidcIssuer, !issuer.isEmpty else {
            if oidcClientID != nil || oidcClientSecretFile != nil || oidcAdminGroup != nil || consoleURL != nil {
                throw ValidationError("--oidc-client-id, --oidc-client-secret-file, --oidc-admin-group and --console-url need --oidc-issuer (DEVDB_API_OIDC_ISSUER)")
            }
            return nil
        }
        guard let url = URL(string: issuer), let scheme = url.scheme, ["https", "http"].contains(scheme), url.host != nil else {
            throw ValidationError("--oidc-issuer must be the issuer's URL, e.g. https://accounts.google.com, not \"\(issuer)\"")
        }
        if !OIDCSettings.isSecure(url) {
            throw ValidationError("--oidc-issuer must use https (plain http only on loopback, for tests), not \"\(issuer)\"")
        }
        guard let clientID = oidcClientID, !clientID.isEmpty else {
            throw ValidationError("--oidc-issuer needs --oidc-client-id (DEVDB_API_OIDC_CLIENT_ID): the client id DevDB is registered under at the issuer")
        }
        guard let claim = OIDCSettings.UserClaim(rawValue: oidcUserClaim) else {
            throw ValidationError("--oidc-user-claim must be email, preferred_username or sub, not \"\(oidcUserClaim)\"")
        }
        var s = OIDCSettings(issuer: issuer, clientID: clientID)
        s.userClaim = claim
        s.adminGroup = oidcAdminGroup.flatMap { $0.isEmpty ? nil : $0 }
        if let consoleURL, !consoleURL.isEmpty {
            let trimmed = consoleURL.hasSuffix("/") ? String(consoleURL.dropLast()) : consoleURL
            guard let url = URL(string: trimmed), let scheme = url.scheme, ["https", "http"].contains(scheme), url.host != nil,
                  url.path.isEmpty, url.query == nil, url.fragment == nil else {
                throw ValidationError("--console-url must be the console's address without a path, e.g. https://devdb.example.com, not \"\(consoleURL)\"")
            }
            // The session cookies are Secure: a browser keeps them only over https (or loopback).
            if !OIDCSettings.isSecure(url) {
                throw ValidationError("--console-url must use https (plain http only on loopback, for tests), not \"\(consoleURL)\"")
            }
            s.consoleURL = trimmed
        }
        if let file = oidcClientSecretFile {
            guard let secret = try? String(contentsOfFile: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !secret.isEmpty else {
                throw ValidationError("cannot read a client secret from --oidc-client-secret-file \(file)")
            }
            // The file itself, not a symlink to it (Kubernetes mounts Secrets as symlinks: set defaultMode 0400).
            let target = URL(fileURLWithPath: file).resolvingSymlinksInPath().path
            if let mode = (try? FileManager.default.attributesOfItem(atPath: target))?[.posixPermissions] as? Int, mode & 0o077 != 0 {
                throw ValidationError("--oidc-client-secret-file \(file) is readable by others (mode \(String(mode, radix: 8))): run chmod 600 \(file)")
            }
            s.clientSecret = secret
        }
        return s
    }

    @Flag(help: ArgumentHelp("Delete every object the API made in its namespace for --instance (database Deployments, Services, Secrets, PVCs, restore Jobs, VolumeSnapshots), wait until they are gone, and exit. For the chart's opt-in pre-delete hook (uninstall.deleteDatabases); the data is lost. Kubernetes provisioner only."))
    var uninstall = false

    func run() async throws {
        let config = try makeConfiguration()
        if uninstall {
            var logger = Logger(label: "devdb-api")
            logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
            let removed = try await uninstallKubernetes(config, logger: logger)
            print(removed.isEmpty ? "nothing to remove" : "removed \(removed.count) objects: \(removed.joined(separator: ", "))")
            return
        }
        try FileManager.default.createDirectory(at: config.dataDirectory, withIntermediateDirectories: true)
        var logger = Logger(label: "devdb-api")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let app = try await buildApplication(config, logger: logger)
        try await app.runService()
    }

    static func main() async {
        let args = environmentOptions.merge(arguments: Array(CommandLine.arguments.dropFirst()),
                                            environment: EnvironmentOptions.processEnvironment)
        do {
            var command = try parseAsRoot(args)
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
