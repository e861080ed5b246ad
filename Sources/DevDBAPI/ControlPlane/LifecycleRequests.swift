import DevDBCatalog
import DevDBCore
import DevDBProvisioning
import Foundation
import DevDBRedis
import Logging
import ServiceLifecycle

/// What controllers and the web console call: users' requests to the control plane. Database
/// requests go through `request` (ControlPlanePart.swift); project requests are here. Work a
/// request accepts is submitted to the workers and the request answers at once.
struct LifecycleRequests: ControlPlanePart {
    let context: ControlPlaneContext

    var seedWorker: SeedWorker { SeedWorker(context: context) }

    /// Creates a project. Its PostgreSQL major is `explicitMajor` or the dump's own (read from the
    /// dump's header); a major older than the dump's, or one this installation cannot run, is refused.
    func createProject(_ settings: Project, explicitMajor: Int? = nil) async throws -> Project {
        do { try fetcher.check(settings.dumpUrl) } catch {
            throw APIError.badRequest(error.description, hint: error.hint)
        }
        // What the dump says about its major. One that is no dump at all is accepted here and its
        // generation fails, saying what the file is (as a dump that cannot be fetched does).
        let inspected = await inspectDumpExplained(settings.dumpUrl)
        let info = try? inspected.get()
        if case .failure(let why) = inspected, explicitMajor == nil, provisioner.availableMajors == nil {
            // Any major could run (an image per major): nothing may be guessed. The restore pods
            // read the dump with their own rights; the API needs read access too, to choose the
            // image and size the restore volume.
            throw APIError.badRequest(
                "the API cannot read the dump's header (\(why)), so it cannot tell which PostgreSQL major and image restore it",
                hint: settings.dumpUrl.hasPrefix("s3://")
                    ? "give the API's service account read access to the dump (s3:GetObject and s3:ListBucket: an IAM role through serviceAccount.annotations eks.amazonaws.com/role-arn, or databases.s3.secretName, which the chart also mounts into the API), or name the major with --postgres N"
                    : "make the dump readable from the API's pod, or name the major with --postgres N")
        }
        var project = settings
        do { project.postgresMajor = try provisioner.chooseMajor(explicit: explicitMajor, source: info?.sourceMajor) } catch {
            throw APIError.badRequest(error.message, hint: error.hint)
        }
        project.dumpFingerprint = await fingerprint(settings)
        let g = try await catalog.createProject(project)
        if let g { submit(.seed(project: project.name, generation: g.number)) }
        return project
    }

    func refreshProject(_ name: String) async throws -> Generation {
        guard let p = try await catalog.project(name) else { throw APIError.notFound("project \"\(name)\"") }
        let seen = await fingerprint(p)
        guard let g = try await catalog.newGeneration(project: name, fingerprint: seen) else {
            throw APIError.conflict("project \"\(p.name)\" is being deleted", hint: "create it again once it is gone")
        }
        submit(.seed(project: name, generation: g.number))
        return g
    }

    /// Marks the project `deleting` (refused while it has databases), cancels its seeds and
    /// removes its generations. An API stopped half-way finishes on restart.
    func deleteProject(_ name: String) async throws {
        switch try await catalog.requestProjectDelete(name) {
        case nil: throw APIError.notFound("project \"\(name)\"")
        case .refuse(let r): throw APIError.conflict(r.message, hint: r.hint)
        case .commit, .alreadyDeleting: await seedWorker.finishProjectDelete(name)
        }
    }
}
