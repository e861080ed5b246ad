import DevDBCore
import Foundation

/// What the catalog shares with routers (routes, fences, activity, wake requests), and port leases.
extension CatalogEngine {
    func activities(_ names: [String], now: Date, fresh: Double) throws -> [String: RouteUsage] {
        var out: [String: RouteUsage] = [:]
        for (name, fields) in zip(names, try backend.hashes(names.map(RouteContract.activityKey))) {
            out[name] = Self.activity(from: fields, now: now, fresh: fresh)
        }
        return out
    }

    static func activity(from fields: [String: String], now: Date, fresh: Double) -> RouteUsage {
        var open = 0
        var last: Double?
        for (_, value) in fields {
            let parts = value.split(separator: " ").compactMap { Double($0) }
            guard parts.count == 3 else { continue }
            if now.timeIntervalSince1970 - parts[2] <= fresh { open += Int(parts[0]) }
            last = max(last ?? 0, parts[1])
        }
        return RouteUsage(open: open, lastActive: last.map { Date(timeIntervalSince1970: $0) })
    }

    func wakeRequests() throws -> [String] { try members(RouteContract.wakeRequests) }

    func clearWakeRequest(_ name: String) throws { _ = try commit(Transaction(writes: [.setRemove(RouteContract.wakeRequests, name)])) }

    func announceRoute(_ name: String) throws {
        _ = try commit(Transaction(writes: [.publish(channel: RouteContract.routesChannel, message: name)]))
    }

    func liveRouters() throws -> [String: Double] { try fenceReport("", token: "").routers }

    func fenceReport(_ name: String, token: String) throws -> FenceReport {
        var report = FenceReport()
        for r in try backend.liveRouters(acksKey: RouteContract.fenceAcksKey(name)) {
            report.routers[r.id] = Double(r.interval) ?? 5
            if let ack = r.acknowledgement {
                let parts = ack.split(separator: " ")
                if parts.count == 2, parts[0] == token, let open = Int(parts[1]) { report.acknowledged[r.id] = open }
            }
        }
        return report
    }

    func route(_ name: String) throws -> RouteRecord? {
        let fields = try backend.hash(RouteContract.routeKey(name))
        return fields.isEmpty ? nil : try? RouteRecord(fields: fields)
    }

    /// The routes of many databases, pipelined (1,000 a round trip); absent ones are left out.
    func routes(_ names: [String]) throws -> [String: RouteRecord] {
        var out: [String: RouteRecord] = [:]
        for (name, fields) in zip(names, try backend.hashes(names.map(RouteContract.routeKey))) where !fields.isEmpty {
            out[name] = try? RouteRecord(fields: fields)
        }
        return out
    }

    func routedNames() throws -> [String] {
        try backend.scan(RouteContract.routeKey("*")).map { String($0.dropFirst(RouteContract.routeKey("").count)) }
    }

    func removeRoute(_ name: String, ifDatabaseIs raw: String?) throws -> Bool {
        var t = Transaction(guards: [.value(Key.database(name), raw), .exists(RouteContract.routeKey(name))],
                            writes: [.delete([RouteContract.routeKey(name)])] + Self.endFence(name))
        t.publish = [name]
        return try commit(t)
    }

    // MARK: port leases

    func claimPort(_ port: Int, for name: String) throws -> Bool {
        try optimistic("a port for \(name)") { () throws -> (Transaction, Bool)? in
            guard let (d, raw) = try getRaw(DatabaseRecord.self, Key.database(name)) else {
                throw CatalogError.notFound("database \"\(name)\" was deleted")
            }
            if let mine = d.backendPort, mine != port { return (Transaction(), false) }
            var next = d
            next.backendPort = port
            next.backendHost = d.backendHost ?? "127.0.0.1"
            var t = Transaction(guards: [.value(Key.database(name), raw)])
            if d.backendPort != port {
                let owner = try backend.hashField(Key.ports, String(port))
                if owner != nil && owner != name { return (Transaction(), false) }
                t.guards.append(.field(Key.ports, String(port), owner))
            }
            t.writes = [.hashSet(Key.ports, [.init(String(port), name)]), .set(Key.database(name), Self.encode(next))]
            t.writes += Self.indexWrites(name, before: d, after: next)
            return (t, true)
        } ?? false
    }

    func releaseLease(_ port: Int, owner: String, ifDatabaseIs raw: String?) throws -> Bool {
        try commit(Transaction(guards: [.value(Key.database(owner), raw), .field(Key.ports, String(port), owner)],
                               writes: [.hashDeleteIfEquals(Key.ports, field: String(port), value: owner)]))
    }

    func portOwners() throws -> [Int: String] {
        var out: [Int: String] = [:]
        for (k, v) in try backend.hash(Key.ports) { if let p = Int(k) { out[p] = v } }
        return out
    }

    // MARK: tokens

    func createToken(user: String, admin: Bool) throws -> (token: String, record: TokenRecord) {
        let token = "ddb_" + TokenSecrets.randomHex(24)
        let record = TokenRecord(id: "tok_" + TokenSecrets.randomHex(6), user: user, admin: admin)
        try storeToken(hash: TokenSecrets.sha256Hex(token), record)
        return (token, record)
    }

    func storeToken(hash: String, _ record: TokenRecord) throws {
        _ = try commit(Transaction(writes: [.set(Key.tokenByHash(hash), Self.encode(record)), .set(Key.tokenByID(record.id), hash),
                                            .setAdd(Key.tokens, record.id)]))
    }

    func token(plaintext: String) throws -> TokenRecord? {
        try getJSON(TokenRecord.self, Key.tokenByHash(TokenSecrets.sha256Hex(plaintext)))
    }

    func tokens() throws -> [TokenRecord] {
        var out: [TokenRecord] = []
        for id in try members(Key.tokens) {
            if let hash = try backend.get(Key.tokenByID(id)), let r = try getJSON(TokenRecord.self, Key.tokenByHash(hash)) { out.append(r) }
        }
        return out
    }

    func revokeToken(id: String) throws {
        guard let hash = try backend.get(Key.tokenByID(id)) else { throw CatalogError.notFound("token \(id) does not exist") }
        _ = try commit(Transaction(writes: [.delete([Key.tokenByHash(hash), Key.tokenByID(id)]), .setRemove(Key.tokens, id)]))
    }
}
