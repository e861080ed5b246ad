"""The web console in a real browser (headless Chromium through Selenium) against a real DevDB:
sign-in, create and watch it become ready without a reload, copy the psql line and run it,
snapshot, branch, reset, extend, delete; a second user sees nothing and gets 403/404; CSRF;
escaping; sign-out; axe-core on the main pages; screenshots into docs/console/."""

import os
import subprocess
import time
import unittest

os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager must not reach the internet

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.support.ui import Select, WebDriverWait

from devdb_stack import ROOT, Browserless, Stack

SHOTS = os.path.join(ROOT, "docs", "console")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


class ConsoleTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack()
        try:
            cls.stack.start()
            cls.kate = cls.stack.token("kate")
            cls.lee = cls.stack.token("lee")
        except Exception:
            cls.stack.stop()
            raise
        cls.driver = browser()
        os.makedirs(SHOTS, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.stack.stop()

    # helpers

    def open(self, path):
        self.driver.get(self.stack.base + path)

    def sign_in(self, token):
        self.driver.delete_all_cookies()
        self.open("/sign-in")
        label = self.driver.find_element(By.XPATH, "//label[normalize-space()='API token']")
        self.driver.find_element(By.ID, label.get_attribute("for")).send_keys(token)
        self.driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        WebDriverWait(self.driver, 10).until(lambda d: d.current_url.rstrip("/") == self.stack.base)

    def submit(self, form_action, fields=None, selects=None):
        form = self.driver.find_element(By.CSS_SELECTOR, f"form[action='{form_action}']")
        for name, value in (fields or {}).items():
            el = form.find_element(By.NAME, name)
            el.clear()
            el.send_keys(value)
        for name, text in (selects or {}).items():
            Select(form.find_element(By.NAME, name)).select_by_visible_text(text)
        page = self.driver.find_element(By.TAG_NAME, "html")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        WebDriverWait(self.driver, 30).until(lambda d: self.left(page))  # the answer page has loaded

    @staticmethod
    def left(element):
        """True once `element`'s document is gone. Chromium answers a question about an element
        of the document being replaced either as stale or, mid-navigation, with "Node with given
        id does not belong to the document" (seen in CI): both mean the page has moved on."""
        try:
            element.is_enabled()
            return False
        except StaleElementReferenceException:
            return True
        except WebDriverException as e:
            if "does not belong to the document" in str(e):
                return True
            raise

    def live_state(self, name):
        return self.driver.find_element(By.CSS_SELECTOR, f"[data-live-state='{name}']").text

    def wait_live(self, name, state, timeout=120):
        WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(lambda d: self.live_state(name) == state,
                                                                      f"{name} did not become {state}")

    def wait_api_state(self, name, state, timeout=120):
        deadline = time.time() + timeout
        while self.stack.api("GET", f"/v1/databases/{name}")["state"] != state:
            self.assertLess(time.time(), deadline, f"{name} did not become {state}")
            time.sleep(0.5)

    def axe(self, page):
        from axe_selenium_python import Axe
        axe = Axe(self.driver)
        axe.inject()
        results = axe.run()
        bad = [v for v in results["violations"] if v.get("impact") in ("serious", "critical")]
        self.assertEqual([], [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:3]) for v in bad], f"axe on {page}")

    def shot(self, name):
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))

    def psql(self, line, sql):
        out = subprocess.run(["bash", "-c", f"{line} -X -A -t -c '{sql}'"], capture_output=True, text=True, timeout=60)
        self.assertEqual(0, out.returncode, out.stderr)
        return out.stdout.strip()

    # the journey

    def test_console(self):
        d, stack = self.driver, self.stack
        # Sign-in: signed-out pages go to /sign-in; the session is an HttpOnly, Secure, Strict cookie.
        self.open("/")
        self.assertTrue(d.current_url.endswith("/sign-in"), d.current_url)
        self.axe("sign-in")
        self.shot("sign-in")
        self.sign_in(self.kate)
        cookie = d.get_cookie("devdb_session")
        self.assertTrue(cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict", cookie)
        self.assertNotIn(self.kate, d.current_url)
        storage = d.execute_script("return JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie")
        self.assertNotIn(self.kate, storage)
        self.assertNotIn(cookie["value"], storage)  # HttpOnly: script cannot read it
        csp = stack.get("/sign-in")[1]["Content-Security-Policy"]
        self.assertIn("default-src 'self'", csp)
        self.assertIn("frame-ancestors 'none'", csp)

        # Create a database; its page shows it become ready without a reload.
        self.open("/databases/new")
        self.axe("new database")
        self.shot("new-database")
        self.submit("/databases", {"name": "kate-one", "ttl": "2h", "hibernate_after": "never"}, {"project": "shop"})
        WebDriverWait(d, 10).until(lambda d: d.current_url.split("?")[0].endswith("/databases/kate-one"))
        d.execute_script("window.notReloaded = true")
        self.assertNotEqual("ready", self.live_state("kate-one"))  # so the change below is seen live
        self.wait_live("kate-one", "ready")
        self.assertTrue(d.execute_script("return window.notReloaded === true"), "the page reloaded")

        # Copy the psql line (the clipboard, read back) and run it with a real psql.
        d.execute_cdp_cmd("Browser.grantPermissions", {"origin": stack.base, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
        d.find_element(By.XPATH, "//button[normalize-space()='Copy psql']").click()
        WebDriverWait(d, 5).until(lambda d: d.find_element(By.ID, "copy-status").get_attribute("textContent") == "Copied.")
        line = d.execute_async_script("navigator.clipboard.readText().then(arguments[0], function () { arguments[0](null); })")
        self.assertTrue(line and line.startswith("PGPASSWORD="), line)
        self.assertNotIn(line.split("'")[1], d.find_element(By.ID, "conn-psql").text)  # the password is hidden on the page
        self.psql(line, "CREATE TABLE marker (v int); INSERT INTO marker VALUES (1)")
        self.assertEqual("1", self.psql(line, "SELECT count(*) FROM marker"))
        self.open("/databases/kate-one")  # the top of the page, without the "created" notice
        self.axe("database")
        self.shot("database")
        # Size and open sessions, asked of the running instance (the psql above has ended).
        self.assertTrue(d.find_element(By.CSS_SELECTOR, "dd[data-stat=size]").text.endswith("iB"))
        self.assertEqual("0", d.find_element(By.CSS_SELECTOR, "dd[data-stat=sessions]").text)

        # Snapshot, then branch from the database.
        self.submit("/databases/kate-one/snapshot", {"snapshot": "before"})
        WebDriverWait(d, 60, poll_frequency=1).until(lambda d: (d.refresh() or True) and "before" in d.find_element(By.ID, "snap-h").find_element(By.XPATH, "..").text
                                                     and "ready" in d.find_element(By.XPATH, "//tr[th[normalize-space()='before']]").text)
        self.wait_api_state("kate-one", "ready")
        self.psql(line, "INSERT INTO marker VALUES (2)")
        self.submit("/databases", {"name": "kate-two"})
        WebDriverWait(d, 10).until(lambda d: d.current_url.split("?")[0].endswith("/databases/kate-two"))
        self.wait_live("kate-two", "ready")
        branch_line = d.find_element(By.XPATH, "//button[normalize-space()='Copy psql']").get_attribute("data-copy")
        self.assertEqual("2", self.psql(branch_line, "SELECT count(*) FROM marker"))
        # Changes made in the console are in the audit log as the console's (#27), with no secret.
        audit = stack.api("GET", "/v1/audit?user=kate")["items"]
        console = {(e["action"], e["object"]) for e in audit if e["how"] == "console" and e["outcome"] == "ok"}
        self.assertIn(("snapshot.create", "kate-one@before"), console, audit)
        self.assertTrue({("database.branch", "kate-two"), ("database.create", "kate-two")} & console, audit)
        self.assertNotIn(line.split("'")[1], str(audit))

        # Reset kate-one to the snapshot: the second row is gone.
        self.open("/databases/kate-one")
        self.submit("/databases/kate-one/reset", selects={"to": "snapshot before"})
        time.sleep(1)
        self.wait_live("kate-one", "ready")
        self.assertEqual("1", self.psql(line, "SELECT count(*) FROM marker"))

        # Extend the TTL.
        self.submit("/databases/kate-one/update", {"ttl": "30h"})
        self.assertIn("Settings saved", d.page_source)
        self.assertIn("in 29 h", d.find_element(By.CSS_SELECTOR, ".facts").text)

        # Stop (sleep) and wake, watched live.
        self.submit("/databases/kate-one/stop")
        self.wait_live("kate-one", "hibernated")
        d.refresh()
        asleep = d.find_element(By.CSS_SELECTOR, "dd[data-stat=size] span")
        self.assertTrue(asleep.text.startswith("—"), asleep.text)
        self.assertIn("asleep", asleep.get_attribute("title"))
        self.submit("/databases/kate-one/start")
        self.wait_live("kate-one", "ready")
        self.assertEqual("1", self.psql(line, "SELECT count(*) FROM marker"))
        # The timeline: each finished operation, newest first, with how long it took.
        self.open("/databases/kate-one")
        ops = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#operations tbody tr")]
        kinds = [r.split(" ")[0] for r in ops]
        # (the branch of kate-two took a snapshot of kate-one too, before "before")
        self.assertEqual(["start", "stop", "reset"], kinds[:3], ops)
        self.assertEqual("create", kinds[-1], ops)
        self.assertIn("snapshot", kinds, ops)
        self.assertTrue(all("succeeded" in r and " s " in r for r in ops), ops)
        self.assertIn("kate-one@before", ops[2])

        # The list: both databases, live states, filters; a reason with HTML is printed as text.
        record = stack.redis("GET", "devdb:database:kate-two")
        stack.redis("SET", "devdb:database:kate-two", record.replace('"state"', '"reason":"<b id=\\"injected\\">bold</b>","state"', 1))
        self.open("/")
        self.assertEqual([], d.find_elements(By.ID, "injected"))
        self.assertIn("<b id=\"injected\">bold</b>", d.find_element(By.CSS_SELECTOR, "[data-live-reason='kate-two']").text)
        self.assertEqual("ready", self.live_state("kate-one"))
        self.assertTrue(d.find_element(By.CSS_SELECTOR, "tr:has([data-live-state='kate-one']) td[data-stat=size]").text.endswith("iB"))
        self.axe("my databases")
        self.shot("databases")
        Select(d.find_element(By.ID, "f-state")).select_by_visible_text("failed")
        d.find_element(By.CSS_SELECTOR, "form.filters button").click()
        # The filtered page replaces this one: wait for it rather than read the old one.
        WebDriverWait(d, 20).until(lambda d: "state=failed" in d.current_url)
        self.assertEqual([], d.find_elements(By.CSS_SELECTOR, "[data-live-state='kate-one']"))
        # Usage (#27): the user's own database-hours, as GET /v1/usage reports them.
        self.open("/usage?since=24h&by=user")
        rows = [r.text for r in d.find_elements(By.CSS_SELECTOR, "table.list tbody tr")]
        self.assertTrue(rows and all(r.startswith("kate ") for r in rows), rows)
        self.assertIn("total", d.find_element(By.CSS_SELECTOR, "table.list tfoot").text)
        self.axe("usage")
        self.open("/projects")
        self.axe("projects")
        self.shot("projects")

        # A second user sees none of it: 404 on kate's pages and actions, 403 on admin.
        lee = Browserless(stack)
        lee.sign_in(self.lee)
        status, _, page = lee.get("/")
        self.assertEqual(200, status)
        self.assertNotIn("kate-one", page)
        self.assertEqual(404, lee.get("/databases/kate-one")[0])
        self.assertEqual(404, lee.post("/databases/kate-one/delete", {"csrf": lee.csrf, "confirm": "kate-one"})[0])
        self.assertEqual(404, lee.post("/databases/kate-one/reset", {"csrf": lee.csrf})[0])
        self.assertEqual(404, lee.post("/databases", {"csrf": lee.csrf, "name": "lee-steal", "from": "kate-one"})[0])
        self.assertEqual(403, lee.get("/admin")[0])
        self.assertNotIn("kate", lee.get("/console/states?name=kate-one")[2])
        # A form posted without the session's CSRF token is refused.
        self.assertEqual(403, lee.post("/databases", {"project": "shop", "name": "lee-one"})[0])
        self.assertEqual(403, lee.post("/databases", {"project": "shop", "name": "lee-one", "csrf": "0" * 48})[0])
        kate = Browserless(stack)
        kate.cookies["devdb_session"] = d.get_cookie("devdb_session")["value"]
        self.assertEqual(403, kate.post("/databases/kate-one/stop", {})[0])
        self.assertEqual("ready", stack.api("GET", "/v1/databases/kate-one")["state"])
        # Revoking a token ends the sessions signed in with it.
        lee_id = [t for t in stack.api("GET", "/v1/tokens")["items"] if t["user"] == "lee"][0]["id"]
        stack.api("DELETE", f"/v1/tokens/{lee_id}")
        self.assertEqual(303, lee.get("/")[0])

        # Delete: the button waits for the typed name.
        self.open("/databases/kate-two")
        button = d.find_element(By.CSS_SELECTOR, "form[action='/databases/kate-two/delete'] button")
        self.assertFalse(button.is_enabled())
        self.submit("/databases/kate-two/delete", {"confirm": "kate-two"})
        WebDriverWait(d, 10).until(lambda d: "Deleting the database" in d.page_source)
        WebDriverWait(d, 60, poll_frequency=1).until(lambda d: stack.get("/v1/databases/kate-two", {"Authorization": f"Bearer {self.kate}"})[0] == 404)

        # The admin page: users, every database, charts.
        self.sign_in(stack.admin_token)
        self.open("/admin")
        self.assertIn("kate-one", d.page_source)
        self.assertGreaterEqual(len(d.find_elements(By.CSS_SELECTOR, "figure.chart svg")), 3)
        self.axe("admin")
        self.shot("admin")
        self.submit("/admin/tokens", {"user": "max"})
        made = d.find_element(By.ID, "new-token").text
        self.assertTrue(made.startswith("ddb_"), made)
        self.assertEqual("max", stack.api("GET", "/v1/whoami", token=made)["user"])
        self.open("/projects")
        self.submit("/projects/shop/refresh")
        self.assertIn("Refresh started", d.page_source)

        # Signing out ends the session: its cookie no longer opens a page.
        self.sign_in(self.kate)
        old = d.get_cookie("devdb_session")["value"]
        d.find_element(By.XPATH, "//button[normalize-space()='Sign out']").click()
        WebDriverWait(d, 10).until(lambda d: "/sign-in" in d.current_url)
        replay = Browserless(stack)
        replay.cookies["devdb_session"] = old
        status, headers, _ = replay.get("/")
        self.assertEqual(303, status)
        self.assertTrue(headers["Location"].startswith("/sign-in"))


if __name__ == "__main__":
    unittest.main()
