import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The `devdb` command: its subcommands, help and version, and how errors become exit codes
/// (each command group is in its own file: ConfigCommands, AuthCommands, ProjectCommands,
/// DatabaseCommands, SnapshotCommands, TokenCommands).
@main
struct DevDB: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devdb",
        abstract: "Your own data-filled PostgreSQL databases, made from a project's pg_dump.",
        discussion: """
            Getting started:
              devdb config set-server https://devdb.example.com
              devdb login --with-token < token.txt    (or: devdb login --sso)
              devdb db create --project shop --wait
              devdb db connect NAME

            Every command has --help. Tables are for people; -o json gives the API's exact values.
            Shell completions: devdb --generate-completion-script bash (or zsh, fish).

            Exit codes:
              0 ok             4 not authorized
              1 error          5 not found
              2 usage          6 conflict
              3 API unreachable 7 ended in state failed (--wait)
                               8 --timeout passed (the work goes on)
            """,
        version: DevDB.version,
        subcommands: [ConfigCommand.self, Login.self, Logout.self, WhoAmI.self, AuthCommand.self, ProjectCommand.self, DBCommand.self, TokenCommand.self, NameFor.self,
                      QuotaCommand.self, AuditCommand.self, UsageCommand.self])

    static let version = "0.2.0"

    /// Whether the command line asked for JSON (errors then go to stderr as JSON too).
    static var wantsJSON: Bool {
        let args = CommandLine.arguments
        return zip(args, args.dropFirst()).contains { ($0.0 == "-o" || $0.0 == "--output") && $0.1 == "json" }
            || args.contains("--output=json") || args.contains("-ojson")
    }

    /// For a mistyped subcommand ("devdb db craete"): what was meant, or the list of what exists.
    static func unknownSubcommand(_ args: [String]) -> String? {
        var command: any ParsableCommand.Type = DevDB.self
        var path = "devdb"
        for arg in args {
            let subcommands = command.configuration.subcommands
            guard !arg.hasPrefix("-"), arg != "help", !subcommands.isEmpty else { return nil }
            // With a default subcommand ("devdb db snapshot NAME"), other words are its arguments.
            if command.configuration.defaultSubcommand != nil, !subcommands.contains(where: { $0._commandName == arg }) { return nil }
            if let next = subcommands.first(where: { $0._commandName == arg }) {
                command = next
                path += " " + arg
                continue
            }
            let names = subcommands.map { $0._commandName }
            let scored = names.map { ($0, editDistance($0, arg)) }.sorted { $0.1 < $1.1 }
            if let best = scored.first, best.1 <= 2 {
                return "error: unknown command \"\(arg)\" for \"\(path)\"; did you mean \"\(path) \(best.0)\"?"
            }
            return "error: unknown command \"\(arg)\" for \"\(path)\"; its commands are \(names.joined(separator: ", ")) (\(path) --help)"
        }
        return nil
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in stride(from: 1, through: b.count, by: 1) {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }

    static func main() async {
        if let problem = unknownSubcommand(Array(CommandLine.arguments.dropFirst())) {
            standardError(problem)
            Glibc.exit(Exit.usage)
        }
        do {
            var command = try parseAsRoot()
            if var async = command as? AsyncParsableCommand { try await async.run() } else { try command.run() }
        } catch let e as CLIError {
            if wantsJSON {
                struct JSONError: Encodable { var error: String; var exitCode: Int32; var status: Int? }
                let encoder = JSONEncoder()
                encoder.keyEncodingStrategy = .convertToSnakeCase
                encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                let data = (try? encoder.encode(JSONError(error: e.description, exitCode: e.code, status: e.status))) ?? Data()
                standardError(String(decoding: data, as: UTF8.self))
            } else {
                standardError("error: \(e.description)")
            }
            Glibc.exit(e.code)
        } catch {
            // Usage errors exit 2, as documented (ArgumentParser's own code would be 64).
            if exitCode(for: error) == .validationFailure {
                standardError(fullMessage(for: error))
                Glibc.exit(Exit.usage)
            }
            exit(withError: error)
        }
    }
}
