import Foundation

/// A five-field cron schedule (minute hour day-of-month month day-of-week), in UTC. Fields take
/// `*`, numbers, ranges `a-b`, lists `a,b` and steps `*/n` or `a-b/n`; day-of-week 0 and 7 are
/// Sunday. When both day fields are restricted, a day matching either runs (as in cron).
public struct CronSchedule: Sendable, Equatable, CustomStringConvertible {
    public let description: String
    let minutes: Set<Int>, hours: Set<Int>, days: Set<Int>, months: Set<Int>, weekdays: Set<Int>
    let anyDay: Bool, anyWeekday: Bool

    public struct ParseError: Error, CustomStringConvertible { public let description: String }

    public init(parsing text: String) throws(ParseError) {
        let fields = text.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard fields.count == 5 else {
            throw ParseError(description: "a schedule has five fields (minute hour day month weekday, UTC), e.g. \"0 3 * * 1-5\"; got \"\(text)\"")
        }
        description = fields.joined(separator: " ")
        minutes = try Self.field(fields[0], 0...59, "minute")
        hours = try Self.field(fields[1], 0...23, "hour")
        days = try Self.field(fields[2], 1...31, "day of month")
        months = try Self.field(fields[3], 1...12, "month")
        weekdays = Set(try Self.field(fields[4], 0...7, "day of week").map { $0 % 7 })
        anyDay = fields[2] == "*"
        anyWeekday = fields[4] == "*"
    }

    static func field(_ text: String, _ range: ClosedRange<Int>, _ name: String) throws(ParseError) -> Set<Int> {
        var out: Set<Int> = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2, let base = pieces.first else { throw ParseError(description: "bad \(name) \"\(part)\"") }
            var step = 1
            if pieces.count == 2 {
                guard let s = Int(pieces[1]), s > 0 else { throw ParseError(description: "bad step in \(name) \"\(part)\"") }
                step = s
            }
            let bounds: ClosedRange<Int>
            if base == "*" {
                bounds = range
            } else if let dash = base.firstIndex(of: "-") {
                guard let a = Int(base[..<dash]), let b = Int(base[base.index(after: dash)...]), a <= b else {
                    throw ParseError(description: "bad range in \(name) \"\(part)\"")
                }
                bounds = a...b
            } else {
                guard let n = Int(base) else { throw ParseError(description: "bad \(name) \"\(part)\"") }
                bounds = n...(pieces.count == 2 ? range.upperBound : n)
            }
            guard range.contains(bounds.lowerBound), range.contains(bounds.upperBound) else {
                throw ParseError(description: "\(name) \"\(part)\" is outside \(range.lowerBound)-\(range.upperBound)")
            }
            out.formUnion(stride(from: bounds.lowerBound, through: bounds.upperBound, by: step))
        }
        return out
    }

    static let utc: Calendar = {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        return c
    }()

    func dayMatches(_ c: DateComponents) -> Bool {
        guard let day = c.day, let month = c.month, let weekday = c.weekday, months.contains(month) else { return false }
        let dom = days.contains(day), dow = weekdays.contains(weekday - 1)
        if anyDay && anyWeekday { return true }
        if anyDay { return dow }
        if anyWeekday { return dom }
        return dom || dow
    }

    /// The first time strictly after `date` that the schedule names (nil if none within 5 years).
    public func next(after date: Date) -> Date? {
        let cal = Self.utc
        var day = cal.startOfDay(for: date)
        for _ in 0..<(366 * 5) {
            let c = cal.dateComponents([.day, .month, .weekday], from: day)
            if dayMatches(c) {
                for h in hours.sorted() {
                    for m in minutes.sorted() {
                        let t = day.addingTimeInterval(Double(h * 3600 + m * 60))
                        if t > date { return t }
                    }
                }
            }
            day = cal.date(byAdding: .day, value: 1, to: day)!
        }
        return nil
    }
}

/// Whether a project gets a new generation now: its dump changed (when it refreshes on change)
/// or its schedule came due. Pure: the API's refresher gives it the time and what it saw.
public enum RefreshPolicy {
    public enum Reason: Sendable, Equatable {
        case changed(fingerprint: String)
        case scheduled(at: Date)
    }

    /// `fingerprint`: what the dump looks like now (nil when it could not be checked or the project
    /// does not refresh on change). Nothing while a generation is seeding: changes seen during a
    /// seed make one generation after it, not one each.
    public static func decide(_ p: Project, generations: [Generation], now: Date, fingerprint: String?) -> Reason? {
        guard p.state != .deleting, !generations.contains(where: GenerationLifecycle.isSeeding) else { return nil }
        if p.refreshOnChange == true, let fingerprint, fingerprint != p.dumpFingerprint {
            return .changed(fingerprint: fingerprint)
        }
        if let text = p.refreshSchedule, let schedule = try? CronSchedule(parsing: text),
           let due = schedule.next(after: p.lastScheduledRefresh ?? p.createdAt), due <= now {
            return .scheduled(at: now)
        }
        return nil
    }
}
