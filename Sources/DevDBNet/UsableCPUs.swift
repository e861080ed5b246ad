#if canImport(Glibc)
import Glibc
#endif
import CDevDBShims

/// How many CPUs this process can keep busy: the online CPUs, cut to its affinity mask (taskset,
/// a cpuset) and to its cgroup's CPU quota rounded up (a Kubernetes CPU limit of 2 on a 64-core
/// node is 2). The router runs one event loop per usable CPU: more loops than that only take
/// turns on the same CPUs, paying a sleep and a wake-up each time.
public enum UsableCPUs {
    public static func count() -> Int {
        var n = max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
        let affinity = Int(devdb_affinity_cpu_count())
        if affinity > 0 { n = min(n, affinity) }
        if let quota = cgroupQuota() { n = min(n, quota) }
        return max(1, n)
    }

    /// The quota of cgroup v2 (`/sys/fs/cgroup/cpu.max`) or v1 (`cpu.cfs_quota_us` and
    /// `cpu.cfs_period_us`), in whole CPUs; nil when there is none.
    static func cgroupQuota() -> Int? {
        if let v2 = read("/sys/fs/cgroup/cpu.max") { return quota(cpuMax: v2) }
        if let q = read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), let p = read("/sys/fs/cgroup/cpu/cpu.cfs_period_us") {
            return quota(cpuMax: "\(q) \(p)")
        }
        return nil
    }

    /// `"max 100000"` → nil (no quota); `"150000 100000"` → 2 (1.5 CPUs keep 2 loops partly
    /// busy); `"-1 100000"` (v1's "none") → nil. Nil for anything else, too.
    public static func quota(cpuMax: String) -> Int? {
        let parts = cpuMax.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard parts.count == 2, let quota = Int(parts[0]), let period = Int(parts[1]), quota > 0, period > 0 else { return nil }
        return max(1, (quota + period - 1) / period)
    }

    private static func read(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 128)
        guard fgets(&buf, Int32(buf.count), f) != nil else { return nil }
        return String(cString: buf)
    }
}
