import Foundation

// What the provisioner reads back from the Kubernetes API, as typed values: only the fields its
// waits and diagnoses look at, every one optional (the API server leaves out what is unset).

/// An object's identity and lifecycle marks.
public struct KubeMetadata: Decodable, Sendable, Equatable {
    public var name: String?
    public var deletionTimestamp: String?
    public var creationTimestamp: String?
    /// Going away (a finalizer may keep it a while).
    public var isDeleting: Bool { deletionTimestamp != nil }
}

/// One entry of a `status.conditions` list.
public struct KubeCondition: Decodable, Sendable, Equatable {
    public var type: String?
    public var status: String?
    public var reason: String?
    public var message: String?
    public var isTrue: Bool { status == "True" }
}

extension Array where Element == KubeCondition {
    /// The condition of `type` when its status is True.
    func isTrue(_ type: String) -> KubeCondition? { first { $0.type == type && $0.isTrue } }
}

/// A Pod's containers and conditions.
public struct PodStatus: Decodable, Sendable, Equatable {
    public struct ContainerStatus: Decodable, Sendable, Equatable {
        public struct State: Decodable, Sendable, Equatable {
            public struct Waiting: Decodable, Sendable, Equatable { public var reason: String?; public var message: String? }
            public struct Terminated: Decodable, Sendable, Equatable { public var exitCode: Int?; public var reason: String?; public var message: String? }
            public struct Running: Decodable, Sendable, Equatable { public var startedAt: String? }
            public var waiting: Waiting?
            public var running: Running?
            public var terminated: Terminated?
        }
        public var name: String?
        public var state: State?
        public var lastState: State?
    }
    public struct Status: Decodable, Sendable, Equatable {
        public var phase: String?
        public var conditions: [KubeCondition]?
        public var containerStatuses: [ContainerStatus]?
        public var initContainerStatuses: [ContainerStatus]?
    }
    public var metadata: KubeMetadata?
    public var status: Status?

    public var name: String { metadata?.name ?? "pod" }
    public var phase: String? { status?.phase }
    public var conditions: [KubeCondition] { status?.conditions ?? [] }
    public var initContainers: [ContainerStatus] { status?.initContainerStatuses ?? [] }
    public var containers: [ContainerStatus] { status?.containerStatuses ?? [] }
    /// Init containers first, as the kubelet runs them.
    public var allContainers: [ContainerStatus] { initContainers + containers }
    public var isReady: Bool { conditions.isTrue("Ready") != nil }
}

/// A Job's outcome so far.
public struct JobStatus: Decodable, Sendable, Equatable {
    public struct Status: Decodable, Sendable, Equatable {
        public var succeeded: Int?
        public var failed: Int?
        public var conditions: [KubeCondition]?
    }
    public var metadata: KubeMetadata?
    public var status: Status?

    public var succeeded: Bool { (status?.succeeded ?? 0) >= 1 }
    /// The Failed condition when the Job gave up.
    public var failedCondition: KubeCondition? { (status?.conditions ?? []).isTrue("Failed") }
    /// Given up, or at least one pod failed.
    public var hasFailed: Bool { failedCondition != nil || (status?.failed ?? 0) > 0 }
}

/// A PersistentVolumeClaim's binding and source.
public struct PVCStatus: Decodable, Sendable, Equatable {
    public struct Spec: Decodable, Sendable, Equatable {
        public struct DataSource: Decodable, Sendable, Equatable { public var name: String?; public var kind: String? }
        public var dataSource: DataSource?
    }
    public struct Status: Decodable, Sendable, Equatable { public var phase: String? }
    public var metadata: KubeMetadata?
    public var spec: Spec?
    public var status: Status?

    public var phase: String { status?.phase ?? "Pending" }
    public var isBound: Bool { status?.phase == "Bound" }
    /// The VolumeSnapshot it was made from, if any.
    public var sourceSnapshot: String? { spec?.dataSource?.kind == "VolumeSnapshot" ? spec?.dataSource?.name : nil }
}

/// A CSI VolumeSnapshot's progress: cut (`creationTime`), uploaded (`readyToUse`), or erring.
public struct VolumeSnapshotStatus: Decodable, Sendable, Equatable {
    public struct Status: Decodable, Sendable, Equatable {
        public struct SnapshotError: Decodable, Sendable, Equatable { public var message: String?; public var time: String? }
        public var readyToUse: Bool?
        public var creationTime: String?
        public var restoreSize: String?
        public var error: SnapshotError?
    }
    public var metadata: KubeMetadata?
    public var status: Status?

    public var readyToUse: Bool { status?.readyToUse == true }
    public var isCut: Bool { readyToUse || status?.creationTime != nil }
    public var restoreSize: String? { status?.restoreSize }
    public var errorMessage: String? { status?.error?.message }
}

/// A Deployment's conditions (ReplicaFailure: its ReplicaSet cannot make a pod).
public struct DeploymentStatus: Decodable, Sendable, Equatable {
    public struct Status: Decodable, Sendable, Equatable { public var conditions: [KubeCondition]? }
    public var status: Status?
    public var replicaFailure: KubeCondition? { (status?.conditions ?? []).isTrue("ReplicaFailure") }
}

/// An Event about an object.
public struct KubeEvent: Decodable, Sendable, Equatable {
    public struct InvolvedObject: Decodable, Sendable, Equatable { public var name: String?; public var kind: String? }
    public var involvedObject: InvolvedObject?
    public var reason: String?
    public var message: String?
    public var type: String?
    public var count: Int?

    public func concerns(_ kind: String, _ name: String) -> Bool { involvedObject?.name == name && involvedObject?.kind == kind }
}

extension JSONValue {
    /// The object as a typed status (`PodStatus`, `JobStatus`, ...).
    public func decoded<T: Decodable>(as type: T.Type = T.self) throws -> T {
        try JSONDecoder().decode(T.self, from: encoded())
    }
}
