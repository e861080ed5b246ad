import Foundation

/// Database listings a page at a time, in name order, reading only the index set that answers
/// the question (an owner's, a project's, both intersected, or everyone's) and only as many
/// records as the page needs: a user's list reads that user's keys, an admin's page reads one
/// page of records however large the installation is.
public struct DatabasePage: Sendable {
    public var records: [DatabaseRecord]
    /// The name to pass as `after` for the next page; nil on the last page.
    public var next: String?
}

extension DatabasePage {
    /// A page of at most `limit` of `records` (read one past the page, to know there is a next).
    init(cutting records: [DatabaseRecord], to limit: Int?) {
        guard let limit, records.count > limit else { self.init(records: records, next: nil); return }
        let page = Array(records.prefix(limit))
        self.init(records: page, next: page.last?.name)
    }
}

extension CatalogEngine {
    /// Records after `after` (exclusive, by name) that `keep` accepts, at most `limit` of them.
    func databasePage(owner: String?, project: String?, after: String?, limit: Int?,
                      where keep: (DatabaseRecord) -> Bool) throws -> DatabasePage {
        // Everyone's databases, a page: names from the name index a chunk at a time (when it is
        // complete; a catalog written before it has it only after reconcile rebuilt it).
        if owner == nil, project == nil, let limit,
           try backend.sortedSetCount(Key.databasesByName) == backend.setCount(Key.databases) {
            return try indexedPage(after: after, limit: limit, where: keep)
        }
        var names: [String]
        switch (owner, project) {
        case let (o?, p?):
            let mine = Set(try members(Key.ownerDatabases(o)))
            names = try members(Key.projectDatabases(p)).filter(mine.contains)
        case let (o?, nil): names = try members(Key.ownerDatabases(o))
        case let (nil, p?): names = try members(Key.projectDatabases(p))
        case (nil, nil): names = try members(Key.databases)
        }
        if let after { names = Array(names[(names.firstIndex { $0 > after } ?? names.endIndex)...]) }
        let wanted = limit.map { $0 + 1 } ?? Int.max  // one more than the page: is there a next?
        var records: [DatabaseRecord] = []
        var start = 0
        let chunk = max(min(limit ?? 500, 500), 50)
        while start < names.count && records.count < wanted {
            let slice = names[start..<min(names.count, start + chunk)]
            start += slice.count
            for d in try getMany(DatabaseRecord.self, slice.map(Key.database)) where keep(d) {
                records.append(d)
                if records.count == wanted { break }
            }
        }
        return DatabasePage(cutting: records, to: limit)
    }

    /// A page of everyone's databases through `devdb:databases:by-name`: reads names after
    /// `after` a chunk at a time and their records, until the page (and one more: is there a next?)
    /// is full; the work is the page's, not the installation's.
    private func indexedPage(after: String?, limit: Int, where keep: (DatabaseRecord) -> Bool) throws -> DatabasePage {
        let wanted = limit + 1
        // A few pages' worth of names a read: a filter (a state) may skip many.
        let chunk = min(max(4 * wanted, 16), 500)
        var records: [DatabaseRecord] = []
        var cursor = after
        while records.count < wanted {
            let names = try backend.sortedSetMembers(Key.databasesByName, after: cursor, count: chunk)
            for d in try getMany(DatabaseRecord.self, names.map(Key.database)) where keep(d) {
                records.append(d)
                if records.count == wanted { break }
            }
            guard names.count == chunk, let last = names.last else { break }
            cursor = last
        }
        return DatabasePage(cutting: records, to: limit)
    }
}
