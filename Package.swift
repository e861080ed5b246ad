// swift-tools-version:6.0
import PackageDescription

// Module graph (see README "Module map"):
//   C system libraries + CDevDBShims  ->  DevDBNet (sockets, TLS), DevDBRedis (hiredis)
//   DevDBCore (names, route contract) and PostgresWire (pure wire protocol, no I/O)
//   DevDBRouter (router runtime)  ->  devdb-router (thin executable)
// The router's graph must never reach SwiftNIO: scripts/check-router-no-nio enforces it.
let package = Package(
    name: "devdb",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "devdb-router", targets: ["devdb-router"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries, reached through system-library targets.
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL", pkgConfig: "openssl",
                       providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis", pkgConfig: "hiredis",
                       providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "CLibPQ", path: "Sources/CLibPQ", pkgConfig: "libpq",
                       providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl",
                       providers: [.apt(["libcurl4-openssl-dev"])]),
        // Macros and variadic/GNU functions Swift cannot import directly.
        .target(name: "CDevDBShims", dependencies: ["COpenSSL"]),

        // Pure modules: no I/O.
        .target(name: "DevDBCore"),
        .target(name: "PostgresWire"),

        // The only Swift code that touches sockets, OpenSSL and hiredis.
        .target(name: "DevDBNet", dependencies: ["COpenSSL", "CDevDBShims"]),
        .target(name: "DevDBRedis", dependencies: ["CHiredis", "DevDBCore"]),

        // Router runtime and its executable.
        .target(name: "DevDBRouter",
                dependencies: ["DevDBCore", "PostgresWire", "DevDBNet", "DevDBRedis"]),
        .executableTarget(name: "devdb-router", dependencies: [
            "DevDBRouter",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Tests.
        .target(name: "DevDBTestSupport", dependencies: ["DevDBCore"], path: "Tests/DevDBTestSupport"),
        .testTarget(name: "UnitTests",
                    dependencies: ["PostgresWire", "DevDBCore", "DevDBNet", "DevDBRedis", "DevDBRouter"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "RouterIntegrationTests", dependencies: ["DevDBTestSupport", "DevDBCore"]),
    ],
    swiftLanguageModes: [.v6]
)
