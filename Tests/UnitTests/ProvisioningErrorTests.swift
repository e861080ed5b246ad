@testable import DevDBProvisioning
import Foundation
import Testing

/// The provisioning error boundary: every error reaching users has a kind and a message safe to
/// show; libraries' words, tool output and paths stay in the detail.
@Suite struct ProvisioningErrorTests {
    @Test func libcurlErrorsAndPathsStayInTheDetail() {
        let curl = DumpError.transfer("Couldn't connect to server (http://10.0.0.7:8080/shop.dump)")
        let e = ProvisioningError(curl)
        #expect(e.kind == .dumpUnreachable)
        #expect(!e.userMessage.contains("Couldn't connect") && !e.userMessage.contains("10.0.0.7"), "\(e.userMessage)")
        #expect(e.userMessage.contains("check the dump URL"))
        #expect(e.detail.contains("Couldn't connect to server") && "\(e)" == e.detail)

        let file = DumpError.transfer("cannot write /var/lib/devdb/generations/shop/3.dump: No space left on device")
        #expect(!ProvisioningError(file).userMessage.contains("/var/lib/devdb"))
    }

    @Test func unknownErrorsBecomeInternalWithAGenericMessage() {
        struct Odd: Error, CustomStringConvertible { var description: String { "open(/srv/devdb/instances/kate-pg/pgdata/PG_VERSION): EACCES" } }
        let e = ProvisioningError(Odd())
        #expect(e.kind == .internal)
        #expect(!e.userMessage.contains("/srv/devdb") && !e.userMessage.contains("EACCES") && e.userMessage.contains("devdb-api's log"))
        #expect(e.detail.contains("PG_VERSION"))
    }

    @Test func toolOutputOfAFailedCommandIsForTheLog() async throws {
        do {
            try await Subprocess.check(["sh", "-c", "echo 'FATAL: could not open /tmp/secret-path/postmaster.pid' >&2; exit 3"], what: "starting Postgres",
                                       kind: .postgresStartFailed)
            Issue.record("the command failed; check must throw")
        } catch let e as ProvisioningError {
            #expect(e.kind == .postgresStartFailed)
            #expect(e.userMessage == "starting Postgres failed on the server; an operator finds the cause in devdb-api's log")
            #expect(e.detail.contains("/tmp/secret-path/postmaster.pid"))
        }
    }

    @Test func userFacingErrorsKeepTheirWords() {
        // What users read today about their dumps stays word for word (end-to-end tests pin it).
        let notFound = ProvisioningError(DumpError.notFound("s3://bucket/missing.dump"))
        #expect(notFound.kind == .dumpUnreachable && notFound.userMessage == "dump not found at s3://bucket/missing.dump (404): check the URL or upload the dump")
        let denied = ProvisioningError(DumpError.denied("s3://locked/shop.dump", 403))
        #expect(denied.userMessage.contains("denied (403)"))
        let notADump = ProvisioningError(DumpInspector.Failure.notADump(found: "an HTML page"))
        #expect(notADump.kind == .dumpUnreadable && notADump.userMessage.contains("not a PostgreSQL dump"))
        #expect(ProvisioningError(CancellationError()).kind == .cancelled)
        let refusal = SnapshotFailure("no VolumeSnapshot class is configured", instanceRunning: true)
        #expect(ProvisioningError(refusal) == ProvisioningError(.snapshotFailed, "no VolumeSnapshot class is configured"))
    }

    @Test func kubernetesRefusalsNameNoRequestPaths() {
        let forbidden = KubeError.status(code: 403, reason: "Forbidden", message: "secrets is forbidden: User \"system:serviceaccount:devdb:devdb-api\" cannot create resource",
                                         request: "POST /api/v1/namespaces/devdb/secrets")
        let e = ProvisioningError(forbidden)
        #expect(e.kind == .clusterUnavailable && !e.userMessage.contains("/api/v1") && !e.userMessage.contains("system:serviceaccount"))
        #expect(e.detail.contains("POST /api/v1/namespaces/devdb/secrets"))
        let quota = KubeError.status(code: 403, reason: "Forbidden", message: "persistentvolumeclaims \"x\" is forbidden: exceeded quota: devdb, requested: requests.storage=10Gi",
                                     request: "POST /api/v1/namespaces/devdb/persistentvolumeclaims")
        #expect(ProvisioningError(quota).kind == .quotaExceededInCluster)
        #expect(ProvisioningError(KubeError.transport("Timeout was reached", transient: true)).kind == .clusterUnavailable)
    }

    @Test func everyKindIsAUsableMetricLabel() {
        for kind in ProvisioningError.Kind.allCases {
            #expect(kind.rawValue.allSatisfy { $0.isLetter } && kind.rawValue.first!.isLowercase, "\(kind)")
        }
    }
}

/// Which roles a plain SQL dump names, read in Swift (it was a grep|sed|tr pipeline).
@Suite struct PlainDumpRolesTests {
    @Test func ownersAndGranteesOfALine() {
        #expect(PlainDumpRoles.roles(inLine: "ALTER TABLE public.orders OWNER TO shop_owner;") == ["shop_owner"])
        #expect(PlainDumpRoles.roles(inLine: "GRANT SELECT,INSERT ON TABLE public.orders TO reporting, \"Analyst\";") == ["reporting", "Analyst"])
        #expect(PlainDumpRoles.roles(inLine: "GRANT ALL ON SCHEMA public TO PUBLIC;") == ["PUBLIC"])
        #expect(PlainDumpRoles.roles(inLine: "GRANT reader TO kate;").isEmpty, "role membership is no object grant")
        #expect(PlainDumpRoles.roles(inLine: "SELECT 'OWNER TO nobody';").count == 1, "as the pipeline did: a line, not a parse")
        #expect(PlainDumpRoles.roles(inLine: "CREATE TABLE t (id int);").isEmpty)
    }

    @Test func worthMakingDropsBuiltInsAndTheAppUser() {
        let made = PlainDumpRoles.worthMaking(["postgres", "public", "CURRENT_USER", "app", "pg_read_all_data", "", "shop_owner", "shop_owner", "a b"], appUser: "app")
        #expect(made == ["shop_owner"])
    }

    @Test func readsPlainAndGzippedDumps() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("roles-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let sql = "CREATE TABLE a (id int);\nALTER TABLE a OWNER TO owner_one;\nGRANT SELECT ON TABLE a TO reader_one, reader_two;\n"
        let plain = dir.appendingPathComponent("it's.sql").path
        try sql.write(toFile: plain, atomically: true, encoding: .utf8)
        #expect(try PlainDumpRoles.read(plain, decompressor: nil) == ["owner_one", "reader_one", "reader_two"])
        _ = try Subprocess.runBlocking(["gzip", "-k", plain])
        #expect(try PlainDumpRoles.read(plain + ".gz", decompressor: "gzip -dc") == ["owner_one", "reader_one", "reader_two"])
    }
}
