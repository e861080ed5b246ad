import ArgumentParser
import DevDBAPIContract
import DevDBSchema
import Foundation
#if canImport(Glibc)
import Glibc
#endif

extension DBCommand {
    /// `devdb db diff A B`: what differs in the schema from A to B.
    struct Diff: APICommand {
        static let configuration = CommandConfiguration(
            abstract: "Show what differs in the schema from A to B, object by object.",
            discussion: """
                Each side is one of your databases (NAME), one of its snapshots (NAME@SNAP) or a project's generation (PROJECT@N, PROJECT@latest): devdb db diff shop@latest pr-42 shows what a migration run on pr-42 changed.
                Compared: extensions, schemas, types (enums, composites, ranges), domains, sequences, tables (partitions too), columns (type, default, not null, identity, generated), constraints, indexes, views, functions, procedures and triggers. Lines start with + (only in B), - (only in A) or ~ (changed, with each property A -> B). Identical schemas print nothing.
                """)
        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("Side A (the older): NAME, NAME@SNAP, PROJECT@N or PROJECT@latest.", valueName: "a")) var a: String
        @Argument(help: ArgumentHelp("Side B (the newer), likewise.", valueName: "b")) var b: String
        @Flag(name: .customLong("exit-code"), help: "Exit 1 when the schemas differ, 0 when they are the same (errors exit with their own codes, above 1).")
        var exitCode = false

        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let (diff, data) = try await api.call(.diff(a, b))
            output.render(data) { print(SchemaDiffText.render(diff.changes), terminator: "") }
            fflush(nil)
            if exitCode && !diff.identical { Glibc.exit(1) }
        }
    }
}
