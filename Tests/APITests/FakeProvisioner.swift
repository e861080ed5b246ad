import DevDBCatalog
import DevDBProvisioning
import Foundation
import Synchronization

/// A fake `Provisioner` for the in-process API suites: no processes, no files, no network. Every
/// step succeeds at once unless a test switches it to fail or to hang; each call is recorded.
/// (The end-to-end suites in Tests/ControlPlaneTests run the real local provisioner.)
final class FakeProvisioner: Provisioner {
    /// The calls a test can switch.
    enum Step: String, Sendable, CaseIterable {
        case seed, create, reset, snapshot, deleteSnapshot, stop, start, delete, query
    }

    /// How a step behaves.
    enum Behaviour: Sendable {
        case succeed
        /// Throws `FakeProvisioningError(message)`.
        case fail(String)
        /// Waits until `release(_:)` (or the task is cancelled), then succeeds.
        case hang
    }

    private struct State {
        var behaviour: [Step: Behaviour] = [:]
        var released: Set<Step> = []
        var calls: [(Step, String)] = []
        /// What `query` returns: a schema catalog's JSON (DevDBSchema's model), per target label.
        var schemas: [String: String] = [:]
        /// What `recover` reports as another installation's objects.
        var foreign: [String] = []
    }
    private let state = Mutex(State())

    let kind = "fake"
    let availableMajors: [Int]? = [15, 16]

    func set(_ step: Step, _ behaviour: Behaviour) { state.withLock { $0.behaviour[step] = behaviour; $0.released.remove(step) } }
    func release(_ step: Step) { state.withLock { _ = $0.released.insert(step) } }
    /// The subjects (database, snapshot or project names) of the calls of `step`, in order.
    func calls(_ step: Step) -> [String] { state.withLock { $0.calls.filter { $0.0 == step }.map(\.1) } }
    func setForeign(_ objects: [String]) { state.withLock { $0.foreign = objects } }
    func setSchema(_ json: String, for target: String) { state.withLock { $0.schemas[target] = json } }

    private func step(_ step: Step, _ subject: String) async throws {
        let behaviour = state.withLock { s -> Behaviour in
            s.calls.append((step, subject))
            return s.behaviour[step] ?? .succeed
        }
        switch behaviour {
        case .succeed: return
        case .fail(let message): throw FakeProvisioningError(description: message)
        case .hang:
            while !state.withLock({ $0.released.contains(step) }) {
                try await Task.sleep(for: .milliseconds(10))
            }
        }
    }

    private func instance(_ d: DatabaseRecord) -> InstanceInfo {
        InstanceInfo(host: "127.0.0.1", port: d.backendPort ?? 16000, cloneMethod: "fake")
    }

    func seed(project: Project, generation: Generation, progress: @escaping @Sendable (String, Int64) -> Void) async throws {
        try await step(.seed, project.name)
        progress("restoring", 1024)
    }
    func create(database: DatabaseRecord, from source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        try await step(.create, database.name)
        return instance(database)
    }
    func reset(database: DatabaseRecord, to source: CloneSource, phase: @escaping @Sendable (String) -> Void) async throws -> InstanceInfo {
        try await step(.reset, database.name)
        return instance(database)
    }
    func snapshot(database: DatabaseRecord, as snapshot: SnapshotRecord) async throws -> SnapshotOutcome {
        try await step(.snapshot, "\(database.name)@\(snapshot.name)")
        return SnapshotOutcome(method: "fake", sizeBytes: 1024, unavailableSeconds: 0)
    }
    func deleteSnapshot(_ snapshot: SnapshotRecord) async throws { try await step(.deleteSnapshot, snapshot.reference) }
    func stop(database: DatabaseRecord) async throws { try await step(.stop, database.name) }
    func start(database: DatabaseRecord) async throws -> InstanceInfo {
        try await step(.start, database.name)
        return instance(database)
    }
    func delete(database: DatabaseRecord) async throws { try await step(.delete, database.name) }
    func deleteGeneration(_ generation: Generation) async throws {}
    func query(_ sql: String, on target: QueryTarget) async throws -> String {
        let label: String
        switch target {
        case .database(let d): label = d.name
        case .source(.snapshot(let s)): label = s.reference
        case .source(.generation(let g)): label = "\(g.project)@\(g.number)"
        }
        try await step(.query, label)
        return state.withLock { $0.schemas[label] } ?? "[]"
    }
    func recover(databases: [DatabaseRecord], generations: [Generation], snapshots: [SnapshotRecord]) async throws -> RecoveryReport {
        var report = RecoveryReport()
        report.healthy = databases.filter { $0.state == .ready }.map(\.name)
        report.foreign = state.withLock { $0.foreign }
        return report
    }
}

/// What a `FakeProvisioner` step switched to `.fail` throws: a provisioning error whose message
/// is for users (what a real provisioner throws for the user's own data's problems), so the
/// message reaches the record's `reason` through the error boundary unchanged.
struct FakeProvisioningError: ProvisioningErrorConvertible, CustomStringConvertible {
    let description: String
    var provisioningError: ProvisioningError { ProvisioningError(.restoreFailed, description, detail: "fake provisioner: \(description)") }
}
