import DevDBProvisioning
import Foundation
import Testing

/// Kubeconfig parsing (Yams): what kubectl, kind and cloud CLIs write, including the YAML the
/// hand-written parser it replaced refused.
@Suite struct KubeYAMLTests {
    @Test func kubectlStyleDocuments() throws {
        let doc = try KubeYAML.parse("""
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
        let doc = try KubeYAML.parse(#"{"current-context": "kind", "clusters": [{"name": "kind"}]}"#)
        #expect(doc["current-context"] == "kind")
        #expect(doc["clusters"][0]["name"] == "kind")
    }

    @Test func blockScalarsAnchorsAndFlowMappingsAsOtherToolsWriteThem() throws {
        let doc = try KubeYAML.parse("""
            defaults: &cluster
              server: https://eks.example.com
            clusters:
            - name: eks
              cluster: *cluster
            users:
            - name: exec
              user: {exec: {command: aws, args: [eks, get-token]}}
            note: |
              two
              lines
            """)
        #expect(doc["clusters"][0].at("cluster.server") == "https://eks.example.com")
        #expect(doc["users"][0].at("user.exec.command") == "aws")
        #expect(doc["users"][0].at("user.exec.args") == .array(["eks", "get-token"]))
        #expect(doc["note"] == "two\nlines")
    }

    @Test func brokenYAMLSaysWhereAndWhat() {
        for text in ["a: 1\n   b: 2\n", "clusters: [unclosed\n", "- just\n- a list\n"] {
            do {
                _ = try KubeYAML.parse(text)
                Issue.record("accepted \(text)")
            } catch {
                #expect("\(error)".contains("YAML") || "\(error)".contains("mapping"), "\(error)")
            }
        }
    }

    @Test func aKubeconfigThatIsNoYAMLFailsNamingTheFile() throws {
        let path = NSTemporaryDirectory() + "kubeconfig-\(UUID().uuidString)"
        try "clusters: [unclosed\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        do {
            _ = try KubeConnection.fromKubeconfig(path: path, context: nil, namespace: nil)
            Issue.record("accepted")
        } catch {
            #expect("\(error)".contains(path) && "\(error)".contains("YAML"), "\(error)")
        }
    }
}
