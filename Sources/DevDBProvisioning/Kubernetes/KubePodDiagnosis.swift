import Foundation

// Why a pod or a Job's pod cannot make progress, from its status and its events: the words a
// failed step reports, each with its error kind.

extension KubernetesProvisioner {
    /// A reason a pod is stuck; `transient` ones the kubelet retries by itself (a registry's
    /// 429, a blip pulling a layer, a container runtime busy creating): they fail the step only
    /// when they last longer than `transientPodErrorTimeout`.
    struct PodProblem {
        let kind: ProvisioningError.Kind
        let message: String
        let transient: Bool
        let key: String
        var error: ProvisioningError { ProvisioningError(kind, message) }
    }

    /// Why a pod cannot make progress, if it cannot (image pulls, crash loops, failed init).
    static func podProblem(_ pod: PodStatus) -> String? { podProblems(pod).first?.message }

    static func podProblems(_ pod: PodStatus) -> [PodProblem] {
        let name = pod.name
        var found: [PodProblem] = []
        for s in pod.allContainers {
            let container = s.name ?? "container"
            guard let reason = s.state?.waiting?.reason else { continue }
            let message = s.state?.waiting?.message ?? ""
            let key = "\(name)/\(container)"
            switch reason {
            case "ErrImagePull", "ImagePullBackOff":
                found.append(PodProblem(kind: .imagePull, message: "pod \(name) cannot pull the image for \(container) (\(reason)): \(message). Check the image name, the registry's rate limits and pull secrets", transient: true, key: key))
            case "CreateContainerError":
                found.append(PodProblem(kind: .postgresStartFailed, message: "pod \(name) cannot create container \(container) (\(reason)): \(message)", transient: true, key: key))
            default:
                if let fatal = fatalWaiting(reason: reason, message: message, pod: name, container: container, status: s) {
                    found.append(PodProblem(kind: fatal.kind, message: fatal.message, transient: false, key: key))
                }
            }
        }
        return found
    }

    static func fatalWaiting(reason: String, message: String, pod name: String, container: String,
                             status s: PodStatus.ContainerStatus) -> (kind: ProvisioningError.Kind, message: String)? {
        switch reason {
        case "InvalidImageName":
            return (.imagePull, "pod \(name) cannot pull the image for \(container) (\(reason)): \(message). Check the image name")
        case "ErrImageNeverPull":
            return (.imagePull, "pod \(name) cannot start \(container) (ErrImageNeverPull): \(message). Its pull policy is Never and the image is not on the node: load it (kind load docker-image) or set databases.imagePullPolicy")
        case "CreateContainerConfigError":
            return (.misconfigured, "pod \(name) cannot create container \(container) (\(reason)): \(message)")
        case "CrashLoopBackOff":
            let last = s.lastState?.terminated?.message ?? s.lastState?.terminated?.reason ?? ""
            return (.postgresStartFailed, "container \(container) of pod \(name) keeps crashing: \(last.trimmingCharacters(in: .whitespacesAndNewlines))")
        default: return nil
        }
    }

    /// The problem that fails the step now, if any: fatal ones at once, transient ones once they
    /// have lasted `transientPodErrorTimeout` (the kubelet's message then). `since` remembers
    /// when each container was first seen failing; a container that recovered is forgotten.
    func podFailure(_ pod: PodStatus, since: inout [String: Date]) -> ProvisioningError? {
        let problems = Self.podProblems(pod)
        for key in since.keys where key.hasPrefix(pod.name + "/") && !problems.contains(where: { $0.key == key }) { since[key] = nil }
        for p in problems {
            guard p.transient else { return p.error }
            let first = since[p.key] ?? Date()
            since[p.key] = first
            if Date().timeIntervalSince(first) > settings.transientPodErrorTimeout {
                return ProvisioningError(p.kind, p.message + " (for \(Int(settings.transientPodErrorTimeout)) s)")
            }
        }
        return nil
    }

    /// Events about one object (`kind`/`name`); none when they cannot be read.
    func events(_ kind: String, _ name: String) async -> [KubeEvent] {
        let items = (try? await client.list(path(.events), labelSelector: "", fieldSelector: "involvedObject.name=\(name)")) ?? []
        return items.compactMap { try? $0.decoded(as: KubeEvent.self) }.filter { $0.concerns(kind, name) }
    }

    /// What the cluster says keeps a pod from starting, beyond its containers' states: a volume
    /// that cannot be mounted (a missing Secret: event FailedMount), or no node for it
    /// (PodScheduled=False, Unschedulable, for longer than unschedulableTimeout; unbound volumes
    /// are left to the bind timeout). `since` remembers when each pod was first seen unschedulable.
    func podBlocked(_ pod: PodStatus, since: inout [String: Date]) async -> ProvisioningError? {
        let name = pod.name
        if let scheduled = pod.conditions.first(where: { $0.type == "PodScheduled" }), scheduled.status == "False", scheduled.reason == "Unschedulable" {
            let message = scheduled.message ?? ""
            if !message.contains("unbound") && !message.contains("PersistentVolumeClaim") {
                let first = since[name] ?? Date()
                since[name] = first
                if Date().timeIntervalSince(first) > settings.unschedulableTimeout {
                    return ProvisioningError(.quotaExceededInCluster, "pod \(name) cannot be scheduled (Unschedulable for \(Int(settings.unschedulableTimeout)) s): \(message). Check node resources (requests \(settings.cpuRequest) CPU, \(settings.memoryRequest)), taints and node selectors")
                }
            }
        } else {
            since[name] = nil
        }
        // Mount failures show only as events while the pod sits in ContainerCreating.
        let waitingToStart = pod.allContainers.contains { ["ContainerCreating", "PodInitializing"].contains($0.state?.waiting?.reason ?? "") }
        guard waitingToStart || pod.phase == "Pending" else { return nil }
        for e in await events("Pod", name) where ["FailedMount", "FailedAttachVolume"].contains(e.reason ?? "") {
            let message = e.message ?? ""
            if message.contains("not found") || (e.count ?? 1) >= 3 {
                return ProvisioningError(.volumeUnavailable, "pod \(name) cannot mount its volumes (\(e.reason ?? "FailedMount")): \(message)")
            }
        }
        return nil
    }

    /// Why a Job's controller cannot make its pod (admission: Pod Security, a ResourceQuota, a
    /// LimitRange), from its FailedCreate events; nil while there is none.
    func controllerRefused(kind: String, name: String) async -> String? {
        guard let message = await events(kind, name).last(where: { $0.reason == "FailedCreate" })?.message else { return nil }
        return message + Self.admissionHint(message)
    }

    static func admissionHint(_ message: String) -> String {
        message.contains("PodSecurity") ? ". The namespace enforces Pod Security \"restricted\": check databases.postgresUID (not 0) and podSecurity values" : ""
    }
}
