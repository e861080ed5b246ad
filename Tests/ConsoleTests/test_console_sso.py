"""Signing in to the web console with single sign-on, in a real browser (headless Chromium)
against a real OpenID provider on loopback (`oidc-provider-mock`): the authorization code flow
with PKCE, state and nonce kept by the API, the code exchanged with the client secret from a
file, the ID token checked by the API's own verifier, then the same server-side session. An
answer whose state or nonce is not the sign-in's own is refused. The provider is at `localhost`
and the console at `127.0.0.1`: two sites, as an identity provider and DevDB are. The client is
registered at the provider (its secret and redirect URI are checked); the mock does not check
PKCE, so APITests pins the challenge against RFC 7636's example."""

import json
import os
import re
import unittest
import urllib.parse

os.environ.setdefault("SE_AVOID_STATS", "true")  # Selenium Manager must not reach the internet

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from devdb_stack import ROOT, Browserless, Stack, free_port
from test_console import browser


class ConsoleSingleSignOnTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.stack = Stack()
        try:
            port = free_port()
            cls.issuer = f"http://localhost:{port}"
            cls.stack.spawn("oidc", [os.path.join(ROOT, ".venv", "bin", "oidc-provider-mock"), "--port", str(port), "--host", "127.0.0.1",
                                     "--require-nonce", "true", "--require-registration", "true",
                                     "--user-claims", '{"sub":"k-1","email":"kate@example.com","groups":["eng"]}'])
            cls.stack.wait(lambda: "issuer" in cls.discovery(port), "the OpenID provider")
            # Registered with the one redirect URI the console uses; the provider makes the id and secret.
            client = cls.register(port, cls.stack.base + "/sign-in/sso/callback")
            cls.client_secret = client["client_secret"]
            secret = os.path.join(cls.stack.dir, "oidc-secret")
            with open(secret, "w") as f:
                f.write(cls.client_secret + "\n")
            os.chmod(secret, 0o600)
            cls.stack.start(api_args=["--oidc-issuer", cls.issuer, "--oidc-client-id", client["client_id"],
                                      "--oidc-client-secret-file", secret], project=False)
        except Exception:
            cls.stack.stop()
            raise
        cls.driver = browser()

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.stack.stop()

    @staticmethod
    def discovery(port):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/.well-known/openid-configuration")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    @staticmethod
    def register(port, redirect_uri):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", "/oauth2/clients", json.dumps({"redirect_uris": [redirect_uri], "token_endpoint_auth_method": "client_secret_basic"}),
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read().decode()
            assert r.status == 201, body
            return json.loads(body)
        finally:
            conn.close()

    def discovery_fetches(self):
        """How often the provider has served its discovery document (its request log)."""
        with open(os.path.join(self.stack.dir, "oidc.log"), errors="replace") as f:
            return f.read().count("GET /.well-known/openid-configuration")

    def start_sso(self):
        """Signed out, clicks the button; returns the provider's authorization URL it landed on."""
        d = self.driver
        d.delete_all_cookies()
        d.get(self.stack.base + "/sign-in")
        d.find_element(By.XPATH, "//a[normalize-space()='Sign in with single sign-on']").click()
        WebDriverWait(d, 20).until(lambda d: d.current_url.startswith(self.issuer + "/oauth2/authorize"))
        return d.current_url

    def authorize_as(self, sub, url=None):
        d = self.driver
        if url:
            d.get(url)
        d.find_element(By.NAME, "sub").send_keys(sub)
        d.find_element(By.XPATH, "//button[normalize-space()='Authorize']").click()
        WebDriverWait(d, 20).until(lambda d: d.current_url.startswith(self.stack.base))

    def changed(self, url, key):
        """`url` with its query parameter `key` replaced by another value."""
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        query[key] = "0" * len(query[key])
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def test_sign_in_with_single_sign_on(self):
        d, stack = self.driver, self.stack
        # The authorization request: code flow with PKCE (S256), state and nonce; no secret in it.
        url = self.start_sso()
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        self.assertEqual("code", query["response_type"])
        self.assertEqual("S256", query["code_challenge_method"])
        self.assertTrue(query["state"] and query["nonce"] and len(query["code_challenge"]) == 43, query)
        self.assertEqual(stack.base + "/sign-in/sso/callback", query["redirect_uri"])
        self.assertNotIn(self.client_secret, url)

        # Signing in at the provider ends on My databases, signed in, with the session cookie.
        self.authorize_as("k-1")
        try:
            WebDriverWait(d, 20).until(lambda d: d.current_url.rstrip("/") == stack.base)
        except Exception:
            self.fail(f"not signed in: at {d.current_url}: {d.find_element(By.TAG_NAME, 'main').text[:500]}")
        who = d.find_element(By.CSS_SELECTOR, ".signout .who").text
        self.assertTrue(who.startswith("kate"), who)
        cookie = d.get_cookie("devdb_session")
        self.assertTrue(cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict", cookie)
        self.assertIsNone(d.get_cookie("devdb_sso"))
        # A form posted in this session is in the audit log as a single sign-on session's.
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', d.page_source).group(1)
        kate = Browserless(stack)
        kate.cookies["devdb_session"] = cookie["value"]
        self.assertEqual(404, kate.post("/databases", {"csrf": csrf, "name": "kate-x", "project": "nope"})[0])
        audit = stack.api("GET", f"/v1/audit?user={who}")["items"]
        hows = {(e["action"], e["how"]) for e in audit}
        self.assertIn(("console.sign-in", "console-sso"), hows, audit)
        self.assertIn(("database.create", "console-sso"), hows, audit)
        self.assertNotIn("console", {e["how"] for e in audit}, audit)

        d.find_element(By.XPATH, "//button[normalize-space()='Sign out']").click()
        WebDriverWait(d, 10).until(lambda d: "/sign-in" in d.current_url)

        # An answer carrying another state is refused, and no session is made.
        url = self.start_sso()
        self.authorize_as("k-1", self.changed(url, "state"))
        self.assertIn("state mismatch", d.find_element(By.CSS_SELECTOR, ".sso .error").text)
        self.assertIsNone(d.get_cookie("devdb_session"))

        # An ID token issued for another nonce is refused, and no session is made.
        url = self.start_sso()
        self.authorize_as("k-1", self.changed(url, "nonce"))
        self.assertIn("nonce mismatch", d.find_element(By.CSS_SELECTOR, ".sso .error").text)
        self.assertIsNone(d.get_cookie("devdb_session"))

        # A callback without the attempt's cookie (another browser, or replayed) is refused.
        status, _, page = stack.get("/sign-in/sso/callback?code=x&state=y")
        self.assertEqual(400, status)
        self.assertIn(b"expired or was started in another browser", page)

        # An error answer with another state (a link from anywhere) neither cancels the sign-in nor
        # puts its words on the page: the state is checked first.
        url = self.start_sso()
        d.get(stack.base + "/sign-in/sso/callback?" + urllib.parse.urlencode(
            {"error": "access_denied", "error_description": "Call 555-0100 to sign in", "state": "0" * 32}))
        error = d.find_element(By.CSS_SELECTOR, ".sso .error").text
        self.assertIn("state mismatch", error)
        self.assertNotIn("555-0100", d.page_source)
        self.assertIsNone(d.get_cookie("devdb_session"))

        # Denied at the provider: the sign-in page says so. The mock's Deny answers without the
        # state (RFC 6749 4.1.2.1 wants it back), which cannot be told from a stranger's answer.
        self.start_sso()
        d.find_element(By.XPATH, "//button[normalize-space()='Deny']").click()
        WebDriverWait(d, 20).until(lambda d: d.current_url.startswith(stack.base))
        self.assertIn("state mismatch", d.find_element(By.CSS_SELECTOR, ".sso .error").text)
        self.assertIsNone(d.get_cookie("devdb_session"))
        # A provider's denial carrying the sign-in's state, as the RFC's is.
        url = self.start_sso()
        state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["state"]
        d.get(stack.base + "/sign-in/sso/callback?" + urllib.parse.urlencode(
            {"error": "access_denied", "error_description": "not today", "state": state}))
        self.assertIn("did not sign you in (access_denied: not today)", d.find_element(By.CSS_SELECTOR, ".sso .error").text)
        self.assertIsNone(d.get_cookie("devdb_session"))

    def test_a_wrong_redirect_uri_is_refused_by_the_provider(self):
        """The registration is checked: the same sign-in with another callback goes nowhere."""
        url = self.start_sso()
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        query["redirect_uri"] = "http://127.0.0.1:1/sign-in/sso/callback"
        self.driver.get(urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))))
        self.assertFalse(self.driver.find_elements(By.XPATH, "//button[normalize-space()='Authorize']"), self.driver.page_source[:300])

    def test_the_discovery_document_is_cached(self):
        self.assertEqual(302, self.stack.get("/sign-in/sso")[0])
        before = self.discovery_fetches()
        for _ in range(3):
            self.assertEqual(302, self.stack.get("/sign-in/sso")[0])
        self.assertEqual(before, self.discovery_fetches())


if __name__ == "__main__":
    unittest.main()
