import DevDBProvisioning
import Testing

@Suite struct MiniYAMLTests {
    @Test func kubectlStyleDocuments() throws {
        let doc = try MiniYAML.parse("""
            # written by kubectl
            apiVersion: v1
            clusters:
            - cluster:
                server: https://10.0.0.1:6443   # the API
                insecure-skip-tls-verify: false
              name: "prod"
            - name: 'it''s'
              cluster: {}
            contexts: []
            empty:
            preferences: {}
            users:
              - name: admin
                user:
                  token: "a \\"quoted\\" #token"
            """)
        #expect(doc["apiVersion"] == "v1")
        #expect(doc["clusters"].array.count == 2)
        #expect(doc["clusters"][0].at("cluster.server") == "https://10.0.0.1:6443")
        #expect(doc["clusters"][0].at("cluster.insecure-skip-tls-verify") == .bool(false))
        #expect(doc["clusters"][0]["name"] == "prod")
        #expect(doc["clusters"][1]["name"] == "it's")
        #expect(doc["clusters"][1]["cluster"] == .object([:]))
        #expect(doc["contexts"] == .array([]))
        #expect(doc["empty"].isNull)
        #expect(doc["users"][0].at("user.token") == "a \"quoted\" #token")
    }

    @Test func jsonIsReadAsJSON() throws {
        let doc = try MiniYAML.parse(#"{"current-context": "kind", "clusters": [{"name": "kind"}]}"#)
        #expect(doc["current-context"] == "kind")
        #expect(doc["clusters"][0]["name"] == "kind")
    }

    @Test func unsupportedYAMLSaysWhatToDo() {
        for text in ["key: |\n  multi\n  line\n", "anchor: &a 1\n", "flow: {a: 1}\n"] {
            do {
                _ = try MiniYAML.parse(text)
                Issue.record("accepted \(text)")
            } catch {
                #expect("\(error)".contains("kubectl config view --flatten --minify -o json"), "\(error)")
            }
        }
        #expect(throws: MiniYAML.ParseError.self) { _ = try MiniYAML.parse("a: 1\n   b: 2\n") }
        #expect(throws: MiniYAML.ParseError.self) { _ = try MiniYAML.parse("just words\n") }
    }
}
