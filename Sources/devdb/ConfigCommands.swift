import ArgumentParser

/// `devdb config`: shows and changes the saved settings (CLIConfig).
struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "config", abstract: "Show or change the saved settings.",
                                                    subcommands: [SetServer.self, Show.self])

    struct SetServer: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "set-server", abstract: "Save the API address, e.g. http://127.0.0.1:5000.")
        @Argument(help: "The API's address, http(s)://HOST:PORT.") var url: String
        func validate() throws {
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else { throw ValidationError("the server must be an http:// or https:// URL") }
        }
        func run() throws {
            var c = CLIConfig.load()
            c.server = url
            try c.save()
            print("server set to \(url) in \(CLIConfig.path.path)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the saved settings (the token is masked).")
        func run() throws {
            let c = CLIConfig.load()
            print("config  \(CLIConfig.path.path)")
            print("server  \(c.server ?? "-")")
            print("token   \(c.token.map(masked) ?? "-")")
        }
    }
}

/// A token as it may be shown: its first 8 characters.
func masked(_ token: String) -> String { String(token.prefix(8)) + "…" }
