import DevDBCore

/// The one error that crosses from provisioning to users: a fixed `kind` (a metric and log
/// label), a `userMessage` that is safe to show (no tool output, paths or library errors unless
/// they are the user's own data's problem) and says what to do, and a `detail` for the log.
///
/// Provisioners throw it; the control plane records `userMessage` as a database's or
/// generation's reason and logs `detail` with `kind`. Anything else that reaches the boundary
/// is classified by `init(_:)`: known library errors keep their (user-facing) words, the rest
/// becomes `.internal` with a generic message.
public struct ProvisioningError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What went wrong, as a closed set: the label of the `*_failed` counters and log lines.
    public enum Kind: String, Sendable, CaseIterable {
        /// The dump could not be fetched: not found, denied, no credentials, a private host.
        case dumpUnreachable
        /// What was fetched is not a dump this major can restore.
        case dumpUnreadable
        /// pg_restore, psql or the after-restore SQL failed on the dump's contents.
        case restoreFailed
        /// initdb or pg_ctl could not start or stop a Postgres.
        case postgresStartFailed
        case snapshotFailed
        /// The generation, snapshot or project a step needs is gone or has no data.
        case sourceUnavailable
        /// The instance's files or objects are gone.
        case instanceGone
        /// The Kubernetes API refused or did not answer.
        case clusterUnavailable
        /// Admission refused a pod (ResourceQuota, LimitRange, Pod Security) or no node fits it.
        case quotaExceededInCluster
        case imagePull
        /// A volume did not bind or mount.
        case volumeUnavailable
        case timeout
        /// This installation's settings are wrong (data directory, Postgres installations).
        case misconfigured
        /// No free port, too many temporary instances: try again later or make room.
        case capacity
        case notSupported
        case cancelled
        case `internal`
    }

    public let kind: Kind
    public let userMessage: String
    public let detail: String

    /// `detail` defaults to the user message (when it tells the whole story).
    public init(_ kind: Kind, _ userMessage: String, detail: String? = nil) {
        self.kind = kind
        self.userMessage = userMessage
        self.detail = detail ?? userMessage
    }

    /// What logs print (`"\(error)"`): the detail. What users see is `userMessage`, chosen
    /// explicitly at the boundary.
    public var description: String { detail }

    /// An internal failure of `what`: its cause (tool output, a path, a library's words) goes to
    /// the log only.
    public static func `internal`(_ what: String, detail: String) -> ProvisioningError {
        ProvisioningError(.internal, "\(what) failed on the server; an operator finds the cause in devdb-api's log", detail: detail)
    }

    /// Classifies any error at the boundary.
    public init(_ error: any Error) {
        switch error {
        case let e as ProvisioningError: self = e
        case let e as ProvisioningErrorConvertible: self = e.provisioningError
        case is CancellationError: self = ProvisioningError(.cancelled, "cancelled")
        default: self = ProvisioningError(.internal, "DevDB failed unexpectedly on the server; an operator finds the cause in devdb-api's log", detail: String(describing: error))
        }
    }
}

/// An error that knows which `ProvisioningError` it is.
public protocol ProvisioningErrorConvertible: Error {
    var provisioningError: ProvisioningError { get }
}

extension DumpError: ProvisioningErrorConvertible {
    public var provisioningError: ProvisioningError {
        switch self {
        case .transfer:
            // libcurl's words, a local path or an STS answer: for the log only.
            return ProvisioningError(.dumpUnreachable, "fetching the dump failed: its host did not answer or the transfer broke off; check the dump URL and that its host serves it, then refresh the project",
                                     detail: description)
        case .notADump: return ProvisioningError(.dumpUnreadable, description)
        case .cancelled: return ProvisioningError(.cancelled, description)
        case .unsupportedURL: return ProvisioningError(.notSupported, description)
        case .notFound, .denied, .missingCredentials, .privateHost, .unresolvable: return ProvisioningError(.dumpUnreachable, description)
        }
    }
}

extension DumpInspector.Failure: ProvisioningErrorConvertible {
    public var provisioningError: ProvisioningError { ProvisioningError(.dumpUnreadable, description) }
}

extension MajorRefusal: ProvisioningErrorConvertible {
    public var provisioningError: ProvisioningError { ProvisioningError(.dumpUnreadable, "\(message): \(hint)") }
}

extension SnapshotFailure: ProvisioningErrorConvertible {
    public var provisioningError: ProvisioningError { error }
}

extension KubeError: ProvisioningErrorConvertible {
    public var provisioningError: ProvisioningError {
        switch self {
        case .status(let code, _, let message, _) where code == 403 && message.contains("exceeded quota"):
            return ProvisioningError(.quotaExceededInCluster, "the cluster's ResourceQuota refused it: \(message)", detail: description)
        case .status(let code, _, _, _) where code == 401 || code == 403:
            // Which request and Role: the operator's business; the user learns whom to ask.
            return ProvisioningError(.clusterUnavailable, "DevDB is not allowed to do this in its Kubernetes namespace; ask the operator to check the API's service account and Role (devdb-api's log says which request)",
                                     detail: description)
        default:
            return ProvisioningError(isTransient ? .clusterUnavailable : .internal,
                                     isTransient ? "the Kubernetes API did not answer in time; try again shortly" : "the Kubernetes API refused a request; an operator finds which in devdb-api's log",
                                     detail: description)
        }
    }
}
