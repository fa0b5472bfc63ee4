#!/usr/bin/env python3
"""A misbehaving MLflow tracking server for tracker_spec.lua (standard library only).

usage: mlflow_stub.py [--lifetime SECONDS]

Prints its port, then its pid. The first path segment picks the behaviour; the rest is the
MLflow API path, e.g. http://127.0.0.1:PORT/e500/api/2.0/mlflow/runs/get:
  /e500/...       500 {"error_code":"INTERNAL_ERROR",...}
  /e429/...       429 REQUEST_LIMIT_EXCEEDED with Retry-After: 0
  /notjson/...    200 with a body that is not JSON
  /truncated/...  200, Content-Length larger than the body, then closes
  /auth/...       401 text/plain unless Authorization is "Basic dTpw" (u:p) or "Bearer s3cret-token",
                  then 200 {}
  /calls          how many requests the stub answered, as text
"""
import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CALLS = [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json", extra=()):
        body = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        mode = self.path.strip("/").split("/")[0]
        if mode != "calls":
            CALLS[0] += 1
        if mode == "calls":
            self.send(200, str(CALLS[0]), "text/plain")
        elif mode == "e500":
            self.send(500, json.dumps({"error_code": "INTERNAL_ERROR", "message": "boom"}))
        elif mode == "e429":
            self.send(429, json.dumps({"error_code": "REQUEST_LIMIT_EXCEEDED", "message": "slow down"}),
                      extra=[("Retry-After", "0")])
        elif mode == "notjson":
            self.send(200, "<html>not json</html>", "text/html")
        elif mode == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"run": {"info": ')
            self.wfile.flush()
            self.close_connection = True
        elif mode == "auth":
            if self.headers.get("Authorization") in ("Basic dTpw", "Bearer s3cret-token"):
                self.send(200, "{}")
            else:
                self.send(401, "You are not authenticated.", "text/plain")
        else:
            self.send(404, json.dumps({"error_code": "ENDPOINT_NOT_FOUND", "message": "no such mode"}))

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lifetime", type=float, default=120)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    print(os.getpid(), flush=True)
    threading.Timer(args.lifetime, lambda: os._exit(0)).start()
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
