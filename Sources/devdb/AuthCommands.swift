import ArgumentParser
import DevDBAPIContract
import Foundation

/// `devdb login`: checks a token against the API and saves it with the server.
struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a token against the API and save it.",
        discussion: "Prefer --with-token (the token read from standard input, e.g. devdb login --with-token < token.txt): a --token on the command line is visible to every user of the machine in ps.")
    @Option(help: "An API token from your DevDB admin (visible in ps; prefer --with-token).") var token: String?
    @Flag(name: .customLong("with-token"), help: "Read the token from standard input.") var withToken = false
    @Option(help: "API address to save as well.") var server: String?

    func validate() throws {
        if withToken == (token != nil) { throw ValidationError("give the token either with --with-token (from standard input) or --token, exactly one") }
    }

    // Not an APICommand: its server and token come from its own options and the environment, not
    // the saved config it is about to write.
    func run() async throws {
        var token = self.token ?? ""
        if withToken {
            token = (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw CLIError(description: "no token on standard input", code: Exit.usage) }
        }
        var c = CLIConfig.load()
        guard let srv = server ?? ProcessInfo.processInfo.environment["DEVDB_SERVER"] ?? c.server else {
            throw CLIError(description: "no DevDB server configured: pass --server or run \"devdb config set-server URL\"", code: Exit.failure)
        }
        _ = try await APIClient(server: srv, token: token).call(.whoAmI)
        c.server = srv
        c.token = token
        try c.save()
        print("logged in to \(srv); token saved in \(CLIConfig.path.path)")
    }
}

/// `devdb logout`: forgets the saved token.
struct Logout: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forget the saved token (the server stays saved).")
    func run() throws {
        var c = CLIConfig.load()
        let had = c.token != nil
        c.token = nil
        try c.save()
        print(had ? "logged out: the token is removed from \(CLIConfig.path.path)" : "no token was saved")
    }
}

/// `devdb whoami`: the token's user and the server.
struct WhoAmI: APICommand {
    static let configuration = CommandConfiguration(commandName: "whoami", abstract: "Show which user the token belongs to, and on which server.")
    @OptionGroup var global: GlobalOptions
    func run(_ api: APIClient, _ output: OutputFormat) async throws {
        let (me, data) = try await api.call(.whoAmI)
        output.render(data) { print("\(me.user)\(me.admin ? " (admin)" : "") on \(api.server)") }
    }
}

/// `devdb auth`: where the server and token come from, and whether the token works.
struct AuthCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "auth", abstract: "Where the CLI's server and token come from, and whether the token works.",
                                                    subcommands: [Status.self])

    struct Status: APICommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the server, the token's user and where both were found (flag, environment or saved config).",
            discussion: "Exits 4 when the token is missing or refused, 3 when the API cannot be reached.")
        @OptionGroup var global: GlobalOptions
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            guard api.token != nil else {
                throw CLIError(description: "not logged in to \(api.server)\nhint: run \"devdb login --with-token < token.txt\"", code: Exit.unauthorized)
            }
            let (me, data) = try await api.call(.whoAmI)
            let settings = global.settings()
            output.render(data) {
                printFields([("server", "\(api.server) (from \(settings.serverSource))"),
                             ("user", me.user + (me.admin ? " (admin)" : "")),
                             ("token", "\(settings.token.map(masked) ?? "-") (from \(settings.tokenSource))")])
            }
        }
    }
}
