import DevDBProvisioning

/// The control plane's own refusals of a step (its source gone, failed or deleted meanwhile)
/// at the provisioning error boundary: their words are written for users.
extension ProvisioningFailure: ProvisioningErrorConvertible {
    var provisioningError: ProvisioningError { ProvisioningError(.sourceUnavailable, description) }
}
