/// Reads big-endian integers and NUL-terminated strings from a byte array, bounds-checked.
/// Every read returns nil rather than trapping when the input is short.
struct ByteReader {
    let bytes: [UInt8]
    private(set) var index: Int
    let end: Int

    init(_ bytes: [UInt8], from start: Int = 0, to end: Int? = nil) {
        self.bytes = bytes
        self.index = start
        self.end = min(end ?? bytes.count, bytes.count)
    }

    var remaining: Int { end - index }

    mutating func u8() -> UInt8? {
        guard index < end else { return nil }
        defer { index += 1 }
        return bytes[index]
    }

    mutating func u16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { index += 2 }
        return UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1])
    }

    mutating func u24() -> Int? {
        guard remaining >= 3 else { return nil }
        defer { index += 3 }
        return Int(bytes[index]) << 16 | Int(bytes[index + 1]) << 8 | Int(bytes[index + 2])
    }

    mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { index += 4 }
        return readU32(bytes, at: index)
    }

    mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
        guard n >= 0, remaining >= n else { return nil }
        defer { index += n }
        return bytes[index..<index + n]
    }

    mutating func skip(_ n: Int) -> Bool { take(n) != nil }

    /// A NUL-terminated string; nil when there is no terminator before `end`. Invalid UTF-8
    /// is decoded with replacement characters (see `strictCString` where bytes must survive).
    mutating func cString() -> String? {
        var i = index
        while i < end, bytes[i] != 0 { i += 1 }
        guard i < end else { return nil }
        let s = String(decoding: bytes[index..<i], as: UTF8.self)
        index = i + 1
        return s
    }

    enum CStringResult { case ok(String), unterminated, invalidUTF8 }

    /// A NUL-terminated string that must be valid UTF-8, so that encoding it again gives the
    /// same bytes.
    mutating func strictCString() -> CStringResult {
        var i = index
        while i < end, bytes[i] != 0 { i += 1 }
        guard i < end else { return .unterminated }
        guard let s = String(validating: bytes[index..<i], as: UTF8.self) else { return .invalidUTF8 }
        index = i + 1
        return .ok(s)
    }
}

@inline(__always)
func readU32(_ b: [UInt8], at i: Int) -> UInt32 {
    UInt32(b[i]) << 24 | UInt32(b[i + 1]) << 16 | UInt32(b[i + 2]) << 8 | UInt32(b[i + 3])
}

extension Array where Element == UInt8 {
    mutating func appendU32(_ v: UInt32) {
        append(UInt8(truncatingIfNeeded: v >> 24)); append(UInt8(truncatingIfNeeded: v >> 16))
        append(UInt8(truncatingIfNeeded: v >> 8)); append(UInt8(truncatingIfNeeded: v))
    }

    mutating func appendCString(_ s: String) {
        append(contentsOf: s.utf8); append(0)
    }

    /// Writes `v` big-endian over four existing bytes at `i` (used to patch length fields).
    mutating func setU32(_ v: UInt32, at i: Int) {
        self[i] = UInt8(truncatingIfNeeded: v >> 24); self[i + 1] = UInt8(truncatingIfNeeded: v >> 16)
        self[i + 2] = UInt8(truncatingIfNeeded: v >> 8); self[i + 3] = UInt8(truncatingIfNeeded: v)
    }
}
