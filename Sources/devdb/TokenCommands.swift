import ArgumentParser
import DevDBAPIContract
import Foundation

/// `devdb token`: API tokens, made and revoked by admins.
struct TokenCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "token", abstract: "API tokens (admins).",
                                                    subcommands: [Create.self, List.self, Revoke.self])

    struct Create: APICommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a token for a user; it is shown once.",
            discussion: "Give it to the user over a private channel; they run devdb login --with-token < file. A user's databases are those made with their tokens.")
        @OptionGroup var global: GlobalOptions
        @Option(help: ArgumentHelp("The user it is for (a-z, 0-9, -; not a reserved name such as admin).", valueName: "user")) var user: String
        @Flag(help: "Give the token admin rights.") var admin = false
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            var body = CreateTokenRequest()
            body.user = user
            body.admin = admin
            let (token, data) = try await api.call(.createToken(body))
            output.render(data) {
                print("token for \(token.user)\(token.admin ? " (admin)" : "") (id \(token.id)); it is shown only now:")
                print(token.token ?? "-")
            }
        }
    }

    struct List: APICommand {
        static let configuration = CommandConfiguration(abstract: "List tokens (never their values).")
        @OptionGroup var global: GlobalOptions
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            let (list, data) = try await api.call(.tokens)
            output.render(data) {
                printTable(["id", "user", "admin", "created"], list.items.map { [$0.id, $0.user, Human.yesNo($0.admin), Human.relative($0.createdAt)] })
            }
        }
    }

    struct Revoke: APICommand {
        static let configuration = CommandConfiguration(abstract: "Revoke a token by id.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The token's id (devdb token list).") var id: String
        func run(_ api: APIClient, _ output: OutputFormat) async throws {
            _ = try await api.send(.revokeToken(id))
            output.acknowledge("token \(id) revoked")
        }
    }
}
