import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// What the CLI says when the API cannot be reached. A TLS failure names the host the CLI expected
/// the certificate to cover: the usual first-install mistake is pointing the CLI at the load
/// balancer's own name (`*.elb.amazonaws.com`), which the API's certificate does not cover.
enum TransportFailure {
    static func describe(_ error: any Error, server: String) -> String {
        let host = URL(string: server)?.host ?? server
        let text = "\(error.localizedDescription) \((error as NSError).userInfo[NSUnderlyingErrorKey].map { "\($0)" } ?? "")"
        if isTLS(error, text: text) {
            var hint = "the API's certificate must cover \(host), the name the CLI connects to: point the CLI at the name it covers (helm install's NOTES print it: devdb config set-server https://<apiHost>)"
            if host.hasSuffix(".amazonaws.com") || host.hasSuffix(".elb.amazonaws.com") {
                hint = "\(host) is the load balancer's own name, which no certificate of yours covers: make a DNS record for the API's name (the chart's apiHost, e.g. api.devdb.example.com) pointing at it and run devdb config set-server https://<that name>"
            }
            return "TLS to the DevDB API at \(server) failed: the CLI expected a certificate valid for \(host) (\(error.localizedDescription))\nhint: \(hint)"
        }
        return "cannot reach the DevDB API at \(server): \(error.localizedDescription)\nhint: check --server / \"devdb config set-server\" and that devdb-api is running"
    }

    static func isTLS(_ error: any Error, text: String) -> Bool {
        if let e = error as? URLError {
            switch e.code {
            case .serverCertificateUntrusted, .serverCertificateHasBadDate, .serverCertificateHasUnknownRoot,
                 .serverCertificateNotYetValid, .secureConnectionFailed, .clientCertificateRejected:
                return true
            default: break
            }
        }
        let lower = text.lowercased()
        return lower.contains("ssl") || lower.contains("certificate") || lower.contains("tls")
    }
}
