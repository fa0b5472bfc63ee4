#!/usr/bin/env python3
"""A small HTTP(S) server for dconn's HTTP client specs (standard library only).

usage: http_peer.py [--cert FILE --key FILE] [--lifetime SECONDS]

Binds 127.0.0.1 on a port the kernel picks, prints the port as the first line of stdout and its
pid as the second, then serves until killed (or until --lifetime passes, so a crashed spec
never leaves it behind).

  /status/N                  status N
  /echo                      method, path, query, headers, body and the client's port as JSON
  /redirect?to=URL           302 to URL
  /chunked                   Transfer-Encoding: chunked, several chunks
  /slow?s=2                  answers after s seconds (key=K: counted in /active?key=K)
  /active?key=K              {"active": requests of key K in /slow now, "max": the most at once}
  /close-mid-body            Content-Length: 1000, sends 10 bytes, closes
  /retry-after?key=K&n=2     429 with Retry-After: 1 for the first n calls per key (date=1: an
                             HTTP date instead of seconds), then 200
  /flaky?key=K&n=2           503 for the first n calls per key, then 200
  /calls?key=K               how many calls the key got so far
  /json                      a JSON document
  /notjson                   text that is not JSON, labelled application/json
  /big?mb=N                  N MiB (chunked=1: without Content-Length)
  /multi-header              a header sent twice and mixed-case names
"""
import argparse
import email.utils
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CALLS = {}
CALLS_LOCK = threading.Lock()
ACTIVE = {}  # key -> [in /slow now, most at once]


def count_call(key):
    with CALLS_LOCK:
        CALLS[key] = CALLS.get(key, 0) + 1
        return CALLS[key]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection reuse is exercised

    def log_message(self, *args):  # quiet: the spec's output is TAP
        pass

    def send(self, status, body=b"", headers=()):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)

        def arg(name, default=None):
            return query.get(name, [default])[0]

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = url.path
        if path.startswith("/status/"):
            code = int(path[len("/status/"):])
            self.send(code, "status %d" % code, [("Content-Type", "text/plain")])
        elif path == "/echo":
            headers = {}
            for name, value in self.headers.items():
                name = name.lower()
                headers[name] = headers[name] + ", " + value if name in headers else value
            doc = {"method": self.command, "path": path, "query": query, "headers": headers,
                   "body": body.decode("utf-8", "replace"),
                   "client_port": self.client_address[1]}
            self.send(200, json.dumps(doc), [("Content-Type", "application/json")])
        elif path == "/redirect":
            self.send(302, "", [("Location", arg("to", "/echo"))])
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(1, 6):
                chunk = ("part%d;" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(0.01)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow":
            key = arg("key")
            if key is not None:
                with CALLS_LOCK:
                    counts = ACTIVE.setdefault(key, [0, 0])
                    counts[0] += 1
                    counts[1] = max(counts[1], counts[0])
            try:
                time.sleep(float(arg("s", "2")))
            finally:
                if key is not None:
                    with CALLS_LOCK:
                        ACTIVE[key][0] -= 1
            self.send(200, "slow")
        elif path == "/active":
            with CALLS_LOCK:
                active, most = ACTIVE.get(arg("key", ""), [0, 0])
            self.send(200, json.dumps({"active": active, "max": most}), [("Content-Type", "application/json")])
        elif path == "/close-mid-body":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
        elif path == "/retry-after":
            n = count_call("retry-after:" + arg("key", ""))
            if n <= int(arg("n", "2")):
                if arg("date"):
                    after = email.utils.formatdate(time.time() + 2, usegmt=True)
                else:
                    after = "1"
                self.send(429, "slow down", [("Retry-After", after)])
            else:
                self.send(200, "ok after %d calls" % n)
        elif path == "/flaky":
            n = count_call("flaky:" + arg("key", ""))
            if n <= int(arg("n", "2")):
                self.send(503, "unavailable")
            else:
                self.send(200, "ok after %d calls" % n)
        elif path == "/calls":
            key = arg("key", "")
            with CALLS_LOCK:
                counts = {k: v for k, v in CALLS.items() if k.endswith(":" + key)}
            self.send(200, json.dumps(counts), [("Content-Type", "application/json")])
        elif path == "/json":
            doc = {"name": "dconn", "ok": True, "n": 42, "list": [1, 2, 3], "nested": {"x": None}}
            self.send(200, json.dumps(doc), [("Content-Type", "application/json")])
        elif path == "/notjson":
            self.send(200, "<html>this is not {json", [("Content-Type", "application/json")])
        elif path == "/big":
            size = int(float(arg("mb", "1")) * 1024 * 1024)
            block = b"x" * 65536
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            chunked = arg("chunked") == "1"
            if chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(size))
            self.end_headers()
            sent = 0
            while sent < size:
                part = block[: min(len(block), size - sent)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
                sent += len(part)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        elif path == "/multi-header":
            self.send(200, "ok", [("X-Dup", "a"), ("X-Dup", "b"), ("X-Mixed-Case", "Yes")])
        else:
            self.send(404, "no route " + path)

    def handle_one_request(self):
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeouts, caps)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the specs open hundreds of connections at once

    def handle_error(self, request, client_address):
        pass  # a client that went away is not news


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--lifetime", type=float, default=300)
    args = parser.parse_args()
    server = Server(("127.0.0.1", 0), Handler)
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    print(os.getpid(), flush=True)
    threading.Timer(args.lifetime, lambda: os._exit(0)).start()
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
