import DevDBCatalog
import DevDBProvisioning

// The control plane's side of the provisioning error boundary: its own errors, classified.

/// The control plane's own refusals of a step (its source gone, failed or deleted meanwhile):
/// their words are written for users.
extension ProvisioningFailure: ProvisioningErrorConvertible {
    var provisioningError: ProvisioningError { ProvisioningError(.sourceUnavailable, description) }
}

/// A catalog refusal met in the middle of a step says what is missing or taken; Redis away or
/// a damaged record is for the operator.
extension CatalogError: ProvisioningErrorConvertible {
    public var provisioningError: ProvisioningError {
        switch self {
        case .conflict(let m), .notFound(let m): return ProvisioningError(.sourceUnavailable, m)
        case .unavailable: return ProvisioningError(.internal, "DevDB's catalog did not answer; try again shortly", detail: description)
        case .corrupt: return ProvisioningError(.internal, "DevDB failed unexpectedly on the server; an operator finds the cause in devdb-api's log", detail: description)
        }
    }
}
