import Synchronization

/// Records decoded from the text they were read as, for a pass that reads thousands of records
/// every few seconds (the hibernator's ready set, reconcile's whole catalog): a record whose text
/// has not changed since that pass's last read is not decoded again. It holds what the last read
/// held, no more. Safe because a record's text is its whole value: any change gives new text.
final class DecodedRecords: Sendable {
    /// The last read's records by their text (protected by the mutex).
    private let last = Mutex<[String: DatabaseRecord]>([:])

    /// `texts` (key, text) decoded, in order, reusing what the previous call decoded from the
    /// same text; then remembers exactly these.
    func decode(_ texts: [(key: String, text: String)]) throws -> [DatabaseRecord] {
        let previous = last.withLock { $0 }
        var now: [String: DatabaseRecord] = [:]
        now.reserveCapacity(texts.count)
        var out: [DatabaseRecord] = []
        out.reserveCapacity(texts.count)
        for (key, text) in texts {
            let d = try previous[text] ?? CatalogEngine.decode(DatabaseRecord.self, text, key: key)
            now[text] = d
            out.append(d)
        }
        last.withLock { $0 = now }
        return out
    }
}
