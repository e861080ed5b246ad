import ArgumentParser
import DevDBProvisioning
import Foundation

/// Runs as the first container of a restore Job in Kubernetes: fetches the project's dump onto
/// the volume being restored and checks that it is a pg_dump custom-format archive.
@main
struct FetchDump: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devdb-fetch-dump",
        abstract: "Fetch a pg_dump archive (file://, http(s)://, s3:// with SigV4) to a file and check it.",
        discussion: """
            S3 credentials come from files in --credentials-dir (how the restore Job mounts its Secret) or from \
            AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; AWS_REGION and AWS_ENDPOINT_URL_S3 \
            (S3-compatible stores) as for devdb-api. Exits 1 with a readable reason on failure.
            """)

    @Option(help: ArgumentHelp("The dump's URL.", valueName: "url")) var url: String
    @Option(help: ArgumentHelp("Where to write it.", valueName: "path")) var out: String
    @Option(name: .customLong("credentials-dir"),
            help: ArgumentHelp("Directory with files AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_SESSION_TOKEN (a mounted Secret); they win over the environment.", valueName: "path"))
    var credentialsDir: String?
    @Flag(name: .customLong("allow-private-hosts"), help: "Fetch from loopback, private and link-local addresses too (refused by default).")
    var allowPrivateHosts = false

    func run() throws {
        var environment = ProcessInfo.processInfo.environment
        if let dir = credentialsDir {
            for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
                if let value = try? String(contentsOfFile: "\(dir)/\(key)", encoding: .utf8) {
                    environment[key] = value.trimmingCharacters(in: .whitespacesAndNewlines)
                }
            }
        }
        let fetcher = DumpFetcher(s3: S3Settings.fromEnvironment(environment), allowPrivateHosts: allowPrivateHosts)
        let started = Date()
        do {
            try fetcher.fetch(url, to: out) { bytes in
                FileHandle.standardError.write(Data("fetched \(bytes >> 20) MiB\n".utf8))
            }
        } catch {
            unlink(out)
            FileHandle.standardError.write(Data("devdb-fetch-dump: \(error.description)\n".utf8))
            throw ExitCode.failure
        }
        // The restore step branches on the format (read from the bytes): written next to the dump.
        let info: DumpInfo
        do { info = try DumpInspector.inspect(file: out) } catch {
            unlink(out)
            FileHandle.standardError.write(Data("devdb-fetch-dump: \(url): \(error.description)\n".utf8))
            throw ExitCode.failure
        }
        try? (info.format.rawValue + "\n").write(toFile: out + ".format", atomically: true, encoding: .utf8)
        let size = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int64) ?? 0
        print("\(info.format.description), dumped from PostgreSQL \(info.sourceMajor.map(String.init) ?? "(unknown)")")
        print("fetched \(url) (\(size) bytes) to \(out) in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
    }
}
