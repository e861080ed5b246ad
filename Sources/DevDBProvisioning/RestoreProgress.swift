import Foundation

/// How far a `pg_restore -v` is: items done of the archive's TOC entries, read from its verbose
/// output. Serial restores print one "creating …", "processing data for …" or "executing …" line
/// per item as it starts; parallel ones (`-j`) print "processing item ID" for the items restored
/// before the parallel loop and "finished item ID" for each one done in it. The count never
/// passes the total.
public struct RestoreProgress: Sendable, Equatable {
    public var done: Int
    public var total: Int
    public init(done: Int, total: Int) { self.done = done; self.total = total }

    /// The dump IDs of the entries `pg_restore -l` lists (comment lines start with ";").
    public static func tocEntries(_ list: String) -> Set<Int> {
        var ids = Set<Int>()
        for line in list.split(separator: "\n") where !line.hasPrefix(";") {
            if let id = Int(line.prefix { $0 != ";" }.trimmingCharacters(in: .whitespaces)) { ids.insert(id) }
        }
        return ids
    }

    public static func read(verbose output: String, toc: Set<Int>) -> RestoreProgress {
        var parallel = Set<Int>()
        var serial = 0
        for line in output.split(separator: "\n") {
            guard line.hasPrefix("pg_restore: ") else { continue }
            let text = line.dropFirst("pg_restore: ".count)
            for marker in ["processing item ", "finished item "] where text.hasPrefix(marker) {
                if let id = Int(text.dropFirst(marker.count).prefix { $0.isNumber }), toc.contains(id) { parallel.insert(id) }
            }
            if text.hasPrefix("creating ") || text.hasPrefix("processing data for ") || text.hasPrefix("executing ") { serial += 1 }
        }
        let done = parallel.isEmpty ? serial : parallel.count
        return RestoreProgress(done: min(done, toc.count), total: toc.count)
    }

    /// The phase text: "restoring: 812 of 1204 items".
    public var phase: String { "restoring: \(done) of \(total) items" }
}
