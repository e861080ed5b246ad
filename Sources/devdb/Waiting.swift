import DevDBAPIContract
import Foundation

// `--wait`: following the API's long work (restores, creates, snapshots) to its end, with one
// progress line per step on stderr.

/// Runs `step` every `milliseconds` until it reports done (or throws). Transient failures (the
/// API unreachable or answering 502/503/504, e.g. while it or Redis restarts) are retried with
/// backoff and said on stderr; past the `--timeout` it exits 8.
func poll(_ waiting: WaitOptions = WaitOptions(), _ what: String = "the work", milliseconds: Int = 300,
          _ step: () async throws -> Bool) async throws {
    let deadline = waiting.deadline
    var backoff = 0.5
    while true {
        if let deadline, Date() >= deadline {
            throw CLIError(description: "timed out after \(waiting.timeout ?? "") waiting for \(what); it goes on in the background", code: Exit.timeout)
        }
        do {
            if try await step() { return }
            backoff = 0.5
            try await Task.sleep(for: .milliseconds(milliseconds))
        } catch let e as CLIError where e.isTransient {
            standardError("warning: \(e.description.split(separator: "\n").first ?? ""); retrying in \(String(format: "%.1f", backoff)) s")
            try await Task.sleep(for: .seconds(backoff))
            backoff = min(backoff * 2, 5)
        }
    }
}

/// Follows generation `number` of a project (its newest when nil) to ready, one progress line per
/// step: "shop generation 2: fetching: 13.4 MiB (4 s)", "shop generation 2: restoring: 40 of 90 items (12 s)".
func waitForGeneration(_ api: APIClient, _ name: String, _ number: Int?, _ waiting: WaitOptions) async throws {
    let progress = ProgressLine()
    defer { progress.finish() }
    try await poll(waiting, number.map { "generation \($0) of \(name)" } ?? "the restore of \(name)", milliseconds: 500) {
        let (p, _) = try await api.call(.project(name))
        let found = number == nil ? p.generations.last : p.generations.first { $0.number == number }
        guard let g = found else {
            if number == nil && p.knownState != .failed { return false }
            if p.knownState == .failed { throw CLIError(description: "project \(name) failed: \(p.reason ?? "no reason given")", code: Exit.failedState) }
            throw CLIError(description: "generation \(number ?? 0) of \(name) disappeared (was the project deleted?)", code: Exit.failure)
        }
        var phase = g.phase
        if g.knownState == .fetching, g.bytesFetched > 0 { phase = "fetching: \(Human.bytes(g.bytesFetched))" }
        if g.knownState == .ready {
            progress.finish()
            standardError("\(name) generation \(g.number): ready, restored in \(Human.duration(g.restoreSeconds))")
            return true
        }
        progress.update(step: progressStep(state: g.state, phase: phase), text: progressText("\(name) generation \(g.number)", state: g.state, phase: phase),
                        since: g.phaseStartedAt)
        if g.knownState == .failed {
            progress.finish()
            throw CLIError(description: "generation \(g.number) of \(name) failed: \(g.reason ?? p.reason ?? "no reason given")", code: Exit.failedState)
        }
        return false
    }
}

/// Polls until the database reaches `state`, one progress line per step with its elapsed time
/// ("kate-pg: restoring: 40 of 90 items (12 s)").
func waitForDatabase(_ api: APIClient, _ name: String, until state: DatabaseState, _ waiting: WaitOptions) async throws {
    let progress = ProgressLine()
    defer { progress.finish() }
    // A database with a short --hibernate-after can be ready and asleep again between two looks:
    // once it has been seen at work, asleep counts as ready (connecting wakes it).
    var seenAtWork = false
    try await poll(waiting, "\(name) to be \(state.rawValue)") {
        let (d, _) = try await api.call(.database(name))
        if d.knownState == state {
            progress.finish()
            return true
        }
        if state == .ready, d.knownState == .hibernating || d.knownState == .hibernated {
            if seenAtWork {
                progress.finish()
                standardError("note: \(name) was ready and is asleep already (its hibernate-after); connecting wakes it")
                return true
            }
        } else {
            seenAtWork = true
        }
        progress.update(step: progressStep(state: d.state, phase: d.phase), text: progressText(name, state: d.state, phase: d.phase), since: d.phaseStartedAt)
        if d.knownState == .failed {
            progress.finish()
            throw CLIError(description: "database \(name) failed: \(d.reason ?? "no reason given")", code: Exit.failedState)
        }
        return false
    }
}

/// Polls until the snapshot `taken` (the answer to taking it) is ready; its last answer, and that
/// answer's body for `-o json`.
func waitForSnapshot(_ api: APIClient, _ database: String, _ taken: (SnapshotView, Data), _ waiting: WaitOptions) async throws -> (SnapshotView, Data) {
    let snap = taken.0.name
    var final = taken
    let progress = ProgressLine()
    defer { progress.finish() }
    try await poll(waiting, "snapshot \(snap) of \(database)") {
        let (s, d) = try await api.call(.snapshot(database, snap))
        final = (s, d)
        if s.knownState == .failed {
            throw CLIError(description: "snapshot \(snap) of \(database) failed: \(s.reason ?? "no reason given")", code: Exit.failedState)
        }
        if s.knownState != .ready { progress.update(step: s.state, text: "snapshot \(snap) of \(database): \(s.state)", since: nil) }
        return s.knownState == .ready
    }
    progress.finish()
    return final
}
