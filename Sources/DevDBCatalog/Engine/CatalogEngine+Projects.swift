import Foundation

/// Projects and generations.
extension CatalogEngine {
    func createProject(_ p: Project, firstGeneration: Bool) throws -> Generation? {
        var t = Transaction()
        t.guards = [.value(Key.project(p.name), nil)]
        t.writes = [.set(Key.project(p.name), Self.encode(p)), .setAdd(Key.projects, p.name)]
        var g: Generation?
        if firstGeneration {
            // A new project starts at generation 1 (a leftover counter of an old project of this name is replaced).
            let first = Generation(project: p.name, number: 1)
            g = first
            t.writes += [.delete([Key.generations(p.name)]), .set(Key.generationSeq(p.name), "1"),
                         .set(Key.generation(p.name, 1), Self.encode(first)), .listAppend(Key.generations(p.name), "1")]
        }
        guard try commit(t) else { throw CatalogError.conflict("project \"\(p.name)\" already exists") }
        return g
    }

    func project(_ name: String) throws -> Project? { try getJSON(Project.self, Key.project(name)) }

    func projects() throws -> [Project] { try getMany(Project.self, try members(Key.projects).map(Key.project)) }

    func projectDatabases(_ name: String) throws -> [String] { try members(Key.projectDatabases(name)) }

    func requestProjectDelete(_ name: String) throws -> ProjectLifecycle.DeleteDecision? {
        try optimistic("deleting project \(name)") { () throws -> (Transaction, ProjectLifecycle.DeleteDecision)? in
            guard let (p, raw) = try getRaw(Project.self, Key.project(name)) else { return nil }
            let dbs = try projectDatabases(name)
            let decision = ProjectLifecycle.delete(p, databases: dbs)
            var t = Transaction()
            t.guards = [.value(Key.project(name), raw), .cardinality(Key.projectDatabases(name), 0)]
            guard case .commit(let next) = decision else {
                // Nothing to write; the empty transaction still checks nothing changed underneath.
                t.guards = [.value(Key.project(name), raw)]
                return (t, decision)
            }
            t.writes = [.set(Key.project(name), Self.encode(next))]
            return (t, decision)
        }
    }

    func removeProject(_ name: String) throws {
        var keys = [Key.project(name), Key.generations(name), Key.generationSeq(name), Key.projectDatabases(name)]
        keys += try backend.scan("devdb:generation:\(name):*")
        _ = try commit(Transaction(writes: [.delete(keys), .setRemove(Key.projects, name)]))
    }

    func updateProject(_ name: String, _ change: (inout Project) throws -> Void) throws -> Project? {
        try optimistic("project \(name)") { () throws -> (Transaction, Project)? in
            guard let (p, raw) = try getRaw(Project.self, Key.project(name)) else { return nil }
            var next = p
            try change(&next)
            return (Transaction(guards: [.value(Key.project(name), raw)], writes: [.set(Key.project(name), Self.encode(next))]), next)
        }
    }

    func newGeneration(project: String, fingerprint: String?, scheduledAt: Date?) throws -> Generation? {
        try optimistic("a new generation of \(project)") { () throws -> (Transaction, Generation)? in
            guard let (p, raw) = try getRaw(Project.self, Key.project(project)), p.state != .deleting else { return nil }
            let seq = try backend.get(Key.generationSeq(project))
            let n = (seq.flatMap { Int($0) } ?? 0) + 1
            let g = Generation(project: project, number: n)
            var t = Transaction()
            t.guards = [.value(Key.project(project), raw), .value(Key.generationSeq(project), seq)]
            t.writes = [.set(Key.generationSeq(project), String(n)), .set(Key.generation(project, n), Self.encode(g)),
                        .listAppend(Key.generations(project), String(n))]
            var seeding = p
            seeding.state = p.state == .failed ? .seeding : p.state
            if let fingerprint { seeding.dumpFingerprint = fingerprint }
            if let scheduledAt { seeding.lastScheduledRefresh = scheduledAt }
            if seeding != p { t.writes.append(.set(Key.project(project), Self.encode(seeding))) }
            return (t, g)
        }
    }

    func generation(_ project: String, _ number: Int) throws -> Generation? {
        try getJSON(Generation.self, Key.generation(project, number))
    }

    func apply(_ event: GenerationLifecycle.Event, project: String, generation number: Int) throws -> Generation? {
        try optimistic("generation \(number) of \(project)") { () throws -> (Transaction, Generation)? in
            guard let (g, raw) = try getRaw(Generation.self, Key.generation(project, number)),
                  var next = GenerationLifecycle.decide(g, event) else { return nil }
            next.stampPhase(since: g)
            var t = Transaction(guards: [.value(Key.generation(project, number), raw)],
                                writes: [.set(Key.generation(project, number), Self.encode(next))])
            if next.state == .ready || next.state == .failed, let (p, praw) = try getRaw(Project.self, Key.project(project)) {
                let all = try generations(project).map { $0.number == number ? next : $0 }
                if let np = ProjectLifecycle.afterSeed(p, generations: all) {
                    t.guards.append(.value(Key.project(project), praw))
                    t.writes.append(.set(Key.project(project), Self.encode(np)))
                }
            }
            return (t, next)
        }
    }

    func failGeneration(_ g: Generation, reason: String) throws {
        _ = try optimistic("generation \(g.number) of \(g.project)") { () throws -> (Transaction, Void)? in
            guard let (cur, raw) = try getRaw(Generation.self, Key.generation(g.project, g.number)), cur.state != .failed else { return nil }
            var next = cur
            next.state = .failed; next.reason = reason
            return (Transaction(guards: [.value(Key.generation(g.project, g.number), raw)],
                                writes: [.set(Key.generation(g.project, g.number), Self.encode(next))]), ())
        }
    }

    func generations(_ project: String) throws -> [Generation] {
        let numbers = try backend.list(Key.generations(project)).compactMap { Int($0) }
        return try getMany(Generation.self, numbers.map { Key.generation(project, $0) })
    }

    func removeGeneration(_ g: Generation) throws {
        _ = try commit(Transaction(writes: [.delete([Key.generation(g.project, g.number)]), .listRemove(Key.generations(g.project), String(g.number))]))
    }

    func strayGenerationKeys(known: Set<String>) throws -> [StrayKey] {
        try backend.scan("devdb:generation:*").compactMap { key in
            let parts = key.split(separator: ":")
            guard parts.count == 4, !known.contains(String(parts[2])) else { return nil }
            return StrayKey(key: key, project: String(parts[2]))
        }
    }

    /// Deletes a key left by a project that no longer exists (guarded: the project is still
    /// absent and the key still there).
    func removeStrayKey(_ s: StrayKey) throws -> Bool {
        try commit(Transaction(guards: [.value(Key.project(s.project), nil), .exists(s.key)], writes: [.delete([s.key])]))
    }
}
