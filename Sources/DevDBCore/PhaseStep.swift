/// The step a phase text names: what comes before its details ("restoring: 40 of 90 items" is the
/// step "restoring"), so progress within a step keeps the step's start time (the catalog) and its
/// line (the CLI).
public func phaseStep(_ phase: String?) -> String? {
    phase.map { text in
        let head = text.prefix { $0 != ":" && $0 != "(" }
        return String(head.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
