// libFuzzer target: the TLS ClientHello parser. Built by fuzz/run with Sources/PostgresWire.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzClientHello(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if case .complete(let hello, let consumed)? = try? ClientHello.parse(bytes) {
        precondition(consumed <= bytes.count, "consumed more than given")
        if let name = hello.serverName { precondition(!name.isEmpty && name.utf8.count <= 255) }
        // A complete hello stays complete with more bytes behind it.
        if case .complete(let again, _)? = try? ClientHello.parse(bytes + [0x17, 3, 3]) {
            precondition(again == hello, "trailing bytes changed the result")
        } else {
            preconditionFailure("trailing bytes made a complete hello fail")
        }
    }
    return 0
}
