import Testing
@testable import PostgresWire

@Suite struct StartupOptionsTests {
    @Test(arguments: [
        ("-c devdb.route=kate", "kate", ""),
        ("-cdevdb.route=kate", "kate", ""),
        ("--devdb.route=kate", "kate", ""),
        ("-c search_path=x -c devdb.route=kate-pg -c work_mem=4MB", "kate-pg", "-c search_path=x -c work_mem=4MB"),
        ("  -c   devdb.route=a  ", "a", ""),
        ("-c statement_timeout=5s", nil, "-c statement_timeout=5s"),
    ] as [(String, String?, String)])
    func extractsTheRoute(input: String, route: String?, rest: String) throws {
        var options = StartupOptions(parsing: input)
        #expect(try options.removeRoute() == route)
        #expect(options.text == rest)
    }

    @Test func backslashEscapesSurviveARoundTrip() throws {
        var options = StartupOptions(parsing: #"-c application_name=a\ b -c devdb.route=x -c x=back\\slash"#)
        #expect(options.arguments == ["-c", "application_name=a b", "-c", "devdb.route=x", "-c", #"x=back\slash"#])
        _ = try options.removeRoute()
        #expect(options.text == #"-c application_name=a\ b -c x=back\\slash"#)
        #expect(StartupOptions(parsing: options.text).arguments == options.arguments)
    }

    @Test func twoDifferentRoutesAreAnError() {
        var options = StartupOptions(parsing: "-c devdb.route=a --devdb.route=b")
        #expect(throws: WireError.self) { try options.removeRoute() }
        var same = StartupOptions(parsing: "-c devdb.route=a --devdb.route=a")
        #expect((try? same.removeRoute()) == "a")
    }

    @Test func aDanglingDashCIsKept() throws {
        var options = StartupOptions(parsing: "-c")
        #expect(try options.removeRoute() == nil)
        #expect(options.arguments == ["-c"])
    }
}
