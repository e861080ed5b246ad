import ArgumentParser
import Foundation

/// A command that talks to the API. `run()` looks up the server and token in effect once, here,
/// and hands the command the client and the output mode, so a command only says what to call and
/// what to print.
protocol APICommand: AsyncParsableCommand {
    var global: GlobalOptions { get }

    /// What must come before the server is looked up (a question on a terminal), so that its
    /// answer or error comes first. Nothing by default.
    func prepare() throws

    func run(_ api: APIClient, _ output: OutputFormat) async throws

    /// Whether `-o env|dotenv|github` make sense (a command that shows one database's connection).
    static var printsConnection: Bool { get }
}

extension APICommand {
    func prepare() throws {}
    static var printsConnection: Bool { false }

    func run() async throws {
        if global.output.isConnection && !Self.printsConnection {
            throw ValidationError("-o \(global.output.rawValue) prints a database's connection: use it with devdb db create or devdb db show (here: table or json)")
        }
        try prepare()
        try await run(await global.client(), global.output)
    }
}

extension OutputFormat {
    /// An answer of the API: its exact body with `-o json`; for tables, what `table` prints.
    func render(_ data: Data, table: () throws -> Void) rethrows {
        if self == .json { printJSON(data) } else { try table() }
    }

    /// An answer with nothing to show (a delete, a revoke): `text` for people, `{}` for scripts.
    func acknowledge(_ text: String) {
        print(self == .table ? text : "{}")
    }
}
