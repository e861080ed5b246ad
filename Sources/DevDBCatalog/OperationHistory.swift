import DevDBCore
import Foundation

/// One finished operation of a database (create, reset, snapshot, stop, start, delete): when it
/// ran, how it ended and, when it did not succeed, why. Written by the catalog in the transaction
/// that records the outcome; read for a database's timeline.
public struct OperationRecord: Codable, Sendable, Equatable {
    public enum Outcome: String, Codable, Sendable { case succeeded, failed, cancelled }
    public var id: String
    public var kind: DatabaseRecord.Operation.Kind
    /// The snapshot taken, or the snapshot a reset went back to (`DB@SNAP`).
    public var target: String?
    public var startedAt: Date
    public var finishedAt: Date
    public var outcome: Outcome
    public var reason: String?

    public var seconds: Double { finishedAt.timeIntervalSince(startedAt) }
}

/// The bounded per-database history of finished operations: a list
/// `devdb:database:<name>:history` of at most `maxEntries` JSON entries, newest last, removed with
/// the database. Pure: it turns a transition into the writes that record what ended.
///
/// A list, not a stream: a Redis stream's first node takes about 4.7 KB for one small entry (it
/// preallocates `stream-node-max-bytes`), which made the history the largest cost per database;
/// a short list is a listpack of what it holds (measured with `bench/scale-run`).
public enum OperationHistory {
    public static let maxEntries = 50
    public static func key(_ database: String) -> String { "devdb:database:\(database):history" }
    /// Where a catalog written before the list kept the history (a stream); deleted with the
    /// database, not read.
    static func legacyKey(_ database: String) -> String { "devdb:database:\(database):operations" }

    /// The writes recording the operation `before` ran, if this transition ended it (the record's
    /// operation is gone or replaced by another). Stamps the start of a new operation on `after`.
    static func record(before d: DatabaseRecord, after next: inout DatabaseRecord?, event: DatabaseLifecycle.Event,
                       effects: [DatabaseLifecycle.Effect], now: Date = Date()) -> [RedisWrite] {
        if let op = next?.operation, op.id != d.operation?.id { next?.operation?.startedAt = now }
        guard let op = d.operation, next?.operation?.id != op.id, next != nil else { return [] }
        var outcome = OperationRecord.Outcome.succeeded, reason: String?
        switch event {
        case .failed(_, let why), .snapshotFailed(_, let why, _): outcome = .failed; reason = why
        case .keptAwake: outcome = .cancelled; reason = "a session was still open, so it stayed awake"
        default:
            for case .finishSnapshot(_, nil, let why) in effects { outcome = .failed; reason = why ?? "the snapshot failed" }
        }
        let started = op.startedAt ?? (op.kind == .create ? d.createdAt : d.phaseStartedAt ?? now)
        let entry = OperationRecord(id: op.id, kind: op.kind, target: op.target, startedAt: started, finishedAt: now,
                                    outcome: outcome, reason: reason)
        return [.listAppend(key(d.name), CatalogEngine.encode(entry)), .listKeepLast(key(d.name), count: maxEntries)]
    }
}

extension CatalogEngine {
    /// The database's finished operations, newest first, at most `limit`.
    func operations(of name: String, limit: Int) throws -> [OperationRecord] {
        let rows = try backend.list(OperationHistory.key(name)).suffix(max(1, limit)).reversed()
        return rows.compactMap { try? Self.decode(OperationRecord.self, $0, key: OperationHistory.key(name)) }
    }

    /// Deletes every legacy history stream, a thousand keys a transaction.
    func removeLegacyOperationStreams() throws -> Int {
        let keys = try backend.scan(OperationHistory.legacyKey("*"))
        for chunk in keys.chunks(of: 1000) { _ = try commit(Transaction(writes: [.delete(Array(chunk))])) }
        return keys.count
    }
}

extension CatalogEngineStore {
    public func operations(of name: String, limit: Int) async throws -> [OperationRecord] {
        try await perform { try $0.operations(of: name, limit: limit) }
    }
}
