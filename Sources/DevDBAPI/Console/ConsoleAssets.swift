import Hummingbird

/// The console's one stylesheet and one script, served from /console/ (the CSP allows no inline
/// script or style). Written here: there is no npm registry, and neither needs a build step.
enum ConsoleAssets {
    static func response(_ text: String, type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "max-age=300"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Copy buttons, the typed delete confirmation, and live states: polls the page's
    /// `data-live-feed` with `If-None-Match` every 3 s while visible, backing off to 60 s while the
    /// tab is hidden or the API does not answer.
    static let script = #"""
    "use strict";
    (function () {
      function status(text) {
        var s = document.getElementById("copy-status");
        if (s) { s.textContent = text; }
      }
      function copy(text, button) {
        function done() { button.dataset.copied = "1"; status("Copied."); button.classList.add("done"); }
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(text).then(done, function () { fallback(text); done(); });
        } else { fallback(text); done(); }
      }
      function fallback(text) {
        var area = document.createElement("textarea");
        area.value = text; area.setAttribute("readonly", ""); area.className = "offscreen";
        document.body.appendChild(area); area.select();
        try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
        document.body.removeChild(area);
      }
      document.addEventListener("click", function (e) {
        var b = e.target.closest("button.copy");
        if (b) { copy(b.getAttribute("data-copy") || "", b); }
      });
      document.querySelectorAll("form[data-confirm-name]").forEach(function (form) {
        var input = form.querySelector("input[name=confirm]"), button = form.querySelector("button[type=submit]");
        var check = function () { button.disabled = input.value !== form.getAttribute("data-confirm-name"); };
        input.addEventListener("input", check); check();
      });

      var feed = document.querySelector("[data-live-feed]");
      if (!feed) { return; }
      var url = feed.getAttribute("data-live-feed"), etag = null, delay = 3000, timer = null;
      function each(attr, name, fn) {
        document.querySelectorAll("[" + attr + "]").forEach(function (el) { if (el.getAttribute(attr) === name) { fn(el); } });
      }
      function apply(items) {
        items.forEach(function (d) {
          each("data-live-state", d.name, function (el) {
            if (el.textContent !== d.label) { el.textContent = d.label; }
            el.className = "state state-" + d.state;
          });
          each("data-live-since", d.name, function (el) { el.textContent = d.since_text; el.setAttribute("datetime", d.since); });
          each("data-live-reason", d.name, function (el) { el.textContent = d.reason || ""; });
        });
      }
      function schedule() {
        clearTimeout(timer);
        timer = setTimeout(poll, document.hidden ? Math.min(delay * 2, 60000) : delay);
      }
      function poll() {
        var headers = {};
        if (etag) { headers["If-None-Match"] = etag; }
        fetch(url, { headers: headers, cache: "no-store", credentials: "same-origin" }).then(function (r) {
          if (r.status === 304) { return null; }
          if (r.status === 401) { window.location.assign("/sign-in?expired=1"); return null; }
          if (!r.ok) { throw new Error("status " + r.status); }
          etag = r.headers.get("ETag");
          return r.json();
        }).then(function (body) {
          if (body) { apply(body.items); }
          delay = document.hidden ? Math.min(delay * 2, 60000) : 3000;
          schedule();
        }).catch(function () { delay = Math.min(delay * 2, 60000); schedule(); });
      }
      document.addEventListener("visibilitychange", function () {
        if (!document.hidden) { delay = 3000; poll(); }
      });
      schedule();
    })();
    """#

    static let style = #"""
    :root { --fg: #1b1f24; --muted: #4a5560; --bg: #ffffff; --card: #f5f7f9; --line: #c9d1d9; --accent: #0b5cad;
            --ok: #116329; --warn: #7a4d00; --bad: #a40e26; --focus: #ffbf47; }
    * { box-sizing: border-box; }
    body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
    a { color: var(--accent); }
    :focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; box-shadow: 0 0 0 5px var(--fg); }
    .skip { position: absolute; left: -999px; top: 0; background: var(--fg); color: #fff; padding: .5em 1em; }
    .skip:focus { left: 0; }
    .visually-hidden, .offscreen { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
    .top { display: flex; gap: 1.5em; align-items: center; padding: .6em 1.5em; background: #102a43; color: #fff; flex-wrap: wrap; }
    .top a { color: #fff; }
    .brand { font-weight: 700; font-size: 1.2em; text-decoration: none; }
    .top nav ul { display: flex; gap: 1.2em; list-style: none; margin: 0; padding: 0; }
    .top a[aria-current=page] { text-decoration-thickness: 3px; }
    .signout { margin-left: auto; display: flex; gap: .6em; align-items: center; }
    main { padding: 1em 1.5em 3em; max-width: 1200px; }
    main:focus { outline: none; }
    h1 { font-size: 1.6em; margin: .4em 0; }
    h2 { font-size: 1.25em; margin-top: 1.6em; }
    h3 { font-size: 1em; margin: .6em 0 .2em; }
    .heading { display: flex; gap: 1em; align-items: center; flex-wrap: wrap; }
    .heading .button { margin-left: auto; }
    table.list { border-collapse: collapse; width: 100%; margin: .6em 0; }
    table.list th, table.list td { text-align: left; padding: .45em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
    table.list thead th { background: var(--card); }
    caption { text-align: left; font-weight: 600; padding: .3em 0; }
    code, pre { font-family: ui-monospace, monospace; font-size: .92em; }
    pre { background: var(--card); border: 1px solid var(--line); padding: .6em; overflow-x: auto; white-space: pre-wrap; word-break: break-all; margin: .2em 0; }
    button, .button { font: inherit; padding: .35em .9em; border: 1px solid var(--fg); border-radius: 4px; background: #fff; color: var(--fg); cursor: pointer; text-decoration: none; display: inline-block; }
    button.primary, .button.primary { background: var(--accent); border-color: var(--accent); color: #fff; }
    button.danger { background: var(--bad); border-color: var(--bad); color: #fff; }
    button:disabled { background: #e4e7eb; color: #4a5560; border-color: #8a949e; cursor: not-allowed; }
    input, select { font: inherit; padding: .3em .4em; border: 1px solid #59636e; border-radius: 4px; }
    label { font-weight: 600; }
    .card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 1em; margin: 1em 0; }
    .card label { display: block; margin-top: .8em; }
    .card button { margin-top: 1em; }
    .narrow { max-width: 28em; }
    .narrow input { width: 100%; }
    fieldset { border: 1px solid var(--line); border-radius: 4px; }
    .filters { display: flex; gap: .6em; align-items: center; flex-wrap: wrap; margin: .5em 0 1em; }
    .actions { display: flex; flex-direction: column; gap: .8em; }
    form.inline { display: flex; gap: .5em; align-items: center; flex-wrap: wrap; margin: .6em 0; }
    .row-actions { display: flex; gap: .8em; align-items: center; }
    .facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1.2em; }
    .facts dt { font-weight: 600; }
    .facts dd { margin: 0; }
    .state { font-weight: 700; padding: .05em .45em; border-radius: 3px; border: 1px solid currentColor; }
    .state-ready { color: var(--ok); }
    .state-failed, .state-unavailable { color: var(--bad); }
    .state-provisioning, .state-restoring, .state-cloning, .state-starting, .state-resetting, .state-snapshotting, .state-waking, .state-hibernating, .state-deleting { color: var(--warn); }
    .state-hibernated { color: var(--muted); }
    .since { color: var(--muted); font-size: .9em; margin-left: .3em; }
    .reason { color: var(--bad); }
    .help { color: var(--muted); margin: .2em 0; }
    .notice { background: #e6f4ea; border: 1px solid var(--ok); padding: .5em .8em; border-radius: 4px; }
    .error { background: #fde8ea; border: 1px solid var(--bad); padding: .5em .8em; border-radius: 4px; }
    .empty { color: var(--muted); }
    .charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1em; }
    .chart { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .6em; }
    .chart-title { font-weight: 700; fill: var(--fg); }
    .chart-label, .chart-value { fill: var(--fg); font-size: 13px; }
    .chart-bar { fill: var(--accent); }
    .timeline { padding-left: 1.2em; }
    """#
}
