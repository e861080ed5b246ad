import ArgumentParser
import DevDBCore

/// `devdb name-for BRANCH|PR`: a valid database name made from a CI branch or pull-request
/// number, the same on every run (DevDBCore/DerivedName.swift has the rules).
struct NameFor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "name-for",
        abstract: "Print a valid database name for a branch or pull/merge request number (for CI).",
        discussion: """
            Lowercase letters, digits and - stay; anything else becomes -. When a character was changed, or the name would be longer than 63, an 8-digit hash of the input is appended, so two branches never get the same name. A number (or refs/pull/N/merge) is a pull request: pr-N.
              devdb name-for "$GITHUB_HEAD_REF" --prefix shop    # feature/Login -> shop-feature-login-1a2b3c4d
              devdb name-for "$CI_MERGE_REQUEST_IID" --prefix shop   # 42 -> shop-pr-42
            """)
    @Argument(help: ArgumentHelp("A branch name or ref (refs/heads/...), or a pull/merge request number.", valueName: "branch-or-pr")) var source: String
    @Option(help: ArgumentHelp("Put this before the name (e.g. the project), so pipelines of several projects do not meet.", valueName: "prefix"))
    var prefix: String?

    func validate() throws {
        if source.allSatisfy(\.isWhitespace) {
            throw ValidationError("the branch or pull request number is empty (in GitHub Actions GITHUB_HEAD_REF is only set for pull_request events: use GITHUB_REF_NAME otherwise)")
        }
    }

    func run() throws { print(DerivedName.forCI(source, prefix: prefix)) }
}
