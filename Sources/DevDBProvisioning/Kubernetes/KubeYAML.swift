import Foundation
import Yams

/// Kubeconfig files (YAML or JSON, as kubectl, kind, eksctl and gcloud write them) read with Yams
/// into the JSONValue the rest of the Kubernetes code uses. Scalars take YAML 1.1's core types
/// (so `false` is a Bool and `6443` a number, as kubectl reads them); anchors and aliases are
/// resolved.
public enum KubeYAML {
    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func parse(_ text: String) throws -> JSONValue {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw ParseError(description: "not valid YAML: \(error)")
        }
        guard let node else { return .object([:]) }
        guard case .mapping = node else {
            throw ParseError(description: "a kubeconfig is a mapping (apiVersion:, clusters:, ...); this is a \(kind(node))")
        }
        return value(node)
    }

    static func value(_ node: Node) -> JSONValue {
        switch node {
        case .scalar(let scalar):
            switch node.tag.rawValue {
            case Tag.Name.null.rawValue: return .null
            case Tag.Name.bool.rawValue: return node.bool.map(JSONValue.bool) ?? .string(scalar.string)
            case Tag.Name.int.rawValue: return node.int.map { .number(Double($0)) } ?? .string(scalar.string)
            case Tag.Name.float.rawValue: return node.float.map(JSONValue.number) ?? .string(scalar.string)
            default: return .string(scalar.string)
            }
        case .mapping(let mapping):
            var object: [String: JSONValue] = [:]
            for (key, v) in mapping { object[key.string ?? "\(key)"] = value(v) }
            return .object(object)
        case .sequence(let sequence):
            return .array(sequence.map(value))
        case .alias(let alias):
            return .string(alias.anchor.rawValue)
        }
    }

    static func kind(_ node: Node) -> String {
        switch node {
        case .scalar: return "scalar"
        case .sequence: return "sequence"
        case .mapping: return "mapping"
        case .alias: return "alias"
        }
    }
}
