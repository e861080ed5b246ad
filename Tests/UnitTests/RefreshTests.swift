import Foundation
import Testing
@testable import DevDBCatalog

@Suite struct RefreshTests {
    static func utc(_ text: String) -> Date {
        let f = ISO8601DateFormatter()
        return f.date(from: text)!
    }

    @Test func cronSchedulesParseAndStepForwardInUTC() throws {
        let daily = try CronSchedule(parsing: "0 3 * * *")
        #expect(daily.next(after: Self.utc("2026-11-27T02:59:00Z")) == Self.utc("2026-11-27T03:00:00Z"))
        #expect(daily.next(after: Self.utc("2026-11-27T03:00:00Z")) == Self.utc("2026-11-28T03:00:00Z"), "strictly after")
        let weekdays = try CronSchedule(parsing: "30 6 * * 1-5")
        // 2026-11-27 is a Friday: the next weekday run after Friday 07:00 is Monday 06:30.
        #expect(weekdays.next(after: Self.utc("2026-11-27T07:00:00Z")) == Self.utc("2026-11-30T06:30:00Z"))
        let every15 = try CronSchedule(parsing: "*/15 * * * *")
        #expect(every15.next(after: Self.utc("2026-11-27T10:16:00Z")) == Self.utc("2026-11-27T10:30:00Z"))
        let sundays = try CronSchedule(parsing: "0 0 * * 7")
        #expect(sundays.next(after: Self.utc("2026-11-27T00:00:00Z")) == Self.utc("2026-11-29T00:00:00Z"))
        // Both day fields restricted: either matches (cron's rule).
        let either = try CronSchedule(parsing: "0 12 1 * 1")
        #expect(either.next(after: Self.utc("2026-11-27T00:00:00Z")) == Self.utc("2026-11-30T12:00:00Z"))
        #expect(try CronSchedule(parsing: "5,35 1-3/2 1 1,6 *").next(after: Self.utc("2026-01-01T01:06:00Z")) == Self.utc("2026-01-01T01:35:00Z"))
        for bad in ["", "* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "*/0 * * * *", "a * * * *", "5-1 * * * *"] {
            #expect(throws: CronSchedule.ParseError.self, "\(bad)") { _ = try CronSchedule(parsing: bad) }
        }
    }

    func project(onChange: Bool = false, schedule: String? = nil, fingerprint: String? = "etag=1", created: String = "2026-11-27T00:00:00Z") -> Project {
        var p = Project(name: "shop", postgresMajor: 15, dumpUrl: "https://x/shop.dump", state: .ready, createdAt: Self.utc(created))
        p.refreshOnChange = onChange
        p.refreshSchedule = schedule
        p.dumpFingerprint = fingerprint
        return p
    }

    @Test func aChangedDumpRefreshesOnlyProjectsThatAskForIt() {
        let now = Self.utc("2026-11-27T12:00:00Z")
        let ready = [Generation(project: "shop", number: 1, state: .ready)]
        #expect(RefreshPolicy.decide(project(onChange: true), generations: ready, now: now, fingerprint: "etag=2") == .changed(fingerprint: "etag=2"))
        #expect(RefreshPolicy.decide(project(onChange: true), generations: ready, now: now, fingerprint: "etag=1") == nil, "unchanged")
        #expect(RefreshPolicy.decide(project(onChange: true), generations: ready, now: now, fingerprint: nil) == nil, "could not check")
        #expect(RefreshPolicy.decide(project(onChange: false), generations: ready, now: now, fingerprint: "etag=2") == nil)
        // While a generation seeds, nothing: two changes during one seed make one more generation.
        let seeding = ready + [Generation(project: "shop", number: 2, state: .restoring)]
        #expect(RefreshPolicy.decide(project(onChange: true), generations: seeding, now: now, fingerprint: "etag=3") == nil)
    }

    @Test func schedulesComeDueOnceWithAnInjectedClock() {
        let ready = [Generation(project: "shop", number: 1, state: .ready)]
        var p = project(schedule: "0 3 * * *")
        #expect(RefreshPolicy.decide(p, generations: ready, now: Self.utc("2026-11-27T02:59:59Z"), fingerprint: nil) == nil)
        let at = Self.utc("2026-11-27T03:00:30Z")
        #expect(RefreshPolicy.decide(p, generations: ready, now: at, fingerprint: nil) == .scheduled(at: at))
        // Recorded with the generation: the same run does not come due again, the next day's does.
        p.lastScheduledRefresh = at
        #expect(RefreshPolicy.decide(p, generations: ready, now: Self.utc("2026-11-27T23:00:00Z"), fingerprint: nil) == nil)
        #expect(RefreshPolicy.decide(p, generations: ready, now: Self.utc("2026-11-28T03:00:00Z"), fingerprint: nil) != nil)
        // An API that was down at 03:00 refreshes when it is back (once), not never.
        p.lastScheduledRefresh = Self.utc("2026-11-26T03:00:00Z")
        #expect(RefreshPolicy.decide(p, generations: ready, now: Self.utc("2026-11-27T09:00:00Z"), fingerprint: nil) != nil)
        var deleting = p
        deleting.state = .deleting
        #expect(RefreshPolicy.decide(deleting, generations: ready, now: Self.utc("2026-11-28T09:00:00Z"), fingerprint: nil) == nil)
    }
}
