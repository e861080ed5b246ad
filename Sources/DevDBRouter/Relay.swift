import DevDBCore
import DevDBNet
import DevDBRouterCore
import PostgresWire

/// Moves a handed-off session's bytes both ways between its client and its backend, and rewrites
/// the backend's answer to the startup on the way (the router's cancel key for the backend's).
/// Confined to the session's loop thread, like its legs. The legs' handlers call it directly, so a
/// read costs what it did inside `Session`: one closure call, no lookup of the session's phase.
final class Relay {
    private let ctx: RouterContext
    private let lane: EventLoop
    private let bytes: ByteCounters
    let client: Leg
    let backend: Leg
    private let routeName: String
    private let route: RouteRecord
    private var rewriter = BackendStartupRewriter()
    private var routerKey: BackendKey?
    /// In the open-sessions gauge from the backend's first ReadyForQuery on.
    private var openSession: HeldCount?
    /// Ends the whole session (both legs, every count): the relay's way out when a leg is done or
    /// broken. The relay ends only that way, and the session closes both legs then.
    private let endSession: () -> Void
    private var isOver: Bool { client.isClosed }

    init(ctx: RouterContext, lane: EventLoop, bytes: ByteCounters, client: Leg, backend: Leg,
         routeName: String, route: RouteRecord, endSession: @escaping () -> Void) {
        self.ctx = ctx
        self.lane = lane
        self.bytes = bytes
        self.client = client
        self.backend = backend
        self.routeName = routeName
        self.route = route
        self.endSession = endSession
    }

    /// Takes over both legs' readiness; the client's start bytes are already on their way.
    func start() {
        backend.watchReadable { [self] in pump(from: backend, to: client, backendToClient: true) }
        if backend.hasPending { backend.watchWritable { [self] in legWritable(backend) } }
        client.watchReadable { [self] in clientReadable() }
        clientReadable()
    }

    func clientReadable() { pump(from: client, to: backend, backendToClient: false) }

    /// The session ended: what the relay holds goes back (the session closes the legs).
    func end() {
        if let routerKey { ctx.cancelKeys.unregister(routerKey) }
        openSession.take()?.release(ctx)
    }

    /// Moves bytes from `src` to `dst` until `src` would block, `dst` pushes back, or a
    /// fairness bound is hit. Reads go into the lane's scratch buffer; only what `dst` does not
    /// take at once is copied (into `dst`'s pending bytes), so the steady state allocates nothing.
    private func pump(from src: Leg, to dst: Leg, backendToClient: Bool) {
        var rounds = 0
        // Every way out of the session returns from here at once: no check of it per read.
        while !src.readClosed {
            if dst.hasPending {
                src.pauseReading()
                return
            }
            if rounds == 16 {
                // Let other sessions on this lane run; come back right after them.
                src.pauseReading()
                lane.soon { [self] in
                    guard !isOver else { return }
                    src.resumeReading()
                    pump(from: src, to: dst, backendToClient: backendToClient)
                }
                return
            }
            rounds += 1
            switch src.read(into: lane.scratch) {
            case .bytes(let n):
                let chunk = UnsafeRawBufferPointer(rebasing: lane.scratch[0..<n])
                let ok: Bool
                if backendToClient {
                    bytes.backendToClient.add(n, ordering: .relaxed)
                    if rewriter.isFinished {
                        ok = dst.send(chunk)
                    } else {
                        guard let out = rewriteBackendStartup(chunk) else { return }
                        ok = dst.send(out)
                    }
                } else {
                    bytes.clientToBackend.add(n, ordering: .relaxed)
                    ok = dst.send(chunk)
                }
                guard ok else { return endSession() }
                if dst.hasPending {
                    src.pauseReading()
                    dst.watchWritable { [self] in legWritable(dst) }
                    return
                }
                // A short read drained the socket: skip the read that would only say EAGAIN (the
                // loop reports the socket again when more arrives). TLS reads on only while
                // OpenSSL holds bytes the socket no longer shows.
                if n < lane.scratch.count && !(src.tls?.hasPendingInput ?? false) {
                    src.resumeReading()  // it may have been paused by backpressure
                    return
                }
            case .wouldBlock:
                src.resumeReading()
                return
            case .wantOpposite:
                src.watchWritable { [self] in legWritable(src) }
                return
            case .eof:
                src.readClosed = true
                src.pauseReading()
                dst.shutdownWhenFlushed = true
                if !dst.hasPending { dst.shutdownWrite() }
                if client.readClosed && backend.readClosed { endSession() }
                return
            case .failed(let why):
                ctx.log.debug("relay read failed", ["route": routeName, "error": why])
                return endSession()
            }
        }
    }

    /// `leg` became writable: flush what it owes, then let its peer send again.
    private func legWritable(_ leg: Leg) {
        guard !isOver else { return }
        switch leg.flush() {
        case .blocked: return
        case .failed: return endSession()
        case .done:
            leg.stopWatchingWritable()
            let peer = leg === client ? backend : client
            pump(from: peer, to: leg, backendToClient: leg === client)
            // A TLS read on `leg` may have been waiting for this write.
            if !isOver { pump(from: leg, to: peer, backendToClient: leg === backend) }
        }
    }

    private func rewriteBackendStartup(_ chunk: UnsafeRawBufferPointer) -> [UInt8]? {
        do throws(WireError) {
            let (out, events) = try rewriter.feed(chunk, makeRouterKey: CancelKeyRegistry.makeRouterKey(like:))
            for event in events {
                switch event {
                case .backendKey(let backendKey, let key):
                    routerKey = key
                    ctx.cancelKeys.register(key, target: CancelTarget(route: routeName, host: route.host, port: route.port, backendKey: backendKey))
                case .ready:
                    openSession = HeldCount.session(in: ctx)
                case .backendError(let e):
                    ctx.log.info("backend refused the session", ["route": routeName, "sqlstate": e.sqlState])
                }
            }
            return out
        } catch {
            ctx.log.warning("backend sent an invalid startup message", ["route": routeName, "error": "\(error)"])
            endSession()
            return nil
        }
    }
}
