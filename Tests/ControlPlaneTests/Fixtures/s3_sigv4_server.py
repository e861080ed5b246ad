"""A tiny S3-compatible GET server for tests that checks AWS Signature Version 4.

    python3 s3_sigv4_server.py PORT ACCESS_KEY SECRET_KEY DIRECTORY

GET (and HEAD) /<bucket>/<key> serves DIRECTORY/<bucket>/<key> (with ETag and Last-Modified) only when the request is signed with the
given key pair (region any, service s3). Bucket "locked" always answers 403 AccessDenied. A bad
or missing signature answers 403 SignatureDoesNotMatch; a missing object 404 NoSuchKey.
"""
import hashlib, hmac, os, sys, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, ACCESS, SECRET, ROOT = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]


def sign(key, msg):
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def fail(self, status, code):
        body = f"<Error><Code>{code}</Code></Error>".encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def check_signature(self):
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return False
        parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        access, date, region, service, terminal = parts["Credential"].split("/")
        if access != ACCESS or service != "s3" or terminal != "aws4_request":
            return False
        signed = parts["SignedHeaders"].split(";")
        url = urllib.parse.urlsplit(self.path)
        query = "&".join(sorted(url.query.split("&"))) if url.query else ""
        headers = "".join(f"{h}:{' '.join(self.headers.get(h, '').split())}\n" for h in signed)
        payload = self.headers.get("x-amz-content-sha256", hashlib.sha256(b"").hexdigest())
        canonical = "\n".join([self.command, url.path, query, headers, ";".join(signed), payload])
        amz_date = self.headers.get("x-amz-date", "")
        scope = f"{date}/{region}/{service}/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        key = sign(sign(sign(sign(("AWS4" + SECRET).encode(), date), region), service), "aws4_request")
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts["Signature"])

    def do_HEAD(self):
        self.do_GET(body=False)

    def do_GET(self, body=True):
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
        if not self.check_signature():
            return self.fail(403, "SignatureDoesNotMatch")
        if path.split("/", 1)[0] == "locked":
            return self.fail(403, "AccessDenied")
        file = os.path.join(ROOT, path)
        if not os.path.isfile(file):
            return self.fail(404, "NoSuchKey")
        data = open(file, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"' + hashlib.md5(data).hexdigest() + '"')
        self.send_header("Last-Modified", self.date_time_string(int(os.path.getmtime(file))))
        self.end_headers()
        if body:
            self.wfile.write(data)


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
