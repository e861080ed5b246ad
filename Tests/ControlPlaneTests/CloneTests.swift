import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

/// A loop-mounted XFS with reflink=1, when this machine allows mounting (root, loop devices).
enum ReflinkFilesystem {
    static var mayMount: Bool {
        getuid() == 0 && (FileManager.default.isExecutableFile(atPath: "/sbin/mkfs.xfs") || FileManager.default.isExecutableFile(atPath: "/usr/sbin/mkfs.xfs"))
    }

    /// Mounts a fresh 512 MiB XFS image; nil when mounting is not possible here.
    static func mount() -> String? {
        let dir = NSTemporaryDirectory() + "devdb-xfs-\(UUID().uuidString.prefix(8))"
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            try run(["truncate", "-s", "512M", dir + ".img"])
            try run(["mkfs.xfs", "-q", "-m", "reflink=1", dir + ".img"])
            try run(["mount", "-o", "loop", dir + ".img", dir])
            return dir
        } catch {
            unmount(dir)
            return nil
        }
    }

    static func unmount(_ dir: String) {
        _ = try? run(["umount", dir], check: false)
        try? FileManager.default.removeItem(atPath: dir)
        try? FileManager.default.removeItem(atPath: dir + ".img")
    }
}

extension ControlPlaneEndToEnd {
    @Suite struct Clones {
        static func makeSource(in dir: String) throws -> String {
            let source = dir + "/source-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: source + "/base", withIntermediateDirectories: true)
            try "15\n".write(toFile: source + "/PG_VERSION", atomically: true, encoding: .utf8)
            try run(["dd", "if=/dev/urandom", "of=\(source)/base/16384", "bs=1M", "count=64", "status=none"])
            return source
        }

        static func usedBytes(_ path: String) throws -> Int {
            Int(try run(["df", "--output=used", "-B1", path]).stdout.split(separator: "\n").last!.trimmingCharacters(in: .whitespaces))!
        }

        @Test(.enabled(if: ReflinkFilesystem.mayMount, "needs root and mkfs.xfs"))
        func reflinkClonesShareBlocksOnXFS() async throws {
            guard let fs = ReflinkFilesystem.mount() else {
                print("skipped: this machine cannot loop-mount an XFS image")
                return
            }
            defer { ReflinkFilesystem.unmount(fs) }
            let source = try Self.makeSource(in: fs)
            try run(["sync"])
            let before = try Self.usedBytes(fs)
            let method = try await LocalProvisioner.cloneDirectory(from: source, to: fs + "/clone")
            try run(["sync"])
            #expect(method == "reflink")
            #expect(try Data(contentsOf: URL(fileURLWithPath: fs + "/clone/base/16384")) == Data(contentsOf: URL(fileURLWithPath: source + "/base/16384")))
            // 64 MiB cloned, almost nothing more used.
            #expect(try Self.usedBytes(fs) - before < 8 << 20)
        }

        @Test func plainCopiesWhereTheFilesystemCannotReflink() async throws {
            let dir = try TestPaths.makeTemporaryDirectory("devdb-copy")
            let probe = try run(["stat", "-f", "-c", "%T", dir.path]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            let source = try Self.makeSource(in: dir.path)
            let method = try await LocalProvisioner.cloneDirectory(from: source, to: dir.path + "/clone")
            if probe == "xfs" || probe == "btrfs" {
                #expect(method == "reflink")
            } else {
                #expect(method == "copy", "on \(probe)")
            }
            #expect(try Data(contentsOf: URL(fileURLWithPath: dir.path + "/clone/base/16384")) == Data(contentsOf: URL(fileURLWithPath: source + "/base/16384")))
        }
    }
}
