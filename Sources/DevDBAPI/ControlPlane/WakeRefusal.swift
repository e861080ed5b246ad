import DevDBCatalog
import DevDBCore
import Foundation

extension Hibernator {
    /// A router asked to wake a database whose owner is at their awake quota: the wake is refused
    /// (not retried) and the route says why, with the time, in `wake_refused`; routers waiting
    /// for it answer their clients with that reason as a Postgres error instead of waiting for
    /// their wake timeout. The field goes when the route is next written (a wake that is allowed).
    func refuseWake(_ name: String, _ refusal: QuotaRefusal) async {
        let text = "\(String(format: "%.3f", Date().timeIntervalSince1970)) could not be woken: \(refusal.description); \(refusal.hint)"
        logger.notice("wake refused: over the awake quota", metadata: ["devdb.database": "\(name)", "devdb.user": "\(refusal.user)"])
        do {
            try await catalog.setWakeRefusal(name, text)
            try await catalog.clearWakeRequest(name)
        } catch {
            logger.warning("cannot mark a refused wake on its route", metadata: ["devdb.database": "\(name)", "devdb.error": "\(error)"])
        }
        await audit.automatic("database.wake", name, outcome: "refused", detail: refusal.description)
    }
}
