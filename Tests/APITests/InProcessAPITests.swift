import DevDBAPI
import DevDBCatalog
import DevDBProvisioning
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Testing

/// The API built over a `MemoryCatalogStore` and a provisioner that runs nothing, driven in
/// process (`app.test(.router)`): no Redis, no PostgreSQL, no port.
@Suite struct InProcessAPITests {
    @Test func theAPIRunsInProcessOverTheMemoryStore() async throws {
        var config = APIConfiguration()
        config.adminToken = "ddb_test_admin"
        config.provisioner = "stand-in"
        let store = MemoryCatalogStore()
        let app = try await buildApplication(config, store: store, provisioner: StandInProvisioner(host: "127.0.0.1", port: 5432),
                                             logger: Logger(label: "devdb-api-test"))
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/whoami", method: .get, headers: [.authorization: "Bearer ddb_test_admin"]) { response in
                #expect(response.status == .ok)
            }
            try await client.execute(uri: "/v1/whoami", method: .get) { response in
                #expect(response.status == .unauthorized)
            }
            try await client.execute(uri: "/v1/tokens", method: .post,
                                     headers: [.authorization: "Bearer ddb_test_admin", .contentType: "application/json"],
                                     body: ByteBuffer(string: #"{"user": "kate"}"#)) { response in
                #expect(response.status == .created)
            }
        }
        #expect(try await store.tokens().map(\.user).sorted() == ["admin", "kate"])
    }
}
