import Foundation

// The contract of quotas, the audit log and usage (#27 "Teams"): /v1/quotas, /v1/audit, /v1/usage.

/// Limits as the API shows them; absent: no limit.
public struct QuotaLimitsView: APIContractType {
    public static let schema = "QuotaLimits"
    public var databases: Int?
    public var snapshots: Int?
    public var storageBytes: Int64?
    public var awake: Int?
    public var maxTtlSeconds: Double?
    public init() {}
}

/// What a user holds now.
public struct QuotaUseView: APIContractType {
    public static let schema = "QuotaUse"
    public var databases = 0
    public var snapshots = 0
    public var storageBytes: Int64 = 0
    public var awake = 0
    public init() {}
}

/// `GET /v1/quotas/{user}`: the limits that apply (own where set, else the default), the ones set
/// on the user, and use. `GET /v1/quotas/default`: the default (`user` "default", no use).
public struct QuotaView: APIContractType {
    public static let schema = "Quota"
    public var user = ""
    public var limits = QuotaLimitsView()
    public var own = QuotaLimitsView()
    public var use: QuotaUseView?
    public init() {}
}

/// `PUT /v1/quotas/{user}` and `/v1/quotas/default`: the limits to set; fields left out stay as
/// they are. A negative number, or "none" for storage and max_ttl, removes that limit.
public struct SetQuotaRequest: APIContractType {
    public static let schema = "SetQuotaRequest"
    public var databases: Int?
    public var snapshots: Int?
    /// A size: 20GiB, 500MiB, or bytes.
    public var storage: String?
    public var awake: Int?
    /// A duration: 7d, 12h.
    public var maxTtl: String?
    public init() {}
}

/// A 403 for a quota: the error with the limit, the use and what to delete.
public struct QuotaErrorBody: APIContractType {
    public static let schema = "QuotaError"
    public struct Detail: Codable, Sendable {
        public var code = "quota_exceeded"
        public var message = ""
        public var hint: String?
        public var quota = QuotaDetail()
        public init() {}
    }
    public struct QuotaDetail: Codable, Sendable {
        /// databases, snapshots, storage (bytes), awake, ttl (seconds).
        public var resource = ""
        public var limit = 0.0
        public var use = 0.0
        /// Commands that would make room (oldest or biggest first).
        public var delete: [String] = []
        public init() {}
    }
    public var error = Detail()
    public init() {}
}

/// One audit log entry.
public struct AuditEntryView: APIContractType {
    public static let schema = "AuditEntry"
    /// The entry's stream id (time-ordered).
    public var id = ""
    public var time = Date(timeIntervalSince1970: 0)
    /// Who: a user, or "devdb" for automatic actions.
    public var user = ""
    /// How they acted: token, sso, console or devdb (automatic).
    public var how = ""
    /// e.g. database.create, snapshot.delete, database.hibernate.
    public var action = ""
    /// The object acted on: a database, `DB@SNAP`, a project, a user, a token id.
    public var object = ""
    /// ok, refused or failed.
    public var outcome = ""
    /// The HTTP status of an API request.
    public var status: Int?
    public var requestId: String?
    public var client: String?
    /// A short reason (a refusal's message); never a secret.
    public var detail: String?
    public init() {}
}

/// Usage of one user or project over the period.
public struct UsageItemView: APIContractType {
    public static let schema = "UsageItem"
    public var key = ""
    public var awakeHours = 0.0
    public var asleepHours = 0.0
    public var storageGibHours = 0.0
    public var snapshots = 0
    public var wakes = 0
    public init() {}
}

/// `GET /v1/usage`.
public struct UsageView: APIContractType {
    public static let schema = "Usage"
    public var since = Date(timeIntervalSince1970: 0)
    public var until = Date(timeIntervalSince1970: 0)
    /// user or project.
    public var by = "user"
    public var items: [UsageItemView] = []
    public var total = UsageItemView()
    public init() {}
}
