import ArgumentParser
import DevDBAPIContract
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `-o env|dotenv|github` on `db create` and `db show`: a database's connection as variables for
/// the next step of a CI job (docs/ci.md), and the rule that keeps passwords out of CI logs.
enum ConnectionOutput {
    /// The variables, in the order they are printed: `DATABASE_URL` and what libpq reads.
    static func variables(_ d: DatabaseView) throws -> [(String, String)] {
        guard let password = d.password else {
            throw CLIError(description: "the API did not send the password of \(d.name) (it sends it to its owner and admins)", code: Exit.failure)
        }
        var vars: [(String, String)] = [("DATABASE_URL", url(d, password: password)), ("PGHOST", d.host)]
        if let hostaddr = d.hostaddr { vars.append(("PGHOSTADDR", hostaddr)) }
        vars += [("PGPORT", String(d.port)), ("PGUSER", d.user), ("PGPASSWORD", password), ("PGDATABASE", d.database), ("PGSSLMODE", "require")]
        return vars
    }

    /// `postgresql://user:password@host:port/database?sslmode=require[&hostaddr=...]`, user and
    /// password percent-encoded.
    static func url(_ d: DatabaseView, password: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        func enc(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s }
        return "postgresql://\(enc(d.user)):\(enc(password))@\(d.host):\(d.port)/\(enc(d.database))?sslmode=require"
            + (d.hostaddr.map { "&hostaddr=\($0)" } ?? "")
    }

    /// `export NAME='value'`: for `eval "$(devdb db show NAME -o env)"` in any POSIX shell.
    static func env(_ vars: [(String, String)]) -> String {
        vars.map { "export \($0.0)=\(shellQuote($0.1))\n" }.joined()
    }

    /// `NAME=value`: a .env file (docker compose, GitLab's dotenv reports, python-dotenv).
    /// Values of URL-safe characters (all DevDB makes) are written bare, because GitLab's dotenv
    /// reports keep quotes as part of the value; others are single-quoted (nothing inside is
    /// expanded), and one with a `'` is double-quoted with `\`, `"` and `$` escaped.
    static func dotenv(_ vars: [(String, String)]) -> String {
        let bare = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~:/@?&=%+,")
        return vars.map { name, value in
            if !value.isEmpty && value.allSatisfy(bare.contains) { return "\(name)=\(value)\n" }
            if !value.contains("'") && !value.contains("\n") { return "\(name)='\(value)'\n" }
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "$", with: "\\$").replacingOccurrences(of: "\n", with: "\\n")
            return "\(name)=\"\(escaped)\"\n"
        }.joined()
    }

    static func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    /// GitHub Actions: masks the password in the log (`::add-mask::`), appends the variables to
    /// `$GITHUB_ENV` (later steps see them) and the outputs `database-url`, `name`, `host`,
    /// `port`, `user`, `password`, `database` to `$GITHUB_OUTPUT`; prints what it did, without
    /// secrets.
    static func github(_ d: DatabaseView, _ vars: [(String, String)], environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        guard let envFile = environment["GITHUB_ENV"], !envFile.isEmpty, let outFile = environment["GITHUB_OUTPUT"], !outFile.isEmpty else {
            throw CLIError(description: "-o github writes to the files named by GITHUB_ENV and GITHUB_OUTPUT, and they are not set\nhint: it is for GitHub Actions steps; elsewhere use -o env or -o dotenv",
                           code: Exit.usage)
        }
        let password = vars.first { $0.0 == "PGPASSWORD" }?.1 ?? ""
        let url = vars.first { $0.0 == "DATABASE_URL" }?.1 ?? ""
        // Masked before anything else is written: the runner hides these strings in every later line.
        var masks = [password]
        if let encoded = password.addingPercentEncoding(withAllowedCharacters: .alphanumerics), encoded != password { masks.append(encoded) }
        masks.append(url)
        for m in masks where !m.isEmpty { print("::add-mask::\(m)") }
        fflush(nil)
        let outputs: [(String, String)] = [("database-url", url), ("name", d.name), ("host", d.host), ("hostaddr", d.hostaddr ?? ""),
                                           ("port", String(d.port)), ("user", d.user), ("password", password), ("database", d.database)]
        try append(envFile, vars.map { githubLine($0.0, $0.1) }.joined())
        try append(outFile, outputs.map { githubLine($0.0, $0.1) }.joined())
        print("database \(d.name) (\(d.state)): \(vars.map(\.0).joined(separator: ", ")) are set for the next steps; outputs: \(outputs.map(\.0).joined(separator: ", "))")
    }

    /// `NAME=value`, or GitHub's `NAME<<DELIMITER` form for a value with a line break.
    static func githubLine(_ name: String, _ value: String) -> String {
        guard value.contains("\n") || value.contains("\r") else { return "\(name)=\(value)\n" }
        var delimiter = "DEVDB_EOF"
        while value.contains(delimiter) { delimiter += "_" + String(Int.random(in: 0..<1_000_000)) }
        return "\(name)<<\(delimiter)\n\(value)\n\(delimiter)\n"
    }

    static func append(_ path: String, _ text: String) throws {
        guard let handle = FileHandle(forWritingAtPath: path) else {
            if FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) { return }
            throw CLIError(description: "cannot write to \(path)", code: Exit.failure)
        }
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data(text.utf8))
    }

    /// Prints `d`'s connection in one of the connection formats.
    static func render(_ d: DatabaseView, _ format: OutputFormat) throws {
        let vars = try variables(d)
        switch format {
        case .env: print(env(vars), terminator: "")
        case .dotenv: print(dotenv(vars), terminator: "")
        case .github: try github(d, vars)
        default: break
        }
    }
}

/// Whether tables hide passwords: in a CI job (`CI` set, as GitHub Actions, GitLab CI and most
/// others do) whose output is not a terminal, so a job log never shows one. `-o json` and the
/// connection formats are meant to be read by the job, and still carry it.
var tablesHideSecrets: Bool {
    let ci = ProcessInfo.processInfo.environment["CI"] ?? ""
    return !ci.isEmpty && ci.lowercased() != "false" && ci != "0" && isatty(1) == 0
}
