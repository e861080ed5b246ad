// swift-tools-version:6.0
import PackageDescription

// Module graph (see README "Module map"):
//   C system libraries + CDevDBShims  ->  DevDBNet (sockets, TLS), DevDBRedis (hiredis)
//   DevDBCore (names, route contract) and PostgresWire (pure wire protocol, no I/O)
//   DevDBRouterCore (connection-start state machine, refusals; no I/O)
//   DevDBRouter (router runtime)  ->  devdb-router (thin executable)
// The router's graph must never reach SwiftNIO: scripts/check-router-no-nio enforces it.
let package = Package(
    name: "devdb",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "devdb-router", targets: ["devdb-router"]),
        .executable(name: "devdb-api", targets: ["devdb-api"]),
        .executable(name: "devdb", targets: ["devdb"]),
        .executable(name: "devdb-fetch-dump", targets: ["devdb-fetch-dump"]),
    ],
    // Every direct dependency is pinned exactly (a Package.resolved cannot be committed here), to
    // the versions that resolved when they were pinned. SwiftPM has no way to pin a transitive
    // package (swift-nio, swift-crypto, ...) without declaring it as a dependency of some target,
    // so those follow from these pins' own requirements: see docs/kubernetes.md, "Building the image".
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        // The API only; never the router (scripts/check-router-no-nio).
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        // Logging API for the router (NIO-free; the API already has it through Hummingbird).
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        // YAML: kubeconfig files (provisioner) and the OpenAPI document (contract test).
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        // The API only: verifies OpenID Connect ID tokens (signatures, JWKS, claims).
        .package(url: "https://github.com/vapor/jwt-kit", exact: "5.8.0"),
        // SHA-256 for the CLI's PKCE (devdb login --sso); already in the graph through jwt-kit.
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "4.5.2"),
        // The API's web console: server-rendered HTML templates (escaping by the engine).
        .package(url: "https://github.com/hummingbird-project/swift-mustache", exact: "2.1.1"),
    ],
    targets: [
        // C libraries, reached through system-library targets.
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis", pkgConfig: "hiredis",
                       providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),
        // Macros and variadic/GNU functions Swift cannot import directly.
        .target(name: "CDevDBShims", dependencies: ["COpenSSL"]),
        .target(name: "CCurlShims", dependencies: ["CCurl"]),

        // Pure modules: no I/O.
        .target(name: "DevDBCore"),
        .target(name: "PostgresWire"),
        // The router's decisions without I/O: the connection-start state machine and refusals.
        .target(name: "DevDBRouterCore", dependencies: ["DevDBCore", "PostgresWire"]),

        // The only Swift code that touches sockets, OpenSSL and hiredis.
        .target(name: "DevDBNet", dependencies: ["COpenSSL", "CDevDBShims"]),
        .target(name: "DevDBRedis", dependencies: ["CHiredis", "DevDBCore"]),

        // Router runtime and its executable.
        .target(name: "DevDBRouter",
                dependencies: ["DevDBCore", "PostgresWire", "DevDBRouterCore", "DevDBNet", "DevDBRedis",
                               .product(name: "Logging", package: "swift-log")]),
        .executableTarget(name: "devdb-router", dependencies: [
            "DevDBRouter",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Control plane: catalog in Redis, provisioners, API, CLI.
        .target(name: "DevDBCatalog", dependencies: ["DevDBCore", "DevDBRedis", "COpenSSL"]),
        .target(name: "DevDBProvisioning", dependencies: ["DevDBCore", "DevDBCatalog", "DevDBNet", "CCurl", "CCurlShims",
                                                        .product(name: "Yams", package: "Yams")]),
        // The API's JSON contract (views, request bodies, errors): one Codable source shared by the
        // API and the CLI; Tests/UnitTests/ContractTests checks docs/openapi.yaml against it.
        .target(name: "DevDBAPIContract"),
        // Schemas as comparable objects (the pg_catalog query, the model, the diff and its text):
        // pure, shared by the API (which reads the sides) and the CLI (which prints the diff).
        .target(name: "DevDBSchema", dependencies: ["DevDBAPIContract"]),
        .target(name: "DevDBAPI", dependencies: [
            "DevDBCore", "DevDBCatalog", "DevDBProvisioning", "DevDBAPIContract", "DevDBSchema",
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "JWTKit", package: "jwt-kit"),
            .product(name: "Mustache", package: "swift-mustache"),
        ], resources: [.copy("openapi.yaml")]),
        .executableTarget(name: "devdb-api", dependencies: [
            "DevDBAPI", "DevDBCore", "DevDBProvisioning", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Hummingbird", package: "hummingbird"),
        ]),
        // The restore Job's first step in a cluster: fetch a dump (file, http(s), s3 SigV4) and check it.
        .executableTarget(name: "devdb-fetch-dump", dependencies: [
            "DevDBProvisioning", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "devdb", dependencies: [
            "DevDBCore", "DevDBAPIContract", "DevDBSchema", .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Crypto", package: "swift-crypto"),
        ]),

        // Tests.
        .target(name: "DevDBTestSupport", dependencies: ["DevDBCore"], path: "Tests/DevDBTestSupport"),
        .testTarget(name: "UnitTests",
                    dependencies: ["PostgresWire", "DevDBCore", "DevDBRouterCore", "DevDBNet", "DevDBRedis", "DevDBRouter", "DevDBCatalog", "DevDBProvisioning", "DevDBTestSupport",
                                   "DevDBAPIContract", "DevDBSchema", .product(name: "Yams", package: "Yams")],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "RouterIntegrationTests", dependencies: ["DevDBTestSupport", "DevDBCore"]),
        .testTarget(name: "KubernetesTests",
                    dependencies: ["DevDBTestSupport", "DevDBCore", "DevDBCatalog", "DevDBProvisioning", "DevDBRedis"],
                    resources: [.copy("Fixtures")]),
        // The API in process (Hummingbird's router test framework) over MemoryCatalogStore and a
        // fake provisioner: every route's success and refusal paths in seconds.
        .testTarget(name: "APITests", dependencies: ["DevDBAPI", "DevDBCatalog", "DevDBProvisioning", "DevDBAPIContract",
                                                     .product(name: "HummingbirdTesting", package: "hummingbird")]),
        .testTarget(name: "ControlPlaneTests", dependencies: ["DevDBTestSupport", "DevDBCore", "DevDBProvisioning"],
                    resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v6]
)
