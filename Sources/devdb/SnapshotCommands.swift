import ArgumentParser
import DevDBAPIContract
import Foundation

// `devdb db snapshot` (take, delete) and `devdb db snapshots`: a database's saved states.
extension DBCommand {
    /// `devdb db snapshot`: takes a snapshot by default, or deletes one.
    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Save a database's state as a snapshot, or delete one.",
            discussion: "devdb db snapshot NAME [--as SNAP] [--wait] saves; devdb db snapshot delete NAME SNAP deletes.",
            subcommands: [Take.self, DeleteSnapshot.self], defaultSubcommand: Take.self)
    }

    struct Take: APICommand {
        static let configuration = CommandConfiguration(
            commandName: "take",
            abstract: "Save NAME's state now as a snapshot (the database stops for a moment, then serves again).")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        @Option(name: .customLong("as"), help: ArgumentHelp("The snapshot's name (a DNS label; default: the UTC time, YYYYMMDD-HHMMSS).", valueName: "snap"))
        var snapshot: String?
        @OptionGroup var waiting: WaitOptions
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            var body = CreateSnapshotRequest()
            body.name = snapshot
            let (taken, data) = try await api.call(.takeSnapshot(name, body))
            let snap = taken.name
            if waiting.wait {
                let (final, finalData) = try await waitForSnapshot(api, name, (taken, data), waiting)
                return output.render(finalData) {
                    print("snapshot \(snap) of \(name) taken (\(final.method ?? "-"), \(Human.bytes(final.sizeBytes))); \(name) was unavailable for \(Human.duration(final.unavailableSeconds))")
                }
            }
            output.render(data) { print("snapshot \(snap) of \(name) is being taken (devdb db snapshots \(name))") }
        }
    }

    struct DeleteSnapshot: APICommand {
        static let configuration = CommandConfiguration(commandName: "delete", abstract: "Delete a snapshot no branch uses.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        @Argument(help: "The snapshot (devdb db snapshots NAME).") var snapshot: String
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            _ = try await api.send(.deleteSnapshot(name, snapshot))
            output.acknowledge("snapshot \(snapshot) of \(name) deleted")
        }
    }

    struct Snapshots: APICommand {
        static let configuration = CommandConfiguration(abstract: "List a database's snapshots.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var database: DatabaseArgument
        var name: String { database.name }
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let (list, data) = try await api.call(.snapshots(name))
            output.render(data) {
                printTable(["name", "created", "size", "state", "method", "unavailable", "branches", "reason"], list.items.map { s in
                    [s.name, Human.relative(s.createdAt), Human.bytes(s.sizeBytes), s.state, s.method ?? "-", Human.duration(s.unavailableSeconds),
                     s.branches.isEmpty ? "-" : s.branches.joined(separator: ","), s.reason ?? "-"]
                })
            }
        }
    }
}
