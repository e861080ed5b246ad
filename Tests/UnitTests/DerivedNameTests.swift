import Testing
@testable import DevDBCore

/// `devdb name-for`: names from CI branches and pull-request numbers (issue #28).
@Suite struct DerivedNameTests {
    @Test func plainNamesStayAndNumbersArePullRequests() {
        #expect(DerivedName.forCI("main") == "main")
        #expect(DerivedName.forCI("fix-login-42") == "fix-login-42")
        #expect(DerivedName.forCI("123") == "pr-123")
        #expect(DerivedName.forCI("refs/pull/77/merge") == "pr-77")
        #expect(DerivedName.forCI("refs/heads/main") == "main")
        #expect(DerivedName.forCI("123", prefix: "shop") == "shop-pr-123")
        #expect(DerivedName.forCI(" main\n", prefix: "shop") == "shop-main")
    }

    @Test func oddBranchesGetValidStableDistinctNames() {
        let odd = ["feature/Login", "feature-login", "feature_login", "feature.login", "Feature-Login", "feature//login", "feature/login",
                   "release/1.2.3", "release/1-2-3", "dependabot/npm_and_yarn/lodash-4.17.21", "ünïcødé/brånch", "日本語", "🚀", "///", "-x-", "a b c",
                   "--", "refs/heads/feature/x", "feature/x", String(repeating: "a", count: 200), String(repeating: "a", count: 199) + "b",
                   String(repeating: "a", count: 63), String(repeating: "a", count: 64), String(repeating: "é", count: 200),
                   String(repeating: "feature/", count: 25), "UPPER", "upper"]
        var seen: [String: String] = [:]
        for branch in odd {
            let name = DerivedName.forCI(branch)
            #expect(DatabaseName.isValid(name), "\(branch) -> \(name)")
            #expect(DerivedName.forCI(branch) == name, "stable")
            if let other = seen[name] { Issue.record("\(branch) and \(other) both became \(name)") }
            seen[name] = branch
            for prefix in ["shop", "My_Project", String(repeating: "p", count: 70)] {
                #expect(DatabaseName.isValid(DerivedName.forCI(branch, prefix: prefix)), "\(prefix) \(branch)")
            }
        }
        // Changed names carry a hash; they keep what they can of the branch.
        #expect(DerivedName.forCI("feature/Login").hasPrefix("feature-login-"))
        #expect(DerivedName.forCI("feature/Login").count == "feature-login-".count + 8)
        let long = DerivedName.forCI(String(repeating: "a", count: 200))
        #expect(long.count == 63 && long.hasPrefix(String(repeating: "a", count: 54) + "-"))
        #expect(DerivedName.forCI(String(repeating: "a", count: 63)) == String(repeating: "a", count: 63))
        #expect(DerivedName.forCI("日本語").hasPrefix("db-"))
        // The hash is fixed by the algorithm, not by the process (FNV-1a): the same in every job.
        #expect(DerivedName.forCI("feature/Login") == "feature-login-" + DerivedName.hash("\u{0}feature/Login"))
        #expect(DerivedName.hash("") == "4fd0bfc1")
    }
}
