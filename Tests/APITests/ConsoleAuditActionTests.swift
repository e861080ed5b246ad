import Testing
@testable import DevDBAPI

/// The console's form posts are named in the audit log as the API names the same change.
@Suite struct ConsoleAuditActionTests {
    @Test func formPostsAreNamedAsTheirAPIChanges() {
        #expect(ConsoleAuditAction.of(path: "/databases", form: ["name": "kate-two"]) == ("database.create", "kate-two"))
        #expect(ConsoleAuditAction.of(path: "/databases", form: ["name": "b", "from": "kate-one@before"]) == ("database.branch", "b"))
        #expect(ConsoleAuditAction.of(path: "/databases/kate-one/snapshot", form: ["snapshot": "before"]) == ("snapshot.create", "kate-one@before"))
        #expect(ConsoleAuditAction.of(path: "/databases/kate-one/snapshot", form: [:]) == ("snapshot.create", "kate-one"))
        #expect(ConsoleAuditAction.of(path: "/databases/kate-one/reset", form: ["to": "latest"]) == ("database.reset", "kate-one"))
        #expect(ConsoleAuditAction.of(path: "/databases/kate-one/snapshots/before/delete", form: [:]) == ("snapshot.delete", "kate-one@before"))
        #expect(ConsoleAuditAction.of(path: "/projects/shop/refresh", form: [:]) == ("project.refresh", "shop"))
        #expect(ConsoleAuditAction.of(path: "/admin/tokens", form: ["user": "max"]) == ("token.create", "max"))
        #expect(ConsoleAuditAction.of(path: "/admin/tokens/abc/revoke", form: [:]) == ("token.revoke", "abc"))
    }
}
