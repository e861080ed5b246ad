import Synchronization

/// A flag set from a cancellation handler and read by a libcurl callback.
public final class CancelFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    public init() {}
    public func set() { flag.store(true, ordering: .relaxed) }
    public var isSet: Bool { flag.load(ordering: .relaxed) }
}
