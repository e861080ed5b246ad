import DevDBCatalog
import DevDBProvisioning

/// Chooses the port of a database whose provisioner runs instances on this machine and leases
/// it in the catalog, recorded on the database in the same transaction; the provisioner gets it
/// on the record. A database that has a port (a resumed create, a reset) keeps it: what listens
/// on it may be its own instance left by an interrupted attempt, which the provisioner removes
/// before it starts the new one.
struct PortLeasing {
    let store: any CatalogStore
    let ports: any LocalPorts

    /// `d` with its leased port (and host) set.
    func lease(for d: DatabaseRecord) async throws -> DatabaseRecord {
        var leased = d
        leased.backendPort = try await choose(for: d)
        leased.backendHost = d.backendHost ?? "127.0.0.1"
        return leased
    }

    private func choose(for d: DatabaseRecord) async throws -> Int {
        if let mine = d.backendPort, try await store.claimPort(mine, for: d.name) { return mine }
        let owners = try await store.portOwners()
        for port in ports.portRange where owners[port] == nil && ports.isFree(port) {
            if try await store.claimPort(port, for: d.name) { return port }
        }
        let range = ports.portRange
        throw ProvisioningError(.capacity, "no free port left in \(range.lowerBound)-\(range.upperBound); delete databases or widen --port-range")
    }
}
