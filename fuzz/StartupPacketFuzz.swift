// libFuzzer target: the startup-packet parser, the options parser and the backend rewriter.
// Built by fuzz/run together with Sources/PostgresWire/*.swift (one module, so no import).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzStartupPacket(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    if let result = try? StartupPacket.parse(bytes) {
        switch result {
        case .needMore:
            break
        case .complete(let packet, let consumed):
            precondition(consumed <= bytes.count && consumed >= 8, "consumed \(consumed) of \(bytes.count)")
            if case .startup(let message) = packet {
                // Encoding a parsed message gives back the bytes it came from.
                precondition(message.encode() == Array(bytes.prefix(consumed)), "startup message does not round-trip")
                if let options = message["options"] {
                    var parsed = StartupOptions(parsing: options)
                    _ = try? parsed.removeRoute()
                    precondition(StartupOptions(parsing: parsed.text).arguments == parsed.arguments, "options do not round-trip")
                }
            }
            if case .cancel(let cancel) = packet {
                precondition(cancel.encode() == Array(bytes.prefix(consumed)), "cancel request does not round-trip")
            }
        }
    }
    var rewriter = BackendStartupRewriter()
    _ = try? rewriter.feed(bytes, makeRouterKey: { $0 })
    _ = try? ProxyHeader.parse(bytes)
    return 0
}
