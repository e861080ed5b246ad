import Foundation
import Testing
@testable import DevDBCatalog
@testable import DevDBCore

/// The lifecycle state machines as chains of event → (state, effects, actions), including every
/// refusal. No I/O: the catalog and worker that perform the decisions are tested end to end.
@Suite struct DatabaseLifecycleTests {
    typealias L = DatabaseLifecycle

    /// Operation ids from a counter, so chains are deterministic.
    final class IDs: @unchecked Sendable {
        var n = 0
        func next() -> String { n += 1; return "op\(n)" }
    }

    let ids = IDs()

    func fresh() -> DatabaseRecord {
        var d = DatabaseRecord(name: "kate-pg", project: "shop", owner: "kate", user: "app", password: "pw", database: "app")
        d.operation = .init(kind: .create, id: "op0")
        return d
    }

    /// Applies an event that must commit; returns the new record.
    func commit(_ d: DatabaseRecord, _ e: L.Event, effects: [L.Effect]? = nil, actions: [L.Action]? = nil,
                sourceLocation: SourceLocation = #_sourceLocation) -> DatabaseRecord? {
        guard case .commit(let next, let fx, let acts) = L.decide(d, e, newOperationID: ids.next) else {
            Issue.record("\(e) on \(d.state) did not commit: \(L.decide(d, e, newOperationID: ids.next))", sourceLocation: sourceLocation)
            return nil
        }
        if let effects { #expect(fx == effects, sourceLocation: sourceLocation) }
        if let actions { #expect(acts == actions, sourceLocation: sourceLocation) }
        return next
    }

    func refusal(_ d: DatabaseRecord, _ e: L.Event) -> L.Refusal? {
        if case .refuse(let r) = L.decide(d, e, newOperationID: ids.next) { return r }
        return nil
    }

    let instance = L.Instance(host: "127.0.0.1", port: 16001, cloneMethod: "copy", generation: 3)
    var readyRoute: L.Effect { .setRoute(RouteRecord(host: "127.0.0.1", port: 16001, state: .ready)) }

    func ready() -> DatabaseRecord {
        commit(fresh(), .succeeded(operation: "op0", instance))!
    }

    @Test func createGoesThroughItsStatesToReadyAndRegistersTheRoute() throws {
        var d = fresh()
        #expect(d.state == .provisioning)
        d = try #require(commit(d, .progress(operation: "op0", state: .restoring, phase: "waiting", generation: nil), effects: [], actions: []))
        #expect(d.state == .restoring)
        d = try #require(commit(d, .progress(operation: "op0", state: .cloning, phase: "cloning", generation: 3)))
        #expect(d.state == .cloning && d.generation == 3)
        d = try #require(commit(d, .progress(operation: "op0", state: .starting, phase: "starting", generation: nil)))
        d = try #require(commit(d, .succeeded(operation: "op0", instance), effects: [readyRoute], actions: []))
        #expect(d.state == .ready && d.operation == nil && d.phase == nil && d.backendPort == 16001 && d.cloneMethod == "copy")
    }

    @Test func outcomesOfAnotherOperationAreIgnored() {
        let d = fresh()
        #expect(L.decide(d, .succeeded(operation: "stale", instance)) == .ignore)
        #expect(L.decide(d, .failed(operation: "stale", reason: "x")) == .ignore)
        #expect(L.decide(d, .progress(operation: "stale", state: .cloning, phase: "x", generation: nil)) == .ignore)
        #expect(L.decide(d, .deleted(operation: "op0")) == .ignore, "a create's id does not delete")
        // Applied twice (a retried write whose first answer was lost): the second is ignored.
        let r = ready()
        #expect(L.decide(r, .succeeded(operation: "op0", instance)) == .ignore)
    }

    @Test func resetRemovesTheRouteAndRunsAResetThatEndsReadyAgain() throws {
        let before = ready()
        var d = try #require(commit(before, .reset(latest: true), effects: [.removeRoute]))
        #expect(d.state == .cloning && d.operation?.kind == .reset && d.operation?.latest == true)
        let op = try #require(d.operation)
        guard case .commit(_, _, let actions) = L.decide(before, .reset(latest: true), newOperationID: { "x" }) else { Issue.record("no commit"); return }
        #expect(actions == [.run(.init(kind: .reset, id: "x", latest: true))])
        d = try #require(commit(d, .succeeded(operation: op.id, instance), effects: [readyRoute], actions: []))
        #expect(d.state == .ready)
    }

    @Test func everyRefusalSaysWhatRunsAndWhatToDo() throws {
        // Reset while being created or reset.
        let creating = fresh()
        let r1 = try #require(refusal(creating, .reset(latest: false)))
        #expect(r1.message.contains("being created") && r1.message.contains("provisioning"))
        #expect(r1.hint.contains("devdb db show kate-pg"))
        let resetting = try #require(commit(ready(), .reset(latest: false)))
        #expect(try #require(refusal(resetting, .reset(latest: false))).message.contains("being reset"))
        // Reset while being deleted, or with a delete queued.
        let deleting = try #require(commit(ready(), .delete))
        #expect(try #require(refusal(deleting, .reset(latest: false))).message.contains("being deleted"))
        let queued = try #require(commit(resetting, .delete))
        #expect(try #require(refusal(queued, .reset(latest: true))).message.contains("being deleted"))
    }

    @Test func deleteDuringResetIsQueuedAndRunsAfterIt() throws {
        let resetting = try #require(commit(ready(), .reset(latest: false)))
        let op = try #require(resetting.operation)
        // Accepted: nothing runs yet, nothing is dropped.
        let queued = try #require(commit(resetting, .delete, effects: [], actions: []))
        #expect(queued.deleteQueued == true && queued.state == .cloning)
        // Asked again: already accepted.
        #expect(L.decide(queued, .delete) == .ignore)
        // The reset ends: no route, the delete starts.
        guard case .commit(let next?, let fx, let acts) = L.decide(queued, .succeeded(operation: op.id, instance), newOperationID: { "del" }) else {
            Issue.record("no commit"); return
        }
        #expect(next.state == .deleting && next.deleteQueued == nil && next.operation == .init(kind: .delete, id: "del"))
        #expect(!fx.contains(readyRoute))
        #expect(acts == [.run(.init(kind: .delete, id: "del"))])
        // The reset failing instead also leads to the delete.
        guard case .commit(let afterFail?, _, _) = L.decide(queued, .failed(operation: op.id, reason: "boom")) else { Issue.record("no commit"); return }
        #expect(afterFail.state == .deleting)
        // The delete ends: the record, its route and its lease go in one transaction.
        #expect(L.decide(next, .deleted(operation: "del")) == .commit(nil, effects: [.removeRoute, .removeRecord], actions: []))
    }

    @Test func deleteOfASettledDatabaseStartsAtOnce() throws {
        for start in [ready(), { var d = ready(); d.state = .unavailable; return d }(), { var d = ready(); d.state = .failed; return d }()] {
            let d = try #require(commit(start, .delete, effects: [.removeRoute]))
            #expect(d.state == .deleting && d.operation?.kind == .delete)
        }
    }

    @Test func failuresRecordTheReasonAndLeaveNoRoute() throws {
        let failed = try #require(commit(fresh(), .failed(operation: "op0", reason: "pg_restore failed"), effects: [], actions: []))
        #expect(failed.state == .failed && failed.reason == "pg_restore failed" && failed.operation == nil)
        // A failed delete says how to try again.
        let deleting = try #require(commit(ready(), .delete))
        let df = try #require(commit(deleting, .failed(operation: deleting.operation!.id, reason: "rm: busy")))
        #expect(df.state == .failed && (df.reason ?? "").contains("devdb db delete kate-pg"))
        // A failed create with no instance is made again by reset; one with an instance is reset.
        let again = try #require(commit(failed, .reset(latest: false)))
        #expect(again.operation?.kind == .create && again.state == .provisioning)
        var failedReset = ready()
        failedReset.state = .failed
        #expect(try #require(commit(failedReset, .reset(latest: false))).operation?.kind == .reset)
    }

    @Test func reconcileEventsMoveOnlySettledDatabases() throws {
        let r = ready()
        let missing = try #require(commit(r, .instanceMissing, effects: [.removeRoute]))
        #expect(missing.state == .failed && (missing.reason ?? "").contains("devdb db reset kate-pg"))
        let sick = try #require(commit(r, .instanceUnhealthy(reason: "crash loop"),
                                       effects: [.setRoute(RouteRecord(host: "127.0.0.1", port: 16001, state: .starting))]))
        #expect(sick.state == .unavailable)
        #expect(L.decide(sick, .instanceUnhealthy(reason: "crash loop")) == .ignore)
        #expect(try #require(commit(sick, .instanceHealthy, effects: [readyRoute])).state == .ready)
        // Work in flight is not touched by what reconcile sees.
        for e in [L.Event.instanceMissing, .instanceUnhealthy(reason: "x"), .instanceHealthy, .routeRepair] {
            #expect(L.decide(fresh(), e) == .ignore, "\(e)")
        }
        #expect(try #require(commit(r, .routeRepair, effects: [readyRoute])) == r)
    }

    @Test func resumeRunsTheOperationInFlightAgainOrTheQueuedDelete() throws {
        let d = fresh()
        #expect(L.decide(d, .resume) == .commit(d, effects: [], actions: [.run(d.operation!)]))
        var queued = d
        queued.deleteQueued = true
        guard case .commit(let next?, _, let acts) = L.decide(queued, .resume, newOperationID: { "del" }) else { Issue.record("no commit"); return }
        #expect(next.state == .deleting && acts == [.run(.init(kind: .delete, id: "del"))])
        #expect(L.decide(ready(), .resume) == .ignore)
        // A record written before operations existed gets one.
        var legacy = d
        legacy.operation = nil
        legacy.state = .cloning
        guard case .commit(let made?, _, _) = L.decide(legacy, .resume) else { Issue.record("no commit"); return }
        #expect(made.operation?.kind == .create)
    }

    @Test func aSnapshotKeepsARouteThatSaysStartingAndEndsReady() throws {
        let r = ready()
        let starting = L.Effect.setRoute(RouteRecord(host: "127.0.0.1", port: 16001, state: .starting))
        let taking = try #require(commit(r, .snapshot(name: "before"), effects: [starting, .addSnapshot("before")]))
        #expect(taking.state == .snapshotting && taking.operation?.kind == .snapshot && taking.operation?.target == "before")
        let op = try #require(taking.operation?.id)
        let outcome = SnapshotOutcome(method: "reflink", sizeBytes: 1, unavailableSeconds: 0.2)
        let done = try #require(commit(taking, .snapshotTaken(operation: op, outcome), effects: [.finishSnapshot("before", outcome, reason: nil), readyRoute]))
        #expect(done.state == .ready && done.operation == nil)
        // Failed, the database serving again: ready, the snapshot failed.
        let again = try #require(commit(taking, .snapshotFailed(operation: op, reason: "disk full", instanceRunning: true),
                                        effects: [.finishSnapshot("before", nil, reason: "disk full"), readyRoute]))
        #expect(again.state == .ready)
        // Failed and the database did not come back: failed, no route, told how to recover.
        let down = try #require(commit(taking, .snapshotFailed(operation: op, reason: "x", instanceRunning: false)))
        #expect(down.state == .failed && (down.reason ?? "").contains("devdb db reset kate-pg"))
        // A generic failure or success of another kind does not end a snapshot.
        #expect(L.decide(taking, .failed(operation: op, reason: "x")) == .ignore)
        #expect(L.decide(taking, .succeeded(operation: op, instance)) == .ignore)
    }

    @Test func snapshotsAreRefusedUnlessReadyAndOtherWorkWaitsForThem() throws {
        #expect(try #require(refusal(fresh(), .snapshot(name: "x"))).message.contains("being created"))
        var failed = ready()
        failed.state = .failed
        let r = try #require(refusal(failed, .snapshot(name: "x")))
        #expect(r.message.contains("a snapshot needs it ready") && r.hint.contains("devdb db reset"))
        let taking = try #require(commit(ready(), .snapshot(name: "s")))
        #expect(try #require(refusal(taking, .reset(latest: false))).message.contains("being snapshotted"))
        #expect(try #require(refusal(taking, .snapshot(name: "t"))).message.contains("being snapshotted"))
        // A delete waits for it, then runs.
        let queued = try #require(commit(taking, .delete, effects: [], actions: []))
        guard case .commit(let next?, let fx, let acts) = L.decide(queued, .snapshotTaken(operation: taking.operation!.id,
                                                                                        SnapshotOutcome(method: "copy", sizeBytes: nil, unavailableSeconds: 1)),
                                                             newOperationID: { "del" }) else { Issue.record("no commit"); return }
        #expect(next.state == .deleting && acts == [.run(.init(kind: .delete, id: "del"))])
        #expect(fx.contains(.removeRoute) && fx.contains { if case .finishSnapshot = $0 { return true }; return false })
    }

    @Test func hibernationStopsThenWakesOnceAndKeepsARouteThatSaysHibernated() throws {
        let sleeping = L.Effect.setRoute(RouteRecord(host: "127.0.0.1", port: 16001, state: .hibernated))
        let now = Date()
        let stopping = try #require(commit(ready(), .hibernate(now: now), effects: [sleeping]))
        #expect(stopping.state == .hibernating && stopping.operation?.kind == .stop)
        let stopOp = try #require(stopping.operation?.id)
        // A wake while it is being stopped waits for the stop, then starts it: once.
        let queued = try #require(commit(stopping, .wake, effects: [], actions: []))
        #expect(queued.wakeQueued == true)
        #expect(L.decide(queued, .wake) == .ignore)
        guard case .commit(let waking?, _, let acts) = L.decide(queued, .stopped(operation: stopOp, at: now), newOperationID: { "start" }) else {
            Issue.record("no commit"); return
        }
        #expect(waking.state == .waking && acts == [.run(.init(kind: .start, id: "start"))])
        // Without a wake, stopped means hibernated; a wake then starts it, and twice wakes once.
        let asleep = try #require(commit(stopping, .stopped(operation: stopOp, at: now), effects: [], actions: []))
        #expect(asleep.state == .hibernated && asleep.operation == nil && asleep.hibernatedAt == now)
        let woken = try #require(commit(asleep, .wake, effects: [sleeping]))
        #expect(woken.state == .waking)
        #expect(L.decide(woken, .wake) == .ignore)
        let up = try #require(commit(woken, .succeeded(operation: woken.operation!.id, instance), effects: [readyRoute]))
        #expect(up.state == .ready && up.hibernatedAt == nil && up.readyAt != nil)
        // A wake that fails: failed, the route goes (the router's waiters hear of it).
        let broken = try #require(commit(woken, .failed(operation: woken.operation!.id, reason: "bad config"), effects: [.removeRoute]))
        #expect(broken.state == .failed && (broken.reason ?? "").contains("did not wake up"))
        // A stop that fails leaves it serving.
        let kept = try #require(commit(stopping, .failed(operation: stopOp, reason: "busy"), effects: [readyRoute]))
        #expect(kept.state == .ready)
    }

    @Test func theHibernatorsStopFencesTheRouteUntilRoutersConfirmAndSessionsKeepItAwake() throws {
        let now = Date()
        let d = ready()
        let fenced = try #require(commit(d, .hibernate(now: now, idle: true)))
        let op = try #require(fenced.operation)
        #expect(fenced.state == .hibernating && op.kind == .stop && op.idle == true)
        let fenceRoute = L.Effect.setRoute(RouteRecord(host: "127.0.0.1", port: 16001, state: .hibernated, fence: op.id))
        #expect(L.decide(d, .hibernate(now: now, idle: true), newOperationID: { op.id }) == .commit(fenced, effects: [fenceRoute], actions: [.run(op)]))
        #expect(L.fence(fenced) == op.id)
        // A router had a session on it: it stays awake, the route serves again without its fence.
        let awake = try #require(commit(fenced, .keptAwake(operation: op.id), effects: [readyRoute], actions: []))
        #expect(awake.state == .ready && awake.operation == nil && awake.hibernatedAt == nil && (awake.readyAt ?? .distantPast) >= now)
        #expect(L.decide(fenced, .keptAwake(operation: "other")) == .ignore)
        #expect(L.decide(awake, .keptAwake(operation: op.id)) == .ignore)
        // A client that connects during the fence asks for a wake: kept awake, the wake is done.
        let waiting = try #require(commit(fenced, .wake, effects: [], actions: []))
        #expect(waiting.wakeQueued == true)
        #expect(try #require(commit(waiting, .keptAwake(operation: op.id), effects: [readyRoute])).wakeQueued == nil)
        // Every router confirmed: stopped, asleep, and the route loses its fence.
        let sleeping = L.Effect.setRoute(RouteRecord(host: "127.0.0.1", port: 16001, state: .hibernated))
        let asleep = try #require(commit(fenced, .stopped(operation: op.id, at: now), effects: [sleeping], actions: []))
        #expect(asleep.state == .hibernated && L.fence(asleep) == nil)
        // A person's stop during the fence takes it over: it stops now, sessions or not.
        let byHand = try #require(commit(fenced, .hibernate(now: now), effects: [sleeping], actions: []))
        #expect(byHand.operation?.id == op.id && byHand.operation?.idle == nil && L.fence(byHand) == nil)
        #expect(L.decide(byHand, .keptAwake(operation: op.id)) == .ignore)
        #expect(L.decide(fenced, .hibernate(now: now, idle: true)) == .ignore)
        // A delete asked for during the fence runs when the fence ends either way.
        let deleting = try #require(commit(fenced, .delete, effects: [], actions: []))
        #expect(try #require(commit(deleting, .keptAwake(operation: op.id), effects: [.removeRoute])).state == .deleting)
        // A person's stop fences nothing.
        let manual = try #require(commit(d, .hibernate(now: now), effects: [sleeping]))
        #expect(manual.operation?.idle == nil && L.fence(manual) == nil)
    }

    @Test func sleepingDatabasesAreResetDeletedAndSnapshottedWithoutWaking() throws {
        let stopping = try #require(commit(ready(), .hibernate(now: Date())))
        let asleep = try #require(commit(stopping, .stopped(operation: stopping.operation!.id, at: Date())))
        #expect(try #require(commit(asleep, .reset(latest: false), effects: [.removeRoute])).operation?.kind == .reset)
        #expect(try #require(commit(asleep, .delete, effects: [.removeRoute])).state == .deleting)
        // A snapshot of a sleeping database copies it as it is: the route still says hibernated.
        let sleeping = L.Effect.setRoute(RouteRecord(host: "127.0.0.1", port: 16001, state: .hibernated))
        let taking = try #require(commit(asleep, .snapshot(name: "s"), effects: [sleeping, .addSnapshot("s")]))
        #expect(taking.state == .snapshotting && taking.operation?.asleep == true)
        let outcome = SnapshotOutcome(method: "copy", sizeBytes: nil, unavailableSeconds: 0)
        #expect(try #require(commit(taking, .snapshotTaken(operation: taking.operation!.id, outcome))).state == .hibernated)
        // A client that connects meanwhile asks for a wake: it runs once the snapshot is taken.
        let queued = try #require(commit(taking, .wake, effects: [], actions: []))
        #expect(queued.wakeQueued == true)
        guard case .commit(let waking?, _, let acts) = L.decide(queued, .snapshotTaken(operation: taking.operation!.id, outcome), newOperationID: { "w" }) else {
            Issue.record("no commit"); return
        }
        #expect(waking.state == .waking && acts == [.run(.init(kind: .start, id: "w"))])
        // A snapshot that fails leaves it asleep.
        #expect(try #require(commit(taking, .snapshotFailed(operation: taking.operation!.id, reason: "disk", instanceRunning: false))).state == .hibernated)
        // Stopping is only for ready databases; a sleeping one is already asleep.
        #expect(L.decide(asleep, .hibernate(now: Date())) == .ignore)
        #expect(try #require(refusal(fresh(), .hibernate(now: Date()))).message.contains("being created"))
    }

    @Test func resetToASnapshotCarriesItsTarget() throws {
        let d = try #require(commit(ready(), .reset(latest: false, to: "kate-pg@before")))
        #expect(d.operation?.kind == .reset && d.operation?.target == "kate-pg@before")
    }

    @Test func theRouteExistsExactlyWhileReadyUnavailableOrSnapshotting() {
        // Walk random event sequences; after each commit, a route-setting effect appears only
        // when the new state serves, and leaving a serving state removes it.
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            var d = fresh()
            var hasRoute = false
            for _ in 0..<20 {
                let op = d.operation?.id ?? "none"
                let events: [L.Event] = [.reset(latest: Bool.random(using: &rng)), .delete, .succeeded(operation: op, instance),
                                         .failed(operation: op, reason: "x"), .deleted(operation: op), .instanceMissing,
                                         .instanceUnhealthy(reason: "y"), .instanceHealthy, .resume, .routeRepair, .snapshot(name: "s"),
                                         .snapshotTaken(operation: op, SnapshotOutcome(method: "copy", sizeBytes: nil, unavailableSeconds: 0)),
                                         .snapshotFailed(operation: op, reason: "z", instanceRunning: Bool.random(using: &rng)),
                                         .hibernate(now: Date()), .hibernate(now: Date(), idle: true), .keptAwake(operation: op),
                                         .wake, .stopped(operation: op, at: Date())]
                let e = events.randomElement(using: &rng)!
                guard case .commit(let next, let fx, _) = L.decide(d, e, newOperationID: ids.next) else { continue }
                for f in fx {
                    if case .setRoute = f { hasRoute = true }
                    if f == .removeRoute { hasRoute = false }
                }
                guard let next else { #expect(!hasRoute); break }
                #expect(hasRoute == L.hasRoute(next.state), "\(e): \(d.state) -> \(next.state)")
                #expect([.ready, .unavailable, .snapshotting, .hibernating, .hibernated, .waking].contains(next.state) == L.hasRoute(next.state))
                #expect(next.state.isTransitional == (next.operation != nil), "\(e): \(next.state) op \(String(describing: next.operation))")
                d = next
            }
        }
    }
}

@Suite struct GenerationAndProjectLifecycleTests {
    @Test func generationsSeedThenEndOnce() throws {
        let g = Generation(project: "shop", number: 2)
        let restoring = try #require(GenerationLifecycle.decide(g, .progress(phase: "restoring", bytes: 100)))
        #expect(restoring.state == .restoring && restoring.bytesFetched == 100)
        let ready = try #require(GenerationLifecycle.decide(restoring, .succeeded(seconds: 1.5, bytes: nil)))
        #expect(ready.state == .ready && ready.restoreSeconds == 1.5)
        // A late progress or failure does not undo it.
        #expect(GenerationLifecycle.decide(ready, .failed(reason: "late")) == nil)
        #expect(GenerationLifecycle.decide(ready, .progress(phase: "restoring", bytes: 1)) == nil)
        let failed = try #require(GenerationLifecycle.decide(g, .failed(reason: "not a dump")))
        #expect(failed.state == .failed && failed.reason == "not a dump")
    }

    @Test func projectDeleteIsRefusedWhileDatabasesExist() {
        let p = Project(name: "shop", postgresMajor: 15, dumpUrl: "file:///x")
        guard case .refuse(let r) = ProjectLifecycle.delete(p, databases: ["b", "a"]) else { Issue.record("not refused"); return }
        #expect(r.message.contains("2 database(s)") && r.hint == "delete them first: devdb db delete a; devdb db delete b")
        guard case .commit(let next) = ProjectLifecycle.delete(p, databases: []) else { Issue.record("not accepted"); return }
        #expect(next.state == .deleting)
        #expect(ProjectLifecycle.delete(next, databases: []) == .alreadyDeleting)
    }

    @Test func projectStateFollowsItsGenerations() throws {
        let p = Project(name: "shop", postgresMajor: 15, dumpUrl: "file:///x")
        var g1 = Generation(project: "shop", number: 1)
        g1.state = .failed; g1.reason = "404"
        let failed = try #require(ProjectLifecycle.afterSeed(p, generations: [g1]))
        #expect(failed.state == .failed && failed.reason == "404")
        var g2 = Generation(project: "shop", number: 2)
        g2.state = .ready
        #expect(try #require(ProjectLifecycle.afterSeed(failed, generations: [g1, g2])).state == .ready)
        var deleting = p
        deleting.state = .deleting
        #expect(ProjectLifecycle.afterSeed(deleting, generations: [g2]) == nil)
    }
}
