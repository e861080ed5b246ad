import DevDBCatalog
import DevDBCore
import Testing

/// How a single sign-on user's DevDB name is derived from the ID token (docs/sso.md, "Names").
@Suite struct SSOUserNameTests {
    let issuer = "https://idp.example.com"

    @Test func anEmailBecomesALabelWithAHashOfIssuerAndSub() {
        let name = SSOUserName.derive("Kate.Doe@Example.com", uniquePerPerson: false, issuer: issuer, subject: "k-1")
        #expect(name.hasPrefix("kate-doe-example-com-") && name.count == "kate-doe-example-com-".count + 8)
        #expect(DatabaseName.isValid(name))
        // Stable: the same person gets the same name every time.
        #expect(SSOUserName.derive("Kate.Doe@Example.com", uniquePerPerson: false, issuer: issuer, subject: "k-1") == name)
    }

    @Test func valuesThatNormaliseAlikeStayApart() {
        let a = SSOUserName.derive("kate.doe@example.com", uniquePerPerson: false, issuer: issuer, subject: "k-1")
        let b = SSOUserName.derive("kate-doe@example.com", uniquePerPerson: false, issuer: issuer, subject: "k-2")
        #expect(a != b)
        // The same username at another issuer is another person.
        let c = SSOUserName.derive("kate", uniquePerPerson: false, issuer: "https://other.example.com", subject: "k-1")
        #expect(c != SSOUserName.derive("kate", uniquePerPerson: false, issuer: issuer, subject: "k-1"))
    }

    @Test func aSubThatIsAlreadyANameIsKeptExceptAdmin() {
        #expect(SSOUserName.derive("k-1", uniquePerPerson: true, issuer: issuer, subject: "k-1") == "k-1")
        #expect(SSOUserName.derive("admin", uniquePerPerson: true, issuer: issuer, subject: "admin").hasPrefix("admin-"))
        // A non-unique claim (preferred_username) always gets the hash.
        #expect(SSOUserName.derive("kate", uniquePerPerson: false, issuer: issuer, subject: "k-1").hasPrefix("kate-"))
    }

    @Test func longStrangeAndEmptyValuesAreValidNames() {
        for value in [String(repeating: "a.", count: 80), "--Ünïcødé--", "", "@@@", "0123"] {
            let name = SSOUserName.derive(value, uniquePerPerson: false, issuer: issuer, subject: "s")
            #expect(DatabaseName.isValid(name), "\(value) -> \(name)")
        }
        #expect(SSOUserName.derive("@@@", uniquePerPerson: false, issuer: issuer, subject: "s").hasPrefix("sso-"))
    }
}
