"""A dump server for tests that is slow on purpose: GET /<file>?delay=N sends the file after N
seconds; ?stall=1 sends the headers and the first bytes, then nothing until the client goes away
(a seed stuck in its fetch). Usage: slow_dump_server.py PORT DIRECTORY"""
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        path = os.path.join(sys.argv[2], os.path.basename(url.path))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        time.sleep(float(query.get("delay", ["0"])[0]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if query.get("stall"):
            self.wfile.write(data[:5])
            self.wfile.flush()
            while True:  # until the client goes away
                time.sleep(0.2)
                try:
                    if self.connection.recv(1, 0x40) == b"":  # MSG_DONTWAIT
                        return
                except BlockingIOError:
                    continue
                except OSError:
                    return
        self.wfile.write(data)

    def log_message(self, *args):
        pass


ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
