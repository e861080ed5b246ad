import Mustache

// Templates are Swift string literals, not resources: the installed binary needs nothing beside it.
// Every value is printed with {{...}} (escaped by the engine); {{{...}}} is used only for the page
// body and the charts, which are HTML this code rendered itself.

/// The console's Mustache templates: one layout and one template per page.
enum ConsoleTemplates {
    static func library() throws -> MustacheLibrary {
        var library = MustacheLibrary()
        for (name, text) in all { try library.register(text, named: name) }
        return library
    }

    static let all: [(String, String)] = [
        ("layout", layout), ("state", stateCell), ("sign-in", signIn), ("databases", databases), ("database", database), ("new", newDatabase),
        ("projects", projects), ("admin", admin), ("token", token), ("error", error), ("usage", usage),
        ("signed-in", signedIn), ("stats", statsCells),
    ]

    static let layout = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{{title}} · DevDB</title>
    {{#refresh}}<meta http-equiv="refresh" content="0; url={{refresh}}">{{/refresh}}
    <link rel="stylesheet" href="/console/app.css">
    <script src="/console/app.js" defer></script>
    </head>
    <body>
    <a class="skip" href="#main">Skip to content</a>
    <header class="top">
    <a class="brand" href="/">DevDB</a>
    {{#me}}
    <nav aria-label="Main">
    <ul>
    <li><a href="/" {{#nav_databases}}aria-current="page"{{/nav_databases}}>My databases</a></li>
    <li><a href="/databases/new" {{#nav_new}}aria-current="page"{{/nav_new}}>New database</a></li>
    <li><a href="/projects" {{#nav_projects}}aria-current="page"{{/nav_projects}}>Projects</a></li>
    <li><a href="/usage" {{#nav_usage}}aria-current="page"{{/nav_usage}}>Usage</a></li>
    {{#admin}}<li><a href="/admin" {{#nav_admin}}aria-current="page"{{/nav_admin}}>Admin</a></li>{{/admin}}
    </ul>
    </nav>
    <form method="post" action="/sign-out" class="signout">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <span class="who">{{user}}</span>
    <button type="submit">Sign out</button>
    </form>
    {{/me}}
    </header>
    <main id="main" tabindex="-1">
    {{#notice}}<p class="notice" role="status">{{notice}}</p>{{/notice}}
    {{{body}}}
    </main>
    </body>
    </html>
    """#

    static let signIn = #"""
    <h1>Sign in to DevDB</h1>
    {{#error}}<p class="error" role="alert" id="token-error">{{error}}</p>{{/error}}
    <form method="post" action="/sign-in" class="card narrow">
    <input type="hidden" name="nonce" value="{{nonce}}">
    <label for="token">API token</label>
    <input id="token" name="token" type="password" autocomplete="current-password" required {{#error}}aria-describedby="token-error" aria-invalid="true"{{/error}}>
    <p class="help">The token you use with the CLI (<code>devdb login</code>). An admin makes one with <code>devdb token create</code>.</p>
    <button type="submit" class="primary">Sign in</button>
    </form>
    {{#sso}}
    <div class="card narrow sso">
    {{#ssoError}}<p class="error" role="alert">{{ssoError}}</p>{{/ssoError}}
    <p><a class="button" href="/sign-in/sso">Sign in with single sign-on</a></p>
    <p class="help">With your company account, at the identity provider this installation uses.</p>
    </div>
    {{/sso}}
    """#

    static let signedIn = #"""
    <h1>Signed in</h1>
    <p>Signed in with single sign-on as <strong>{{user}}</strong>. <a href="/">Continue to My databases</a>.</p>
    """#

    /// Size and sessions cells of a list row: the numbers, or "—" with why.
    static let statsCells = #"""
    <td data-stat="size">{{#statWhy}}<span title="{{statWhy}}">—<span class="visually-hidden"> ({{statWhy}})</span></span>{{/statWhy}}{{statSize}}</td>
    <td data-stat="sessions">{{#statWhy}}<span title="{{statWhy}}">—<span class="visually-hidden"> ({{statWhy}})</span></span>{{/statWhy}}{{statSessions}}</td>
    """#

    static let stateCell = #"""
    <span class="state state-{{state}}" data-live-state="{{name}}">{{stateLabel}}</span>
    <span class="since">since <time datetime="{{sinceISO}}" data-live-since="{{name}}">{{since}}</time></span>
    """#

    static let databases = #"""
    <div class="heading"><h1>My databases</h1><a class="button primary" href="/databases/new">New database</a></div>
    <form method="get" action="/" class="filters" aria-label="Filter databases">
    <label for="f-project">Project</label>
    <select id="f-project" name="project"><option value="">all</option>{{#projects}}<option {{#selected}}selected{{/selected}}>{{name}}</option>{{/projects}}</select>
    <label for="f-state">State</label>
    <select id="f-state" name="state"><option value="">all</option>{{#states}}<option {{#selected}}selected{{/selected}}>{{name}}</option>{{/states}}</select>
    <button type="submit">Filter</button>
    </form>
    {{#any}}
    <table class="list" data-live-feed="/console/states?project={{project}}&amp;state={{state}}">
    <caption class="visually-hidden">Your databases</caption>
    <thead><tr><th scope="col">Name</th><th scope="col">Project</th><th scope="col">State</th><th scope="col">Postgres</th><th scope="col">Host</th><th scope="col">Size</th><th scope="col">Sessions</th><th scope="col">Expires</th></tr></thead>
    <tbody>
    {{#databases}}
    <tr>
    <th scope="row"><a href="/databases/{{name}}">{{name}}</a></th>
    <td>{{project}}</td>
    <td>{{> state}}<div class="reason" data-live-reason="{{name}}">{{reason}}</div></td>
    <td>{{postgres}}</td>
    <td><code>{{host}}</code></td>
    {{> stats}}
    <td><time datetime="{{expiresISO}}">{{expires}}</time></td>
    </tr>
    {{/databases}}
    </tbody>
    </table>
    {{/any}}
    {{^any}}<p class="empty">{{#filtered}}No database matches these filters.{{/filtered}}{{^filtered}}You have no databases yet. <a href="/databases/new">Create one</a> from a project.{{/filtered}}</p>{{/any}}
    """#

    static let database = #"""
    <div class="heading"><h1>{{name}}</h1>
    <p class="status" data-live-feed="/console/states?name={{name}}">{{> state}}</p></div>
    <p class="reason" data-live-reason="{{name}}">{{reason}}</p>
    {{#hint}}<p class="help">{{hint}}</p>{{/hint}}
    <dl class="facts">
    <dt>Project</dt><dd>{{project}}{{#generation}} (generation {{generation}}){{/generation}}</dd>
    {{#base}}<dt>Branched from</dt><dd>{{base}}</dd>{{/base}}
    <dt>Owner</dt><dd>{{owner}}</dd>
    <dt>Postgres</dt><dd>{{postgres}}</dd>
    <dt>Host</dt><dd><code>{{host}}</code></dd>
    <dt>Size</dt><dd data-stat="size">{{#statWhy}}<span title="{{statWhy}}">—<span class="visually-hidden"> ({{statWhy}})</span></span>{{/statWhy}}{{statSize}}</dd>
    <dt>Open sessions</dt><dd data-stat="sessions">{{#statWhy}}<span title="{{statWhy}}">—<span class="visually-hidden"> ({{statWhy}})</span></span>{{/statWhy}}{{statSessions}}</dd>
    <dt>Expires</dt><dd><time datetime="{{expiresISO}}">{{expires}}</time></dd>
    <dt>Sleeps after idle</dt><dd>{{sleep}}</dd>
    </dl>

    <section aria-labelledby="conn-h">
    <h2 id="conn-h">Connect</h2>
    <p class="help">The password is hidden; <em>Copy</em> copies the full line.</p>
    {{#connections}}
    <div class="conn">
    <h3 id="conn-{{id}}-h">{{label}}</h3>
    <pre><code id="conn-{{id}}">{{shown}}</code></pre>
    <button type="button" class="copy" data-copy="{{text}}" aria-describedby="conn-{{id}}-h">Copy {{label}}</button>
    </div>
    {{/connections}}
    <details class="reveal"><summary>Reveal password</summary><p><code id="password">{{password}}</code></p></details>
    <p class="copied visually-hidden" role="status" id="copy-status"></p>
    </section>

    <section aria-labelledby="act-h">
    <h2 id="act-h">Actions</h2>
    <div class="actions">
    {{#asleep}}<form method="post" action="/databases/{{name}}/start"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit">Wake</button></form>{{/asleep}}
    {{#awake}}<form method="post" action="/databases/{{name}}/stop"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit">Stop (sleep)</button></form>{{/awake}}
    <form method="post" action="/databases/{{name}}/snapshot" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="snapshot-name">Snapshot name</label><input id="snapshot-name" name="snapshot" placeholder="time stamp">
    <button type="submit">Take snapshot</button>
    </form>
    <form method="post" action="/databases/{{name}}/reset" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="reset-to">Reset to</label>
    <select id="reset-to" name="to"><option value="current">its data as created</option><option value="latest">the project's latest generation</option>{{#readySnapshots}}<option value="{{name}}">snapshot {{name}}</option>{{/readySnapshots}}</select>
    <button type="submit">Reset</button>
    </form>
    <form method="post" action="/databases" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="from" value="{{name}}">
    <label for="branch-name">Branch name</label><input id="branch-name" name="name" required pattern="[a-z0-9]([a-z0-9-]*[a-z0-9])?">
    <button type="submit">Branch from its data now</button>
    </form>
    <form method="post" action="/databases/{{name}}/update" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="ttl">Expire in</label><input id="ttl" name="ttl" placeholder="e.g. 8h" size="6">
    <label for="sleep">Sleep after idle</label><input id="sleep" name="hibernate_after" placeholder="e.g. 30m or never" size="8">
    <button type="submit">Save</button>
    </form>
    <form method="post" action="/databases/{{name}}/delete" class="inline danger" data-confirm-name="{{name}}">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="confirm">Type <strong>{{name}}</strong> to delete it</label><input id="confirm" name="confirm" required>
    <button type="submit" class="danger">Delete</button>
    </form>
    </div>
    </section>

    <section aria-labelledby="snap-h">
    <h2 id="snap-h">Snapshots</h2>
    {{#anySnapshots}}
    <table class="list">
    <thead><tr><th scope="col">Name</th><th scope="col">State</th><th scope="col">Taken</th><th scope="col">Size</th><th scope="col">Branches</th><th scope="col">Actions</th></tr></thead>
    <tbody>
    {{#snapshots}}
    <tr><th scope="row">{{name}}</th><td><span class="state state-{{state}}">{{state}}</span>{{#snapReason}} <span class="reason">{{snapReason}}</span>{{/snapReason}}</td>
    <td><time datetime="{{createdISO}}">{{created}}</time></td><td>{{size}}</td><td>{{branches}}</td>
    <td class="row-actions">{{#ready}}<a href="/databases/new?from={{from}}">Branch</a>{{/ready}}
    <form method="post" action="/databases/{{db}}/snapshots/{{name}}/delete"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" aria-label="Delete snapshot {{name}}">Delete</button></form></td></tr>
    {{/snapshots}}
    </tbody>
    </table>
    {{/anySnapshots}}
    {{^anySnapshots}}<p class="empty">No snapshots yet.</p>{{/anySnapshots}}
    </section>

    <section aria-labelledby="time-h">
    <h2 id="time-h">Timeline</h2>
    <ol class="timeline">{{#timeline}}<li><strong>{{what}}</strong> <time datetime="{{iso}}">{{when}}</time>{{#tlReason}}: <span class="reason">{{tlReason}}</span>{{/tlReason}}</li>{{/timeline}}</ol>
    {{#anyOperations}}
    <table class="list" id="operations">
    <caption>Finished operations, newest first (the last 50 are kept)</caption>
    <thead><tr><th scope="col">Operation</th><th scope="col">Started</th><th scope="col">Took</th><th scope="col">Outcome</th><th scope="col">Why</th></tr></thead>
    <tbody>
    {{#operations}}<tr><th scope="row">{{label}}</th><td><time datetime="{{startedISO}}">{{started}}</time></td><td>{{took}}</td><td>{{#opFailed}}<strong>{{outcome}}</strong>{{/opFailed}}{{^opFailed}}{{outcome}}{{/opFailed}}</td><td>{{#opReason}}<span class="reason">{{opReason}}</span>{{/opReason}}</td></tr>
    {{/operations}}
    </tbody>
    </table>
    {{/anyOperations}}
    {{^anyOperations}}<p class="empty">No operation has finished yet.</p>{{/anyOperations}}
    </section>
    """#

    static let newDatabase = #"""
    <h1>New database</h1>
    <form method="post" action="/databases" class="card">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <fieldset>
    <legend>Copy of</legend>
    <label for="project">Project</label>
    <select id="project" name="project"><option value="">choose a project</option>{{#projects}}<option>{{name}}</option>{{/projects}}</select>
    {{#anySources}}
    <label for="from">or branch from</label>
    <select id="from" name="from"><option value="">nothing: a copy of the project</option>{{#sources}}<option value="{{value}}" {{#selected}}selected{{/selected}}>{{label}}</option>{{/sources}}</select>
    {{/anySources}}
    </fieldset>
    <label for="name">Name</label>
    <input id="name" name="name" pattern="[a-z0-9]([a-z0-9-]*[a-z0-9])?" aria-describedby="name-help">
    <p class="help" id="name-help">Lower-case letters, digits and dashes; empty picks one for you.</p>
    <label for="ttl">Expire in</label>
    <input id="ttl" name="ttl" placeholder="e.g. 8h or 7d" aria-describedby="ttl-help">
    <p class="help" id="ttl-help">Empty: it stays until you delete it.</p>
    <label for="sleep">Sleep after idle</label>
    <input id="sleep" name="hibernate_after" placeholder="e.g. 30m, or never">
    <button type="submit" class="primary">Create</button>
    </form>
    """#

    static let projects = #"""
    <h1>Projects</h1>
    {{^any}}<p class="empty">No projects yet. An admin makes one with <code>devdb project create NAME --dump URL</code>.</p>{{/any}}
    {{#projects}}
    <section class="card" aria-labelledby="p-{{name}}">
    <div class="heading"><h2 id="p-{{name}}">{{name}}</h2><span class="state state-{{state}}">{{state}}</span>
    {{#admin}}<form method="post" action="/projects/{{name}}/refresh"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit">Refresh now</button></form>{{/admin}}</div>
    {{#reason}}<p class="reason">{{reason}}</p>{{/reason}}
    <dl class="facts"><dt>Postgres</dt><dd>{{postgres}}</dd><dt>Refresh schedule</dt><dd>{{schedule}}</dd><dt>Refresh when the dump changes</dt><dd>{{onChange}}</dd>
    <dt>Masking</dt><dd>{{masks}}</dd><dt>Generations kept</dt><dd>{{keep}}</dd></dl>
    <table class="list"><caption>Generations of {{name}}</caption>
    <thead><tr><th scope="col">#</th><th scope="col">State</th><th scope="col">Postgres</th><th scope="col">Dump size</th><th scope="col">Restore time</th><th scope="col">Made</th><th scope="col">Reason</th></tr></thead>
    <tbody>{{#generations}}<tr><th scope="row">{{number}}</th><td><span class="state state-{{state}}">{{state}}</span></td><td>{{postgres}}</td><td>{{size}}</td><td>{{restore}}</td><td><time datetime="{{createdISO}}">{{created}}</time></td><td>{{genReason}}</td></tr>{{/generations}}</tbody>
    </table>
    </section>
    {{/projects}}
    """#

    static let usage = #"""
    <h1>Usage</h1>
    <form method="get" action="/usage" class="filters">
    <label for="u-since">Period</label>
    <select id="u-since" name="since">{{#periods}}<option value="{{value}}" {{#selected}}selected{{/selected}}>{{label}}</option>{{/periods}}</select>
    <label for="u-by">By</label>
    <select id="u-by" name="by">{{#groupings}}<option value="{{value}}" {{#selected}}selected{{/selected}}>{{value}}</option>{{/groupings}}</select>
    <button type="submit">Show</button>
    </form>
    <table class="list"><caption>{{caption}}</caption>
    <thead><tr><th scope="col">{{by}}</th><th scope="col">Hours awake</th><th scope="col">Hours asleep</th><th scope="col">Storage (GiB-hours)</th><th scope="col">Snapshots</th><th scope="col">Wakes</th></tr></thead>
    <tbody>{{#items}}<tr><th scope="row">{{key}}</th><td>{{awake}}</td><td>{{asleep}}</td><td>{{storage}}</td><td>{{snapshots}}</td><td>{{wakes}}</td></tr>{{/items}}</tbody>
    <tfoot>{{#total}}<tr><th scope="row">total</th><td>{{awake}}</td><td>{{asleep}}</td><td>{{storage}}</td><td>{{snapshots}}</td><td>{{wakes}}</td></tr>{{/total}}</tfoot>
    </table>
    """#

    static let admin = #"""
    <h1>Admin</h1>
    <section aria-labelledby="glance-h"><h2 id="glance-h">At a glance</h2>
    <div class="charts">{{{chartStates}}}{{{chartProjects}}}{{{chartRestores}}}{{{chartSizes}}}</div>
    </section>
    <section aria-labelledby="tokens-h"><h2 id="tokens-h">Users and tokens</h2>
    <table class="list"><thead><tr><th scope="col">Token id</th><th scope="col">User</th><th scope="col">Admin</th><th scope="col">Made</th><th scope="col">Actions</th></tr></thead>
    <tbody>{{#tokens}}<tr><th scope="row">{{id}}</th><td>{{user}}</td><td>{{admin}}</td><td>{{created}}</td>
    <td>{{#revocable}}<form method="post" action="/admin/tokens/{{id}}/revoke"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" aria-label="Revoke token {{id}}">Revoke</button></form>{{/revocable}}</td></tr>{{/tokens}}</tbody></table>
    <form method="post" action="/admin/tokens" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="new-user">User</label><input id="new-user" name="user" required>
    <input type="checkbox" id="new-admin" name="admin"><label for="new-admin">admin</label>
    <button type="submit">Make a token</button>
    </form>
    </section>
    <section aria-labelledby="all-h"><h2 id="all-h">Every database ({{count}})</h2>
    <nav aria-label="Pages of databases" class="pages"><span>{{from}}–{{to}} of {{count}}</span>
    {{#previous}}<a href="{{previous}}">First page</a>{{/previous}} {{#next}}<a href="{{next}}">Next page</a>{{/next}}</nav>
    <table class="list" data-live-feed="/console/states?all=1&amp;limit=100&amp;after={{after}}">
    <thead><tr><th scope="col">Name</th><th scope="col">Owner</th><th scope="col">Project</th><th scope="col">State</th><th scope="col">Postgres</th><th scope="col">Expires</th></tr></thead>
    <tbody>{{#databases}}<tr><th scope="row"><a href="/databases/{{name}}">{{name}}</a></th><td>{{owner}}</td><td>{{project}}</td>
    <td>{{> state}}</td><td>{{postgres}}</td><td><time datetime="{{expiresISO}}">{{expires}}</time></td></tr>{{/databases}}</tbody>
    </table>
    </section>
    """#

    static let token = #"""
    <h1>Token for {{user}}</h1>
    <p>Give this token to {{user}}; it is shown only now. They sign in with it here or run <code>devdb login --with-token</code>.</p>
    <pre><code id="new-token">{{token}}</code></pre>
    <button type="button" class="copy" data-copy="{{token}}">Copy token</button>
    <p class="copied visually-hidden" role="status" id="copy-status"></p>
    <p><a href="/admin">Back to Admin</a></p>
    """#

    static let error = #"""
    <h1>{{message}}</h1>
    <p class="error" role="alert">Error {{status}}. {{hint}}</p>
    <p><a href="/">Back to my databases</a></p>
    """#
}
