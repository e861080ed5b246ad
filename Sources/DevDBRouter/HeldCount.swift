import DevDBNet

/// One unit a session adds to a count it shares with every other session (an open connection, an
/// open session, its route's activity, its address's unfinished starts), given back exactly once:
/// a `HeldCount` cannot be copied and `release` consumes it, so a session keeps each as an
/// optional it `take()`s to release, and no path can give one back twice or forget it is held.
/// Used on its session's loop thread; the counts themselves are atomics or behind their owners'
/// mutexes.
struct HeldCount: ~Copyable {
    enum Count {
        case activeConnection
        case activeSession
        /// Admitted to the route's activity (`RouteActivity.admit`): the hibernation fence sees it.
        case routeActivity(String)
        /// A place among the address's unfinished starts (`StartLimiter.begin`).
        case unfinishedStart(SocketAddress.Host)
    }

    private let count: Count

    /// For a count the caller has just taken (those whose taking is also a decision).
    init(alreadyTaken count: Count) { self.count = count }

    /// Counts an open connection, from its first event on the loop to its close.
    static func connection(in ctx: RouterContext) -> HeldCount {
        ctx.metrics.activeConnections.add(1, ordering: .relaxed)
        return HeldCount(alreadyTaken: .activeConnection)
    }

    /// Counts an open session, from the backend's first ReadyForQuery to the close.
    static func session(in ctx: RouterContext) -> HeldCount {
        ctx.metrics.activeSessions.add(1, ordering: .relaxed)
        return HeldCount(alreadyTaken: .activeSession)
    }

    consuming func release(_ ctx: RouterContext) {
        switch count {
        case .activeConnection: ctx.metrics.activeConnections.subtract(1, ordering: .relaxed)
        case .activeSession: ctx.metrics.activeSessions.subtract(1, ordering: .relaxed)
        case .routeActivity(let route): ctx.activity.closed(route)
        case .unfinishedStart(let host): ctx.starts.end(host)
        }
    }
}
