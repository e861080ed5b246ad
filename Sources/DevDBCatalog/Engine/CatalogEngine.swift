import DevDBCore
import Foundation

/// The catalog's aggregates over a `CatalogBackend`: reads, decisions (through the pure
/// lifecycles) and the transactions that commit them. Every change that touches several keys is
/// one guarded transaction; when a guard fails (another writer got there first) it reads and
/// decides again (optimistic concurrency). Blocking; the stores choose where it runs.
/// Split by aggregate over the files CatalogEngine+*.swift.
public final class CatalogEngine: Sendable {
    let backend: any CatalogBackend
    /// Snapshots one database may have (the API's --max-snapshots).
    let maxSnapshotsPerDatabase: Int
    /// The hibernator's and reconcile's reads of many records decode only what changed.
    let readyDecoded = DecodedRecords(), allDecoded = DecodedRecords()

    init(backend: any CatalogBackend, maxSnapshotsPerDatabase: Int) {
        self.backend = backend
        self.maxSnapshotsPerDatabase = maxSnapshotsPerDatabase
    }

    typealias Key = CatalogKey

    // MARK: helpers

    static func encode<T: Encodable>(_ value: T) -> String {
        String(decoding: try! CatalogJSON.encoder.encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: T.Type, _ text: String, key: String) throws -> T {
        do { return try CatalogJSON.decoder.decode(T.self, from: Data(text.utf8)) } catch {
            throw CatalogError.corrupt("catalog entry \(key) cannot be read: \(error)")
        }
    }

    func getJSON<T: Decodable>(_ type: T.Type, _ key: String) throws -> T? { try getRaw(T.self, key)?.value }

    /// A value with the exact text it was read as (the guard of a later transaction).
    func getRaw<T: Decodable>(_ type: T.Type, _ key: String) throws -> (value: T, raw: String)? {
        guard let text = try backend.get(key) else { return nil }
        return (try Self.decode(T.self, text, key: key), text)
    }

    func getMany<T: Decodable>(_ type: T.Type, _ keys: [String]) throws -> [T] {
        guard !keys.isEmpty else { return [] }
        var out: [T] = []
        for (k, text) in zip(keys, try backend.getMany(keys)) { if let text { out.append(try Self.decode(T.self, text, key: k)) } }
        return out
    }

    func members(_ key: String) throws -> [String] { try backend.setMembers(key).sorted() }

    func commit(_ t: Transaction) throws -> Bool { try backend.commit(t) }

    /// Reads, decides and commits until the commit lands (another writer changed what was read:
    /// read and decide again).
    func optimistic<T>(_ what: String, _ attempt: () throws -> (Transaction, T)?) throws -> T? {
        for _ in 0..<100 {
            guard let (t, result) = try attempt() else { return nil }
            if try commit(t) { return result }
        }
        throw CatalogError.unavailable("\(what) kept conflicting with concurrent changes; try again")
    }

    func ping() throws { try backend.ping() }

    // MARK: installation

    /// This catalog's installation identity, made on first use (set if absent: APIs starting at
    /// the same time agree on one).
    func installationIdentity() throws -> InstallationIdentity {
        if let existing = try getJSON(InstallationIdentity.self, Key.installation) { return existing }
        let used = try backend.setCount(Key.projects) + backend.setCount(Key.databases) > 0
        let made = InstallationIdentity(id: UUID().uuidString.lowercased(), createdAt: Date(), adoptsUnlabelled: used)
        try backend.setIfAbsent(Key.installation, Self.encode(made))
        guard let stored = try getJSON(InstallationIdentity.self, Key.installation) else {
            throw CatalogError.unavailable("the installation identity could not be stored in the catalog")
        }
        return stored
    }
}
