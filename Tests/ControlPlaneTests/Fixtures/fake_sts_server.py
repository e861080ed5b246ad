#!/usr/bin/env python3
"""A TEST DOUBLE of AWS STS AssumeRoleWithWebIdentity and of the EKS Pod Identity agent.

    python3 fake_sts_server.py PORT ROLE_ARN WEB_IDENTITY_TOKEN ACCESS_KEY SECRET_KEY

GET /?Action=AssumeRoleWithWebIdentity&RoleArn=..&WebIdentityToken=.. answers the key pair (XML, as
STS does) only for that role and token; anything else is 403 AccessDenied (XML). GET /v1/credentials
with header Authorization: <token> answers the key pair as JSON (the Pod Identity agent's shape);
a wrong token is 401.
"""
import json, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, ROLE, TOKEN, ACCESS, SECRET = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, code, body, kind="text/xml"):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/v1/credentials":
            if self.headers.get("Authorization") != TOKEN:
                return self.answer(401, json.dumps({"message": "unauthorized"}), "application/json")
            return self.answer(200, json.dumps({"AccessKeyId": ACCESS, "SecretAccessKey": SECRET, "Token": "session-token",
                                                "Expiration": "2099-01-01T00:00:00Z"}), "application/json")
        q = urllib.parse.parse_qs(url.query)
        if q.get("Action") != ["AssumeRoleWithWebIdentity"] or q.get("RoleArn") != [ROLE] or q.get("WebIdentityToken") != [TOKEN]:
            return self.answer(403, "<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error></ErrorResponse>")
        self.answer(200, f"""<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>
<AccessKeyId>{ACCESS}</AccessKeyId><SecretAccessKey>{SECRET}</SecretAccessKey><SessionToken>session-token</SessionToken>
<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>""")


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
