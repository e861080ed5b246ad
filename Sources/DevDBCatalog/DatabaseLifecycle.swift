// Over 400 lines on purpose: every event's decision is one case of one pure switch, and the
// state machine is easier to check whole than split across files.
import Foundation
import DevDBCore

/// The lifecycle of one database as a value type: an event and the current record go in, the
/// next record plus what must happen come out. No I/O: the catalog commits the record and the
/// catalog effects in one Redis transaction, then the worker performs the actions.
///
///     create ─▶ provisioning ─▶ restoring ─▶ cloning ─▶ starting ─▶ ready ◀─▶ unavailable
///                    │  (any of these: failure) ─▶ failed                  │
///     reset: ready / unavailable / failed ─▶ cloning ─▶ starting ─▶ ready   │
///     delete: ready / unavailable / failed ─▶ deleting ─▶ (gone)  ◀─────────┘
///     delete during create or reset: queued, runs when that ends
///     sleep: ready ─▶ hibernating ─▶ hibernated ─▶ waking ─▶ ready
///     the hibernator's sleep: ready ─▶ hibernating (route fenced; every router confirms it has
///         no session on it) ─▶ hibernated, or ─▶ ready when one has (keptAwake) or a client waits
///
/// The route exists exactly while the database is `ready` (route state `ready`) or `unavailable`
/// (route state `starting`); the transition that leaves those states removes it.
public enum DatabaseLifecycle {
    public enum Event: Sendable, Equatable {
        // Requests (the API).
        /// `to`: the snapshot to go back to (`DB@SNAP`); nil: the database's generation (or newest).
        case reset(latest: Bool, to: String? = nil)
        case delete
        /// Save the database's state now as snapshot `name`.
        case snapshot(name: String)
        /// Stop it until someone connects: `idle` when the hibernator asks (stopped only once no
        /// router has a session on it), not when a person does (`devdb db stop` ends sessions).
        case hibernate(now: Date, idle: Bool = false)
        /// The hibernator's stop found a session routed to it: it stays awake.
        case keptAwake(operation: String)
        /// Start it again (a router holding a client, or `devdb db start`). Repeated wakes wake once.
        case wake
        /// The stop of a hibernation finished.
        case stopped(operation: String, at: Date)
        // Progress and outcomes (the worker), for the operation with this id.
        case progress(operation: String, state: DatabaseRecord.State?, phase: String?, generation: Int?)
        case succeeded(operation: String, Instance)
        case failed(operation: String, reason: String)
        case deleted(operation: String)
        case snapshotTaken(operation: String, SnapshotOutcome)
        /// `instanceRunning`: the database serves again (only the snapshot failed).
        case snapshotFailed(operation: String, reason: String, instanceRunning: Bool)
        // What reconcile sees.
        case instanceMissing
        case instanceUnhealthy(reason: String)
        case instanceHealthy
        /// The route of a ready or unavailable database is missing or wrong: write it again.
        case routeRepair
        /// After a restart, or for work no worker runs: run the operation in flight again.
        case resume
    }

    /// Where a made instance is, as the worker reports it.
    public struct Instance: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var cloneMethod: String
        public var note: String?
        /// The generation it holds the data of (a branch: its snapshot's, where known).
        public var generation: Int?
        /// The PostgreSQL major it runs (its generation's).
        public var postgresMajor: Int?
        public init(host: String, port: Int, cloneMethod: String, note: String? = nil, generation: Int?, postgresMajor: Int? = nil) {
            self.host = host; self.port = port; self.cloneMethod = cloneMethod; self.note = note; self.generation = generation
            self.postgresMajor = postgresMajor
        }
    }

    /// Changes to other catalog keys, committed in the same transaction as the record.
    public enum Effect: Sendable, Equatable {
        case setRoute(RouteRecord)
        case removeRoute
        /// Remove the record, its index entries and its port lease, its unused snapshots, and its
        /// use of the snapshot it was branched from.
        case removeRecord
        /// Add snapshot `name` of this database (state `taking`).
        case addSnapshot(String)
        /// Snapshot `name` is ready (outcome) or failed (reason).
        case finishSnapshot(String, SnapshotOutcome?, reason: String?)
    }

    /// Work for the worker, done after the commit.
    public enum Action: Sendable, Equatable {
        case run(DatabaseRecord.Operation)
    }

    /// Why a request is refused (HTTP 409), with what to do.
    public struct Refusal: Error, Sendable, Equatable {
        public var message: String
        public var hint: String
    }

    public enum Decision: Sendable, Equatable {
        /// Commit `record` (nil: it is removed) with `effects`, then perform `actions`.
        case commit(DatabaseRecord?, effects: [Effect], actions: [Action])
        /// Nothing to change: a stale or repeated event.
        case ignore
        case refuse(Refusal)
    }

    public static func decide(_ d: DatabaseRecord, _ event: Event, newOperationID: () -> String = DatabaseRecord.newOperationID) -> Decision {
        switch event {
        case .reset(let latest, let to):
            if let refusal = busy(d, doing: "reset") { return .refuse(refusal) }
            var next = d
            // A database that never got an instance is made again; others are reset in place.
            let kind: DatabaseRecord.Operation.Kind = d.backendPort == nil && d.backendHost == nil ? .create : .reset
            next.operation = .init(kind: kind, id: newOperationID(), latest: latest, target: to)
            next.state = kind == .create ? .provisioning : .cloning
            next.phase = kind == .create ? "queued" : "resetting"
            next.reason = nil
            return .commit(next, effects: hadRoute(d) ? [.removeRoute] : [], actions: [.run(next.operation!)])

        case .snapshot(let name):
            if let refusal = busy(d, doing: "snapshot") { return .refuse(refusal) }
            guard d.state == .ready || d.state == .hibernated else {
                let hint = d.state == .failed ? "reset it first: devdb db reset \(d.name)" : "wait until it is ready (devdb db show \(d.name))"
                return .refuse(Refusal(message: "database \"\(d.name)\" is \(d.state.rawValue); a snapshot needs it ready or asleep", hint: hint))
            }
            guard d.backendHost != nil, d.backendPort != nil else { return .ignore }
            var next = d
            next.state = .snapshotting
            // A sleeping database is already stopped: it is copied as it is and stays asleep.
            next.operation = .init(kind: .snapshot, id: newOperationID(), target: name, asleep: d.state == .hibernated ? true : nil)
            next.phase = "snapshot \(name)"
            return .commit(next, effects: routeEffects(next) + [.addSnapshot(name)], actions: [.run(next.operation!)])

        case .snapshotTaken(let op, let outcome):
            guard d.operation?.id == op, d.operation?.kind == .snapshot, let name = d.operation?.target else { return .ignore }
            var next = d
            next.state = d.operation?.asleep == true ? .hibernated : .ready
            next.operation = nil; next.phase = nil; next.reason = nil
            if next.state == .hibernated && d.wakeQueued == true && d.deleteQueued != true {
                guard case .commit(let waking, let fx, let acts) = startWake(from: next, newOperationID: newOperationID) else { return .ignore }
                return .commit(waking, effects: [.finishSnapshot(name, outcome, reason: nil)] + fx, actions: acts)
            }
            if d.deleteQueued == true {
                guard case .commit(let deleting, let fx, let acts) = startDelete(from: next, newOperationID: newOperationID) else { return .ignore }
                return .commit(deleting, effects: [.finishSnapshot(name, outcome, reason: nil)] + fx, actions: acts)
            }
            return .commit(next, effects: [.finishSnapshot(name, outcome, reason: nil)] + routeEffects(next), actions: [])

        case .snapshotFailed(let op, let reason, let running):
            guard d.operation?.id == op, d.operation?.kind == .snapshot, let name = d.operation?.target else { return .ignore }
            var next = d
            let asleep = d.operation?.asleep == true
            next.operation = nil; next.phase = nil
            next.state = asleep ? .hibernated : running ? .ready : .failed
            next.reason = asleep || running ? nil : "it did not start again after a snapshot: \(reason); run \"devdb db reset \(d.name)\""
            let finish = DatabaseLifecycle.Effect.finishSnapshot(name, nil, reason: reason)
            if d.deleteQueued == true {
                guard case .commit(let deleting, let fx, let acts) = startDelete(from: next, newOperationID: newOperationID) else { return .ignore }
                return .commit(deleting, effects: [finish] + fx, actions: acts)
            }
            if asleep && d.wakeQueued == true && d.deleteQueued != true {
                guard case .commit(let waking, let fx, let acts) = startWake(from: next, newOperationID: newOperationID) else { return .ignore }
                return .commit(waking, effects: [finish] + fx, actions: acts)
            }
            return .commit(next, effects: [finish] + (asleep || running ? routeEffects(next) : [.removeRoute]), actions: [])

        case .hibernate(let now, let idle):
            if d.state == .hibernating, !idle, var op = d.operation, op.kind == .stop, op.idle == true {
                // A person's stop while the hibernator's waits for routers: it stops now, sessions or not.
                var next = d
                op.idle = nil
                next.operation = op
                return .commit(next, effects: routeEffects(next), actions: [])
            }
            if d.state == .hibernated || d.state == .hibernating { return .ignore }
            if let refusal = busy(d, doing: "stop") { return .refuse(refusal) }
            guard d.state == .ready else {
                return .refuse(Refusal(message: "database \"\(d.name)\" is \(d.state.rawValue); only a ready database can be stopped",
                                       hint: d.state == .failed ? "reset it: devdb db reset \(d.name)" : "wait until it is ready (devdb db show \(d.name))"))
            }
            var next = d
            next.state = .hibernating
            next.operation = .init(kind: .stop, id: newOperationID(), idle: idle ? true : nil)
            next.hibernatedAt = now
            return .commit(next, effects: routeEffects(next), actions: [.run(next.operation!)])

        case .keptAwake(let op):
            guard d.operation?.id == op, d.operation?.kind == .stop, d.operation?.idle == true, d.state == .hibernating else { return .ignore }
            var next = d
            next.state = .ready
            next.operation = nil; next.phase = nil; next.hibernatedAt = nil; next.wakeQueued = nil
            // Idle time counts from here: the session's report may not have reached Redis yet.
            next.readyAt = Date()
            if d.deleteQueued == true { return startDelete(from: next, newOperationID: newOperationID) }
            return .commit(next, effects: routeEffects(next), actions: [])

        case .stopped(let op, let at):
            guard d.operation?.id == op, d.operation?.kind == .stop else { return .ignore }
            var next = d
            next.operation = nil; next.phase = nil
            next.state = .hibernated
            next.hibernatedAt = at
            if d.deleteQueued == true { return startDelete(from: next, newOperationID: newOperationID) }
            if d.wakeQueued == true { return startWake(from: next, newOperationID: newOperationID) }
            // A fenced route loses its fence: asleep, routers wake it on the next connection.
            return .commit(next, effects: fence(d) != nil ? routeEffects(next) : [], actions: [])

        case .wake:
            switch d.state {
            case .hibernated:
                if d.deleteQueued == true { return .ignore }
                return startWake(from: d, newOperationID: newOperationID)
            case .hibernating:
                return queueWake(d)
            case .snapshotting where d.operation?.asleep == true:
                return queueWake(d)
            default:
                return .ignore  // awake, or waking already
            }

        case .delete:
            if d.state == .deleting || d.deleteQueued == true { return .ignore }
            var next = d
            if d.state.isTransitional {
                next.deleteQueued = true
                return .commit(next, effects: [], actions: [])
            }
            return startDelete(from: d, newOperationID: newOperationID)

        case .progress(let op, let state, let phase, let generation):
            guard d.operation?.id == op, d.state != .deleting else { return .ignore }
            var next = d
            if let state, state.isTransitional, state != .deleting { next.state = state }
            if let phase { next.phase = phase }
            if let generation { next.generation = generation }
            return next == d ? .ignore : .commit(next, effects: [], actions: [])

        case .succeeded(let op, let instance):
            guard d.operation?.id == op, [.create, .reset, .start].contains(d.operation?.kind) else { return .ignore }
            var next = d
            next.readyAt = Date(); next.hibernatedAt = nil; next.wakeQueued = nil
            next.backendHost = instance.host; next.backendPort = instance.port
            next.cloneMethod = instance.cloneMethod; next.note = instance.note
            if let g = instance.generation { next.generation = g }
            if let m = instance.postgresMajor { next.postgresMajor = m }
            if d.deleteQueued == true { return startDelete(from: next, newOperationID: newOperationID) }
            next.state = .ready; next.operation = nil; next.phase = nil; next.reason = nil
            return .commit(next, effects: [.setRoute(RouteRecord(host: instance.host, port: instance.port, state: .ready))], actions: [])

        case .failed(let op, let reason):
            guard d.operation?.id == op, d.operation?.kind != .snapshot else { return .ignore }
            var next = d
            if d.operation?.kind != .delete && d.deleteQueued == true { return startDelete(from: d, newOperationID: newOperationID) }
            if d.operation?.kind == .stop {
                // It could not be stopped: it keeps serving.
                next.state = .ready; next.operation = nil; next.hibernatedAt = nil; next.wakeQueued = nil
                next.reason = "it could not be stopped to sleep: \(reason)"
                return .commit(next, effects: routeEffects(next), actions: [])
            }
            next.state = .failed; next.operation = nil; next.phase = nil; next.deleteQueued = nil
            next.reason = d.operation?.kind == .delete
                ? "delete failed: \(reason); run \"devdb db delete \(d.name)\" again"
                : d.operation?.kind == .start ? "it did not wake up: \(reason)" : reason
            next.wakeQueued = nil
            return .commit(next, effects: hadRoute(d) ? [.removeRoute] : [], actions: [])

        case .deleted(let op):
            guard d.operation?.id == op, d.operation?.kind == .delete else { return .ignore }
            return .commit(nil, effects: [.removeRoute, .removeRecord], actions: [])

        case .instanceMissing:
            guard d.state == .ready || d.state == .unavailable else { return .ignore }
            var next = d
            next.state = .failed
            next.reason = "its instance is gone; run \"devdb db reset \(d.name)\" or delete it"
            return .commit(next, effects: [.removeRoute], actions: [])

        case .instanceUnhealthy(let reason):
            guard d.state == .ready || d.state == .unavailable, let host = d.backendHost, let port = d.backendPort else { return .ignore }
            var next = d
            next.state = .unavailable; next.reason = reason
            if next == d { return .ignore }
            return .commit(next, effects: [.setRoute(RouteRecord(host: host, port: port, state: .starting))], actions: [])

        case .instanceHealthy:
            guard d.state == .unavailable, let host = d.backendHost, let port = d.backendPort else { return .ignore }
            var next = d
            next.state = .ready; next.reason = nil
            return .commit(next, effects: [.setRoute(RouteRecord(host: host, port: port, state: .ready))], actions: [])

        case .routeRepair:
            guard hadRoute(d) else { return .ignore }
            return .commit(d, effects: routeEffects(d), actions: [])

        case .resume:
            guard d.state.isTransitional else { return .ignore }
            if d.deleteQueued == true && d.operation?.kind != .delete { return startDelete(from: d, newOperationID: newOperationID) }
            guard let op = d.operation else {
                // A record from before operations were recorded: make it again (or finish its delete).
                var next = d
                next.operation = .init(kind: d.state == .deleting ? .delete : .create, id: newOperationID())
                return .commit(next, effects: [], actions: [.run(next.operation!)])
            }
            return .commit(d, effects: [], actions: [.run(op)])
        }
    }

    /// The states that keep a route: `ready` (route `ready`), `unavailable` and `snapshotting`
    /// (route `starting`: clients are told to try again in a moment), and `hibernating`,
    /// `hibernated`, `waking` (route `hibernated`: the router holds clients and asks for a wake).
    public static func hasRoute(_ state: DatabaseRecord.State) -> Bool {
        [.ready, .unavailable, .snapshotting, .hibernating, .hibernated, .waking].contains(state)
    }
    static func hadRoute(_ d: DatabaseRecord) -> Bool { hasRoute(d.state) }

    static func routeState(_ d: DatabaseRecord) -> RouteState {
        switch d.state {
        case .ready: return .ready
        case .hibernating, .hibernated, .waking: return .hibernated
        // A sleeping database being snapshotted still sleeps: clients ask for a wake, which waits for the snapshot.
        case .snapshotting where d.operation?.asleep == true: return .hibernated
        default: return .starting
        }
    }

    static func routeEffects(_ d: DatabaseRecord) -> [Effect] {
        guard let host = d.backendHost, let port = d.backendPort else { return [] }
        return [.setRoute(RouteRecord(host: host, port: port, state: routeState(d), fence: fence(d)))]
    }

    /// The fence of a database the hibernator is stopping: the stop's operation id, while it
    /// waits for every router to confirm that no session is routed to it.
    public static func fence(_ d: DatabaseRecord) -> String? {
        guard d.state == .hibernating, let op = d.operation, op.kind == .stop, op.idle == true else { return nil }
        return op.id
    }

    /// A wake while it is being stopped or snapshotted asleep: it wakes when that is done.
    static func queueWake(_ d: DatabaseRecord) -> Decision {
        if d.wakeQueued == true || d.deleteQueued == true { return .ignore }
        var next = d
        next.wakeQueued = true
        return .commit(next, effects: [], actions: [])
    }

    static func startWake(from d: DatabaseRecord, newOperationID: () -> String) -> Decision {
        var next = d
        next.state = .waking
        next.wakeQueued = nil
        next.operation = .init(kind: .start, id: newOperationID())
        return .commit(next, effects: routeEffects(next), actions: [.run(next.operation!)])
    }

    /// Why a request cannot start now: a delete runs or waits, or other work runs.
    static func busy(_ d: DatabaseRecord, doing request: String) -> Refusal? {
        if d.state == .deleting || d.deleteQueued == true {
            return Refusal(message: "database \"\(d.name)\" is being deleted", hint: "create a new database instead: devdb db create --project \(d.project)")
        }
        guard d.state.isTransitional else { return nil }
        let what: String
        switch d.operation?.kind {
        case .reset: what = "being reset"
        case .snapshot: what = "being snapshotted"
        case .stop: what = "going to sleep"
        case .start: what = "waking up"
        default: what = "being created"
        }
        return Refusal(message: "database \"\(d.name)\" is \(what) (state \(d.state.rawValue))",
                       hint: "wait until it is ready (devdb db show \(d.name)), then \(request); or delete it: a delete waits for the running work")
    }

    static func startDelete(from d: DatabaseRecord, newOperationID: () -> String) -> Decision {
        var next = d
        next.state = .deleting
        next.operation = .init(kind: .delete, id: newOperationID())
        next.deleteQueued = nil
        next.phase = nil
        return .commit(next, effects: [.removeRoute], actions: [.run(next.operation!)])
    }
}

/// The lifecycle of one generation (a restored copy of a project's dump):
///
///     fetching ─▶ restoring ─▶ ready
///         └──────────┴───────▶ failed
///
/// Outcomes for a generation that is no longer seeding (its project was deleted, or a late retry)
/// are ignored.
public enum GenerationLifecycle {
    public enum Event: Sendable, Equatable {
        case progress(phase: String, bytes: Int64)
        /// The seed read the dump: the major it restores into and the dump's format.
        case inspected(major: Int, format: String?)
        case succeeded(seconds: Double, bytes: Int64?)
        case failed(reason: String)
    }

    public static func isSeeding(_ g: Generation) -> Bool { g.state == .fetching || g.state == .restoring }

    /// The next record, or nil to leave it unchanged.
    public static func decide(_ g: Generation, _ event: Event, now: Date = Date()) -> Generation? {
        guard isSeeding(g) else { return nil }
        var next = g
        switch event {
        case .progress(let phase, let bytes):
            next.phase = phase
            next.bytesFetched = max(g.bytesFetched, bytes)
            next.state = phase == "fetching" ? .fetching : .restoring
        case .inspected(let major, let format):
            next.postgresMajor = major
            if let format { next.dumpFormat = format }
        case .succeeded(let seconds, let bytes):
            next.state = .ready; next.phase = nil; next.readyAt = now; next.restoreSeconds = seconds
            if let bytes { next.bytesFetched = max(g.bytesFetched, bytes) }
        case .failed(let reason):
            next.state = .failed; next.phase = nil; next.reason = reason
        }
        return next == g ? nil : next
    }
}

/// Project-level decisions: deleting a project, and the project's state after a seed ends.
public enum ProjectLifecycle {
    public enum DeleteDecision: Sendable, Equatable {
        case commit(Project)
        case alreadyDeleting
        case refuse(DatabaseLifecycle.Refusal)
    }

    /// `databases`: the names of the project's databases (the catalog guards that this stays true).
    public static func delete(_ p: Project, databases: [String]) -> DeleteDecision {
        if p.state == .deleting { return .alreadyDeleting }
        guard databases.isEmpty else {
            return .refuse(.init(message: "project \"\(p.name)\" still has \(databases.count) database(s)",
                                 hint: "delete them first: " + databases.sorted().map { "devdb db delete \($0)" }.joined(separator: "; ")))
        }
        var next = p
        next.state = .deleting
        return .commit(next)
    }

    /// The project's state once generation `number` ended, given all its generations.
    public static func afterSeed(_ p: Project, generations: [Generation]) -> Project? {
        guard p.state != .deleting else { return nil }
        var next = p
        if generations.contains(where: { $0.state == .ready }) {
            next.state = .ready; next.reason = nil
        } else if let failed = generations.filter({ $0.state == .failed }).max(by: { $0.number < $1.number }),
                  !generations.contains(where: GenerationLifecycle.isSeeding) {
            next.state = .failed; next.reason = failed.reason
        } else {
            next.state = .seeding
        }
        return next == p ? nil : next
    }
}
