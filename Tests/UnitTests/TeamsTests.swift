import Foundation
import Testing
@testable import DevDBCatalog

/// The pure parts of #27 "Teams": usage arithmetic over a scripted scenario with an injected
/// clock, the quota decision, and what the audit log keeps out.
@Suite struct TeamsTests {
    static let t0 = ISO8601DateFormatter().date(from: "2026-01-01T00:00:00Z")!
    static func at(_ hours: Double) -> Date { t0.addingTimeInterval(hours * 3600) }
    static let gib: Int64 = 1 << 30

    /// kate's `a`: made at 0 h, asleep 2-5 h, woken at 5 h, a 2 GiB snapshot at 6 h, deleted at 8 h.
    /// lee's `b`: made at 1 h, awake to the end. Both in project shop; a `c` of kate in project web
    /// failed at 3 h (no instance: neither awake nor asleep).
    static let scenario: [UsageEvent] = [
        UsageEvent(time: at(0), database: "a", owner: "kate", project: "shop", phase: .awake),
        UsageEvent(time: at(1), database: "b", owner: "lee", project: "shop", phase: .awake),
        UsageEvent(time: at(2), database: "a", owner: "kate", project: "shop", phase: .asleep),
        UsageEvent(time: at(2.5), database: "c", owner: "kate", project: "web", phase: .awake),
        UsageEvent(time: at(3), database: "c", owner: "kate", project: "web", phase: .off),
        UsageEvent(time: at(5), database: "a", owner: "kate", project: "shop", phase: .awake, wake: true),
        UsageEvent(time: at(6), database: "a", owner: "kate", project: "shop", snapshot: true),
        UsageEvent(time: at(6), database: "a", owner: "kate", project: "shop", storageDelta: 2 * gib),
        UsageEvent(time: at(8), database: "a", owner: "kate", project: "shop", phase: .gone),
    ]

    @Test func usageOfAScriptedScenarioAddsUpPerUser() {
        let byUser = UsageReport.compute(Self.scenario, since: Self.at(1), now: Self.at(10), by: .user)
        #expect(byUser.map(\.key) == ["kate", "lee"])
        let kate = byUser[0], lee = byUser[1]
        // a: awake 1-2 h (the period starts at 1 h) and 5-8 h; c: awake 2.5-3 h.
        #expect(abs(kate.awakeHours - 4.5) < 1e-9, "\(kate)")
        #expect(abs(kate.asleepHours - 3) < 1e-9, "\(kate)")
        #expect(abs(kate.storageGiBHours - 4) < 1e-9, "2 GiB for 2 hours: \(kate)")
        #expect(kate.snapshots == 1 && kate.wakes == 1)
        #expect(abs(lee.awakeHours - 9) < 1e-9 && lee.asleepHours == 0 && lee.wakes == 0, "\(lee)")
    }

    @Test func usageByProjectAndAPeriodThatCutsIntervals() {
        let byProject = UsageReport.compute(Self.scenario, since: Self.at(1), now: Self.at(10), by: .project)
        #expect(byProject.map(\.key) == ["shop", "web"])
        #expect(abs(byProject[0].awakeHours - 13) < 1e-9 && abs(byProject[0].asleepHours - 3) < 1e-9, "\(byProject[0])")
        #expect(abs(byProject[1].awakeHours - 0.5) < 1e-9)
        // From 5.5 h to 7 h: the wake at 5 h is before the period; a was awake all 1.5 h, 2 GiB for 1 h.
        let late = UsageReport.compute(Self.scenario, since: Self.at(5.5), now: Self.at(7), by: .user)
        let kate = late.first { $0.key == "kate" }!
        #expect(abs(kate.awakeHours - 1.5) < 1e-9 && kate.wakes == 0 && kate.snapshots == 1 && abs(kate.storageGiBHours - 2) < 1e-9, "\(kate)")
        // Events after `now` do not count yet.
        let early = UsageReport.compute(Self.scenario, since: Self.at(0), now: Self.at(1.5), by: .user)
        #expect(abs(early.first { $0.key == "kate" }!.awakeHours - 1.5) < 1e-9)
        #expect(abs(early.first { $0.key == "lee" }!.awakeHours - 0.5) < 1e-9)
    }

    @Test func aTransitionFromAsleepToWakingIsRecordedAsAWake() throws {
        var d = DatabaseRecord(name: "a", project: "shop", owner: "kate", user: "app", password: "pw-secret", database: "app", expiresAt: nil)
        d.state = .hibernated
        var next = d
        next.state = .waking
        let write = try #require(UsageLog.transitionEvent(before: d, after: next, effects: []))
        guard case .streamAdd(UsageLog.key, let text, _, _) = write else { Issue.record("not an append to \(UsageLog.key): \(write)"); return }
        let e = try CatalogJSON.decoder.decode(UsageEvent.self, from: Data(text.utf8))
        #expect(e.wake && e.phase == .awake && e.owner == "kate")
        #expect(!text.contains("pw-secret"), "no password in the usage log")
        // A progress write that changes nothing usage counts writes nothing.
        var ready = d
        ready.state = .ready
        var stillReady = ready
        stillReady.phase = "x"
        #expect(UsageLog.transitionEvent(before: ready, after: stillReady, effects: []) == nil)
    }

    @Test func quotaDecisionsSayWhichLimitTheUseAndWhatToDelete() {
        let limits = QuotaLimits(databases: 2, snapshots: 3, storageBytes: 10 * Self.gib, awake: 1)
        var use = QuotaUse()
        use.databases = 1
        #expect(QuotaPolicy.check(user: "kate", limits: limits, use: use, adding: QuotaChange(databases: 1)) == nil)
        use.databases = 2
        let r = QuotaPolicy.check(user: "kate", limits: limits, use: use, adding: QuotaChange(databases: 1), candidates: { _ in ["devdb db delete old"] })
        #expect(r?.resource == .databases && r?.limit == 2 && r?.use == 2)
        #expect(r?.description == "quota exceeded: kate has 2 of 2 databases")
        #expect(r?.hint.contains("devdb db delete old") == true)
        use.databases = 0; use.awake = 1
        #expect(QuotaPolicy.check(user: "kate", limits: limits, use: use, adding: QuotaChange(databases: 1, awake: 1))?.resource == .awake)
        #expect(QuotaPolicy.check(user: "kate", limits: limits, use: use, adding: QuotaChange(snapshots: 1)) == nil, "a snapshot wakes nothing")
        use.storageBytes = 10 * Self.gib
        #expect(QuotaPolicy.check(user: "kate", limits: limits, use: use, adding: QuotaChange(snapshots: 1))?.resource == .storage)
        // Own limits win over the default; unset ones fall back to it.
        let merged = QuotaLimits(databases: 5).over(QuotaLimits(databases: 1, awake: 2))
        #expect(merged.databases == 5 && merged.awake == 2 && merged.snapshots == nil)
        #expect(QuotaPolicy.checkTTL(user: "kate", limits: QuotaLimits(maxTtlSeconds: 86400), seconds: 2 * 86400)?.resource == .ttl)
        #expect(QuotaPolicy.checkTTL(user: "kate", limits: QuotaLimits(), seconds: 1e9) == nil)
    }

    @Test func sizesParseAndPrint() {
        #expect(ByteCount.parse("20GiB") == 20 * Self.gib)
        #expect(ByteCount.parse("20G") == 20 * Self.gib)
        #expect(ByteCount.parse("512MiB") == 512 << 20)
        #expect(ByteCount.parse("1000") == 1000)
        #expect(ByteCount.parse("lots") == nil)
        #expect(ByteCount.describe(20 * Self.gib) == "20GiB")
    }

    @Test func auditDetailsLoseWhatLooksLikeACredential() {
        let text = "could not fetch https://bob:hunter2@dumps.example/x.dump?X-Amz-Signature=abc123 with ddb_0123abcd and eyJhbGciOi.eyJzdWIi.c2ln password=pw1"
        let s = AuditRecord.scrub(text)
        for secret in ["hunter2", "abc123", "ddb_0123abcd", "eyJhbGciOi", "pw1"] { #expect(!s.contains(secret), "\(secret) in \(s)") }
        #expect(s.contains("dumps.example"))
        let q = AuditQuery(user: "kate", object: "a", action: "snapshot.")
        #expect(q.matches(AuditRecord(user: "kate", how: "token", action: "snapshot.create", object: "a@s1", outcome: "ok")))
        #expect(!q.matches(AuditRecord(user: "lee", how: "token", action: "snapshot.create", object: "a@s1", outcome: "ok")))
        #expect(!q.matches(AuditRecord(user: "kate", how: "token", action: "database.create", object: "a", outcome: "ok")))
    }
}
