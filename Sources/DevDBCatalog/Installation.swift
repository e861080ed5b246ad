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

extension Catalog {
    public static let installationKey = "devdb:installation"

    /// This catalog's installation identity, made on first use (SET NX: APIs starting at the same
    /// time agree on one).
    public func installationIdentity() throws(CatalogError) -> InstallationIdentity {
        if let existing = try getJSON(InstallationIdentity.self, Self.installationKey) { return existing }
        let used = (try cmd(["SCARD", Key.projects]).integer ?? 0) + (try cmd(["SCARD", Key.databases]).integer ?? 0) > 0
        let made = InstallationIdentity(id: UUID().uuidString.lowercased(), createdAt: Date(), adoptsUnlabelled: used)
        _ = try cmd(["SET", Self.installationKey, Self.encode(made), "NX"])
        guard let stored = try getJSON(InstallationIdentity.self, Self.installationKey) else {
            throw .unavailable("the installation identity could not be stored in the catalog")
        }
        return stored
    }
}
