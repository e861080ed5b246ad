import DevDBCatalog
import Foundation
import COpenSSL

/// Builds the manifests the provisioner sends. Pure: the tests compare them field by field.
public struct KubeManifests: Sendable {
    public let settings: KubernetesSettings
    public let namespace: String

    public init(settings: KubernetesSettings, namespace: String) {
        self.settings = settings; self.namespace = namespace
    }

    public static let dataMount = "/var/lib/postgresql/data"
    public static let pgdata = "/var/lib/postgresql/data/pgdata"
    static let postgresUID = 999

    // MARK: names

    public func databaseObject(_ name: String) -> String { KubeNames.object(settings.instance, "db", name) }
    public func generationObject(_ g: Generation) -> String { KubeNames.object(settings.instance, "gen", "\(g.project)-\(g.number)") }
    public func snapshotObject(_ s: SnapshotRecord) -> String {
        KubeNames.object(settings.instance, "snap", "\(s.database)-\(s.name)-\(KubeNames.shortHash(s.reference))")
    }
    /// The restore Job of a volume: `<volume>-restore`, shortened with a hash when too long.
    public func restoreJobName(_ volume: String) -> String {
        if volume.count + 8 <= 63 { return "\(volume)-restore" }
        return "\(volume.prefix(45))-\(KubeNames.shortHash(volume))-restore"
    }
    public func serviceHost(_ name: String) -> String { "\(databaseObject(name)).\(namespace).svc.\(settings.clusterDomain)" }

    // MARK: labels

    func baseLabels(component: String) -> [String: String] {
        var labels = ["app.kubernetes.io/name": "devdb", "app.kubernetes.io/instance": settings.instance,
                      "app.kubernetes.io/component": component, "app.kubernetes.io/managed-by": KubeNames.managedBy,
                      "app.kubernetes.io/part-of": "devdb"]
        if let id = settings.installation { labels[KubeNames.installationLabel] = KubeNames.labelValue(id) }
        return labels
    }

    /// Whether an object was made by this installation (see `KubernetesSettings.installation`).
    public func isOurs(_ object: JSONValue) -> Bool {
        guard let id = settings.installation else { return true }
        guard let theirs = object.at("metadata.labels")[KubeNames.installationLabel].string else { return settings.adoptUnlabelled }
        return theirs == KubeNames.labelValue(id)
    }
    public func databaseLabels(_ d: DatabaseRecord) -> [String: String] {
        baseLabels(component: "database").merging([
            KubeNames.projectLabel: KubeNames.labelValue(d.project), KubeNames.databaseLabel: KubeNames.labelValue(d.name),
            KubeNames.ownerLabel: KubeNames.labelValue(d.owner)]) { $1 }
    }
    /// What the Deployment selects and the Service targets.
    public func databaseSelector(_ name: String) -> [String: String] {
        ["app.kubernetes.io/instance": settings.instance, "app.kubernetes.io/component": "database",
         KubeNames.databaseLabel: KubeNames.labelValue(name)]
    }
    public func generationLabels(_ g: Generation) -> [String: String] {
        baseLabels(component: "generation").merging([
            KubeNames.projectLabel: KubeNames.labelValue(g.project), KubeNames.generationLabel: String(g.number)]) { $1 }
    }
    public func snapshotLabels(_ s: SnapshotRecord) -> [String: String] {
        baseLabels(component: "snapshot").merging([
            KubeNames.projectLabel: KubeNames.labelValue(s.project), KubeNames.ownerLabel: KubeNames.labelValue(s.owner),
            KubeNames.snapshotOfLabel: KubeNames.labelValue(s.database), KubeNames.snapshotLabel: KubeNames.labelValue(s.name)]) { $1 }
    }
    /// Selects everything this installation manages.
    public var managedSelector: String {
        "app.kubernetes.io/managed-by=\(KubeNames.managedBy),app.kubernetes.io/instance=\(settings.instance)"
    }

    func metadata(_ name: String, _ labels: [String: String], owner: JSONValue? = nil) -> JSONValue {
        var m: JSONValue = ["name": .string(name), "namespace": .string(namespace), "labels": JSONValue(labels)]
        if let owner {
            // No blockOwnerDeletion: setting it needs `update` on the owner's finalizers, which
            // OpenShift's OwnerReferencesPermissionEnforcement checks; DevDB deletes in order itself.
            m["ownerReferences"] = [[
                "apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner.at("metadata.name"),
                "uid": owner.at("metadata.uid"),
            ]]
        }
        return m
    }

    // MARK: objects

    /// The database's credentials; it owns the database's other objects, so deleting it cascades.
    public func secret(_ d: DatabaseRecord) -> JSONValue {
        ["apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": metadata(databaseObject(d.name), databaseLabels(d)),
         "stringData": ["username": .string(d.user), "password": .string(d.password), "database": .string(d.database)]]
    }

    /// `size`: at least the snapshot's restoreSize when made from one (default: the volume size).
    public func volumeClaim(name: String, labels: [String: String], snapshot: String?, owner: JSONValue?, size: String? = nil) -> JSONValue {
        var spec: JSONValue = ["accessModes": ["ReadWriteOnce"], "resources": ["requests": ["storage": .string(size ?? settings.volumeSize)]]]
        if let sc = settings.storageClass, !sc.isEmpty { spec["storageClassName"] = .string(sc) }
        if let snapshot {
            spec["dataSource"] = ["apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": .string(snapshot)]
        }
        return ["apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata(name, labels, owner: owner), "spec": spec]
    }

    /// A restore's volume holds the dump, the restored database and up to max_wal_size (4 GB in
    /// the restore script) of WAL: at least the database volume size, else about the dump
    /// five times over (restored data is commonly 2-5x a compressed dump) plus the WAL, or the
    /// previous generation's restored size plus the dump, whichever is larger. Rounded up to GiB.
    public func restoreVolumeSize(dumpBytes: Int64?, previousRestored: String?) -> String {
        if let fixed = settings.restoreVolumeSize { return fixed }
        let gib = Double(1 << 30)
        var bytes = Quantity.bytes(settings.volumeSize) ?? 10 * gib
        if let dump = dumpBytes.map(Double.init) {
            bytes = max(bytes, dump * 6 + 4 * gib)
            if let previous = previousRestored.flatMap(Quantity.bytes) { bytes = max(bytes, previous * 1.2 + dump) }
        }
        return "\(Int((bytes / gib).rounded(.up)))Gi"
    }

    public func volumeSnapshot(name: String, labels: [String: String], claim: String) -> JSONValue {
        ["apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": metadata(name, labels),
         "spec": ["volumeSnapshotClassName": .string(settings.snapshotClass ?? ""), "source": ["persistentVolumeClaimName": .string(claim)]]]
    }

    var podSecurityContext: JSONValue {
        guard let uid = settings.postgresUID else {
            // The platform assigns uids (OpenShift): nothing fixed.
            return ["runAsNonRoot": true, "seccompProfile": ["type": "RuntimeDefault"]]
        }
        return ["runAsNonRoot": true, "runAsUser": JSONValue(uid), "runAsGroup": JSONValue(uid),
                "fsGroup": JSONValue(uid), "fsGroupChangePolicy": "OnRootMismatch", "seccompProfile": ["type": "RuntimeDefault"]]
    }
    var containerSecurityContext: JSONValue {
        ["allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": ["drop": ["ALL"]]]
    }
    var resources: JSONValue {
        ["requests": ["cpu": .string(settings.cpuRequest), "memory": .string(settings.memoryRequest)],
         "limits": ["cpu": .string(settings.cpuLimit), "memory": .string(settings.memoryLimit)]]
    }
    var restoreResources: JSONValue {
        ["requests": ["cpu": .string(settings.restoreCPURequest), "memory": .string(settings.restoreMemoryRequest)],
         "limits": ["cpu": .string(settings.restoreCPULimit), "memory": .string(settings.restoreMemoryLimit)]]
    }
    /// A pod template's metadata: its labels and (when any) annotations.
    func podMetadata(_ labels: [String: String], restore: Bool) -> JSONValue {
        var m: JSONValue = ["labels": JSONValue(labels)]
        let annotations = restore ? settings.podAnnotations.merging(settings.restorePodAnnotations) { $1 } : settings.podAnnotations
        if !annotations.isEmpty { m["annotations"] = JSONValue(annotations) }
        return m
    }
    var scratchVolumes: [JSONValue] {
        [["name": "tmp", "emptyDir": [:]], ["name": "run", "emptyDir": [:]],
         ["name": "shm", "emptyDir": ["medium": "Memory", "sizeLimit": .string(settings.shmSize)]]]
    }
    var scratchMounts: [JSONValue] {
        [["name": "tmp", "mountPath": "/tmp"], ["name": "run", "mountPath": "/var/run/postgresql"], ["name": "shm", "mountPath": "/dev/shm"]]
    }
    /// The restore pod's service account, when one is configured (its token is projected by
    /// the IRSA or Pod Identity webhook, not mounted by Kubernetes).
    func withRestoreServiceAccount(_ spec: JSONValue) -> JSONValue {
        guard let sa = settings.restoreServiceAccount, !sa.isEmpty else { return spec }
        var spec = spec
        spec["serviceAccountName"] = .string(sa)
        return spec
    }

    /// `imagePullSecrets` of a pod spec (absent when none are configured).
    func withPullSecrets(_ spec: JSONValue) -> JSONValue {
        guard !settings.imagePullSecrets.isEmpty else { return spec }
        var spec = spec
        spec["imagePullSecrets"] = .array(settings.imagePullSecrets.map { ["name": .string($0)] })
        return spec
    }
    func postgresContainer(name: String, major: Int, script: String, extraMounts: [JSONValue] = [], restore: Bool = false) -> JSONValue {
        ["name": .string(name), "image": .string(settings.postgresImage(major: major)), "imagePullPolicy": .string(settings.postgresImagePullPolicy),
         "command": ["/bin/sh", "-ec", .string(script)],
         "env": [["name": "PGDATA", "value": .string(Self.pgdata)]],
         "securityContext": containerSecurityContext, "resources": restore ? restoreResources : resources,
         "terminationMessagePolicy": "FallbackToLogsOnError",
         "volumeMounts": .array([["name": "data", "mountPath": .string(Self.dataMount)]] + scratchMounts + extraMounts)]
    }

    /// The restore: fetch the dump onto the volume (DevDB's image), then initdb, pg_restore -j,
    /// ANALYZE and a clean shutdown (the Postgres image). Owned by the volume it fills.
    /// `major`: the generation's PostgreSQL major (its image restores the dump).
    public func restoreJob(name: String, claim: String, labels: [String: String], project: Project, major: Int, owner: JSONValue?) -> JSONValue {
        // Where the dump lives is plain configuration; the S3 credentials are a mounted Secret
        // (files the fetch step reads), never environment variables.
        var fetchEnv: [JSONValue] = []
        if let r = settings.s3Region { fetchEnv.append(["name": "AWS_REGION", "value": .string(r)]) }
        if let e = settings.s3Endpoint { fetchEnv.append(["name": "AWS_ENDPOINT_URL_S3", "value": .string(e)]) }
        var command: [JSONValue] = ["devdb-fetch-dump", "--url", .string(project.dumpUrl), "--out", .string("\(Self.dataMount)/devdb-restore.dump")]
        if settings.allowPrivateDumpHosts { command.append("--allow-private-hosts") }
        var fetchMounts: [JSONValue] = [["name": "data", "mountPath": .string(Self.dataMount)], ["name": "tmp", "mountPath": "/tmp"]]
        var volumes: [JSONValue] = [["name": "data", "persistentVolumeClaim": ["claimName": .string(claim)]]] + scratchVolumes
        if let s3 = settings.s3SecretName, !s3.isEmpty {
            command += ["--credentials-dir", "/etc/devdb/s3"]
            fetchMounts.append(["name": "s3-credentials", "mountPath": "/etc/devdb/s3", "readOnly": true])
            volumes.append(["name": "s3-credentials", "secret": ["secretName": .string(s3), "defaultMode": 0o440]])
        }
        let fetch: JSONValue = [
            "name": "fetch", "image": .string(settings.toolsImage), "imagePullPolicy": .string(settings.imagePullPolicy),
            "command": .array(command),
            "env": .array(fetchEnv), "securityContext": containerSecurityContext, "resources": restoreResources,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": .array(fetchMounts),
        ]
        var restore = postgresContainer(name: "restore", major: major, script: Self.restoreScript(jobs: settings.restoreJobs), restore: true)
        if project.afterRestoreSql?.isEmpty == false {
            // The masking SQL (it may hold salts) is a Secret the restore step reads as a file.
            restore["volumeMounts"] = .array(restore["volumeMounts"].array + [["name": "after-restore", "mountPath": .string(Self.afterRestoreMount), "readOnly": true]])
            volumes.append(["name": "after-restore", "secret": ["secretName": .string(afterRestoreSecretName(name)), "defaultMode": 0o440]])
        }
        return ["apiVersion": "batch/v1", "kind": "Job", "metadata": metadata(name, labels, owner: owner),
                "spec": [
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": JSONValue(Int(settings.restoreTimeout)),
                    "template": [
                        "metadata": podMetadata(labels, restore: true),
                        "spec": withPullSecrets(withRestoreServiceAccount([
                            "restartPolicy": "Never", "automountServiceAccountToken": false, "enableServiceLinks": false,
                            "securityContext": podSecurityContext,
                            "initContainers": [fetch], "containers": [restore],
                            "volumes": .array(volumes),
                        ])),
                    ],
                ]]
    }

    public static let afterRestoreMount = "/etc/devdb/after-restore"
    /// The Secret holding a project's after-restore SQL for one restore Job.
    public func afterRestoreSecretName(_ job: String) -> String { job.count + 4 <= 63 ? "\(job)-sql" : "\(job.prefix(50))-\(KubeNames.shortHash(job))-sql" }

    public func afterRestoreSecret(job: String, labels: [String: String], sql: String, owner: JSONValue?) -> JSONValue {
        ["apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata(afterRestoreSecretName(job), labels, owner: owner),
         "stringData": ["after-restore.sql": .string(sql)]]
    }

    /// The scripts the containers run. In a pod the DEVDB_* variables are unset and the defaults
    /// (the mounts above) apply; the tests run the same scripts against PostgreSQL 15 with
    /// temporary directories in their place.
    public static func restoreScript(jobs: Int) -> String {
        """
        DATA="${DEVDB_DATA:-\(dataMount)}"; SOCKETS="${DEVDB_SOCKETS:-/tmp}"
        rm -rf "$PGDATA"
        initdb -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8
        printf 'local all postgres trust\\nhost all all 0.0.0.0/0 scram-sha-256\\nhost all all ::/0 scram-sha-256\\n' > "$PGDATA/pg_hba.conf"
        pg_ctl -D "$PGDATA" -w -t 300 -o "-c listen_addresses='' -k $SOCKETS -c fsync=off -c full_page_writes=off -c maintenance_work_mem=256MB -c max_wal_size=4GB" start
        # Whatever fails below, Postgres does not outlive the script (after the clean stop at the end this does nothing).
        trap 'pg_ctl -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true' EXIT
        psql -X -v ON_ERROR_STOP=1 -h "$SOCKETS" -U postgres -d postgres -c 'CREATE ROLE \(LocalProvisioner.appUser) LOGIN' -c 'CREATE DATABASE \(LocalProvisioner.appDatabase) OWNER \(LocalProvisioner.appUser)'
        DUMP="$DATA/devdb-restore.dump"
        RESTORE="pg_restore -h $SOCKETS -U postgres -d \(LocalProvisioner.appDatabase) --no-owner --no-privileges --role=\(LocalProvisioner.appUser)"
        PSQL="psql -X -q -v ON_ERROR_STOP=1 -h $SOCKETS -U postgres -d \(LocalProvisioner.appDatabase)"
        # The format devdb-fetch-dump read from the dump's bytes.
        case "$(cat "$DUMP.format" 2>/dev/null || echo custom)" in
            custom) $RESTORE -j \(jobs) "$DUMP" ;;
            tar) $RESTORE "$DUMP" ;;
            directory-tar)
                mkdir -p "$DATA/devdb-restore.d"
                tar -xf "$DUMP" -C "$DATA/devdb-restore.d"
                $RESTORE -j \(jobs) "$(dirname "$(find "$DATA/devdb-restore.d" -name toc.dat | head -n 1)")"
                rm -rf "$DATA/devdb-restore.d" ;;
            plain) $PSQL -f "$DUMP" ;;
            plain-gzip) gzip -dc < "$DUMP" | $PSQL ;;
            plain-zstd) command -v zstd >/dev/null || { echo "this Postgres image has no zstd: recompress the dump with gzip, or use an image with zstd" >&2; exit 1; }
                zstd -dcq < "$DUMP" | $PSQL ;;
            *) echo "unknown dump format $(cat "$DUMP.format")" >&2; exit 1 ;;
        esac
        psql -X -v ON_ERROR_STOP=1 -h "$SOCKETS" -U postgres -d \(LocalProvisioner.appDatabase) -c ANALYZE
        SQL="${DEVDB_AFTER_RESTORE:-\(afterRestoreMount)/after-restore.sql}"
        if [ -f "$SQL" ]; then
            psql -X -q -v ON_ERROR_STOP=1 -h "$SOCKETS" -U postgres -d \(LocalProvisioner.appDatabase) -c 'SET ROLE \(LocalProvisioner.appUser)' -f "$SQL" \
                || { echo "the after-restore SQL failed (see above)" >&2; exit 1; }
        fi
        pg_ctl -D "$PGDATA" -m fast -w stop
        rm -f "$DATA/devdb-restore.dump" "$DATA/devdb-restore.dump.format"
        sync
        """
    }

    /// Sets the database's own password from the mounted Secret (never from env or argv): psql
    /// reads the file itself through a backquoted `\set`.
    public static let setPasswordScript = """
        SOCKETS="${DEVDB_SOCKETS:-/tmp}"; export DEVDB_CREDENTIALS="${DEVDB_CREDENTIALS:-/etc/devdb/credentials}"
        chmod 0700 "$PGDATA"
        rm -f "$PGDATA/postmaster.pid"
        pg_ctl -D "$PGDATA" -w -t 300 -o "-c listen_addresses='' -k $SOCKETS" start
        printf '%s\\n' '\\set pw `cat "$DEVDB_CREDENTIALS/password"`' 'ALTER ROLE \(LocalProvisioner.appUser) PASSWORD :'"'"'pw'"'"';' | psql -X -q -v ON_ERROR_STOP=1 -h "$SOCKETS" -U postgres -d postgres
        pg_ctl -D "$PGDATA" -m fast -w stop
        """

    /// Postgres in the foreground, on every address of the pod.
    public static let postgresScript = """
        exec postgres -D "$PGDATA" -c listen_addresses="${DEVDB_LISTEN:-*}" -c password_encryption=scram-sha-256 -k "${DEVDB_RUN:-/var/run/postgresql}"
        """

    public func deployment(_ d: DatabaseRecord, owner: JSONValue) -> JSONValue {
        let name = databaseObject(d.name)
        let podLabels = databaseLabels(d)
        let credentials: JSONValue = ["name": "credentials", "mountPath": "/etc/devdb/credentials", "readOnly": true]
        let major = d.postgresMajor ?? 15
        let setPassword = postgresContainer(name: "set-password", major: major, script: Self.setPasswordScript, extraMounts: [credentials])
        var postgres = postgresContainer(name: "postgres", major: major, script: Self.postgresScript)
        postgres["ports"] = [["name": "postgres", "containerPort": 5432, "protocol": "TCP"]]
        postgres["readinessProbe"] = [
            "exec": ["command": ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", .string(LocalProvisioner.appUser), "-d", .string(LocalProvisioner.appDatabase)]],
            "initialDelaySeconds": 2, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3]
        // An exec probe, not tcpSocket: some NetworkPolicy implementations (AWS VPC CNI's policy
        // agent up to 1.0.5, kind's before kube-network-policies#160) drop the kubelet's probe
        // connections when ingress is restricted, and the pod would restart every few minutes.
        postgres["livenessProbe"] = [
            "exec": ["command": ["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-U", .string(LocalProvisioner.appUser), "-d", .string(LocalProvisioner.appDatabase)]],
            "initialDelaySeconds": 30, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 6]
        return ["apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(name, podLabels, owner: owner),
                "spec": [
                    "replicas": 1, "strategy": ["type": "Recreate"],
                    "selector": ["matchLabels": JSONValue(databaseSelector(d.name))],
                    "template": [
                        "metadata": podMetadata(podLabels, restore: false),
                        "spec": withPullSecrets([
                            "automountServiceAccountToken": false, "enableServiceLinks": false,
                            "securityContext": podSecurityContext, "terminationGracePeriodSeconds": 30,
                            "initContainers": [setPassword], "containers": [postgres],
                            "volumes": .array([
                                ["name": "data", "persistentVolumeClaim": ["claimName": .string(name)]],
                                ["name": "credentials", "secret": ["secretName": .string(name), "defaultMode": 0o440,
                                                                   "items": [["key": "password", "path": "password"]]]],
                            ] + scratchVolumes),
                        ]),
                    ],
                ]]
    }

    public func service(_ d: DatabaseRecord, owner: JSONValue) -> JSONValue {
        ["apiVersion": "v1", "kind": "Service", "metadata": metadata(databaseObject(d.name), databaseLabels(d), owner: owner),
         "spec": ["type": "ClusterIP", "selector": JSONValue(databaseSelector(d.name)),
                  "ports": [["name": "postgres", "port": 5432, "targetPort": "postgres", "protocol": "TCP"]]]]
    }
}
