import Foundation

/// Who this installation is: an id kept in the catalog (`devdb:installation`) and put on every
/// object the Kubernetes provisioner makes (label `devdb.io/installation`). A reinstall over a
/// lost catalog gets a new id, so its reconcile can tell the databases the old catalog knew (still
/// holding someone's data) from leftovers of its own, and deletes only its own.
public struct InstallationIdentity: Codable, Sendable, Equatable {
    public var id: String
    public var createdAt: Date
    /// Made over a catalog that already had projects or databases: an upgrade from a version
    /// that did not label objects with an installation, whose unlabelled objects are its own.
    /// A new, empty catalog adopts nothing it did not make.
    public var adoptsUnlabelled: Bool

    public init(id: String, createdAt: Date, adoptsUnlabelled: Bool) {
        self.id = id; self.createdAt = createdAt; self.adoptsUnlabelled = adoptsUnlabelled
    }
}
