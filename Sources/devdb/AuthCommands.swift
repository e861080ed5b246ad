import ArgumentParser
import DevDBAPIContract
import Foundation

/// `devdb login`: checks a token against the API and saves it with the server; or, with --sso,
/// signs in at the OpenID issuer and saves the session (ID token and refresh token).
struct Login: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a token against the API and save it, or sign in with single sign-on (--sso).",
        discussion: """
            Prefer --with-token (the token read from standard input, e.g. devdb login --with-token < token.txt): a --token on the command line is visible to every user of the machine in ps.

            --sso signs in at the OpenID Connect issuer the API trusts (authorization code with PKCE; the address to open is printed, and a browser opened where there is one). --device uses the device grant instead, where the issuer offers it. The session is saved (mode 0600) and renewed with its refresh token while the issuer allows. --issuer and --client-id (or DEVDB_OIDC_ISSUER, DEVDB_OIDC_CLIENT_ID) are needed the first time; ask your DevDB admin for them (docs/sso.md).
            """)
    @Option(help: "An API token from your DevDB admin (visible in ps; prefer --with-token).") var token: String?
    @Flag(name: .customLong("with-token"), help: "Read the token from standard input.") var withToken = false
    @Option(help: "API address to save as well.") var server: String?
    @Flag(help: "Sign in with single sign-on (OpenID Connect) instead of a token.") var sso = false
    @Flag(help: "With --sso: use the device grant (RFC 8628) for a machine without a browser, where the issuer offers it.") var device = false
    @Option(help: ArgumentHelp("With --sso: the OpenID issuer (default: DEVDB_OIDC_ISSUER, then the saved session's).", valueName: "url")) var issuer: String?
    @Option(name: .customLong("client-id"), help: ArgumentHelp("With --sso: DevDB's client id at the issuer (default: DEVDB_OIDC_CLIENT_ID, then the saved session's).", valueName: "id"))
    var clientID: String?
    @Option(name: .customLong("client-secret-file"), help: ArgumentHelp("With --sso: a file holding the client secret, for issuers that want one from the CLI (default: DEVDB_OIDC_CLIENT_SECRET).", valueName: "path"))
    var clientSecretFile: String?
    @Option(name: .customLong("sso-timeout"), help: "With --sso: seconds to wait for the sign-in.") var ssoTimeout: Double = 300

    func validate() throws {
        if sso {
            if withToken || token != nil { throw ValidationError("--sso signs in without a token: leave out --token and --with-token") }
            return
        }
        if device || issuer != nil || clientID != nil || clientSecretFile != nil { throw ValidationError("--device, --issuer, --client-id and --client-secret-file go with --sso") }
        if withToken == (token != nil) { throw ValidationError("give the token either with --with-token (from standard input) or --token, exactly one; or sign in with --sso") }
    }

    // Not an APICommand: its server and token come from its own options and the environment, not
    // the saved config it is about to write.
    func run() async throws {
        var c = CLIConfig.load()
        guard let srv = server ?? ProcessInfo.processInfo.environment["DEVDB_SERVER"] ?? c.server else {
            throw CLIError(description: "no DevDB server configured: pass --server or run \"devdb config set-server URL\"", code: Exit.failure)
        }
        if sso {
            let env = ProcessInfo.processInfo.environment
            guard let issuer = issuer ?? env["DEVDB_OIDC_ISSUER"] ?? c.session?.issuer,
                  let clientID = clientID ?? env["DEVDB_OIDC_CLIENT_ID"] ?? c.session?.clientID else {
                throw CLIError(description: "devdb login --sso needs the issuer and client id the first time\nhint: pass --issuer URL --client-id ID (ask your DevDB admin; docs/sso.md)", code: Exit.usage)
            }
            var secret = env["DEVDB_OIDC_CLIENT_SECRET"].flatMap { $0.isEmpty ? nil : $0 } ?? c.session?.clientSecret
            if let clientSecretFile {
                guard let s = try? String(contentsOfFile: clientSecretFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !s.isEmpty else {
                    throw CLIError(description: "cannot read a client secret from \(clientSecretFile)", code: Exit.usage)
                }
                secret = s
            }
            let client = ClientCredentials(id: clientID, secret: secret)
            let openID = try await OpenIDConfiguration.discover(issuer)
            let session = device ? try await DeviceLogin(configuration: openID, client: client, timeoutSeconds: ssoTimeout).run()
                                 : try await AuthorizationCodeLogin(configuration: openID, client: client, timeoutSeconds: ssoTimeout).run()
            let (me, _) = try await APIClient(server: srv, token: session.idToken).call(.whoAmI)
            c.server = srv
            c.token = nil
            c.session = session
            try c.save()
            print("signed in to \(srv) as \(me.user)\(me.admin ? " (admin)" : "") with single sign-on; session saved in \(CLIConfig.path.path)")
            return
        }
        var token = self.token ?? ""
        if withToken {
            token = (readLine(strippingNewline: true) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw CLIError(description: "no token on standard input", code: Exit.usage) }
        }
        _ = try await APIClient(server: srv, token: token).call(.whoAmI)
        c.server = srv
        c.token = token
        c.session = nil
        try c.save()
        print("logged in to \(srv); token saved in \(CLIConfig.path.path)")
    }
}

/// `devdb logout`: forgets the saved token.
struct Logout: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forget the saved token (the server stays saved).")
    func run() throws {
        var c = CLIConfig.load()
        let had = c.token != nil || c.session != nil
        c.token = nil
        c.session = nil
        try c.save()
        print(had ? "logged out: the token or single sign-on session is removed from \(CLIConfig.path.path)" : "no token was saved")
    }
}

/// `devdb whoami`: the token's user and the server.
struct WhoAmI: APICommand {
    static let configuration = CommandConfiguration(commandName: "whoami", abstract: "Show which user the token belongs to, and on which server.")
    @OptionGroup var global: GlobalOptions
    func run(_ api: APIClient, _ output: OutputFormat) async throws {
        let (me, data) = try await api.call(.whoAmI)
        output.render(data) {
            let how = me.auth == "oidc" ? ", signed in with single sign-on at \(me.issuer ?? "the issuer")" : ""
            print("\(me.user)\(me.admin ? " (admin)" : "") on \(api.server)\(how)")
        }
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
