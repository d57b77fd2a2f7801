#!/usr/bin/env python3
"""The router side of LuCI for the browser test (tests/luci_browser.rs): standard library only.

LuCI's web server (uhttpd with its ubus module), rpcd and procd exist only on OpenWrt, so this
small server stands in for the parts the page reaches, and runs the package's REAL files:

  GET  /cgi-bin/luci/PATH     a page shell for the menu entry PATH of the shipped menu.d JSON
                              (a `view` action), or admin/status/overview with every shipped
                              status/include card
  GET  /luci-static/resources/...   the shipped htdocs (the views, unchanged)
  GET  /luci-static/standin/...     luci-standin.js and standin.css from this directory
  POST /ubus                  ubus JSON-RPC 2.0, `call` only, checked against the shipped ACL
                              (-32002 "Access denied" otherwise, as from rpcd):
       luci.raopd METHOD      the REAL rpcd backend, run as rpcd runs it:
                              `/usr/libexec/rpcd/luci.raopd call METHOD`, arguments on stdin;
                              methods missing from its `list` get status 3 (not found)
       uci get/set/delete     a copy of /etc/config/raopd, changes staged in memory
       uci apply              writes the staged changes the way `uci commit` writes a file,
                              then reloads the service through the REAL init script

It is also the test's procd: the init script runs under tests/openwrt/root/etc/rc.common with
PROCD_STUB_OUT, and the instance it describes (command line, environment) is started; on a
reload the instance is restarted (SIGTERM, then a new process) only if its command line or
environment changed, as procd does. The program path /usr/sbin/raopd is the only thing mapped
(to the cargo-built binary). The instance's pid and argv go to STATE/instance.json for the test.

usage: server.py --port P --app DIR --openwrt-root DIR --init FILE --uci-dir DIR
                 --raopd-bin FILE --state-dir DIR [--network-devices 'lan=lo']
Run it in a private mount namespace with a tmpfs on /run: raopd and the backend then meet at
the default control socket /var/run/raopd.sock, as on the router.
"""

import argparse
import glob
import http.server
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

STANDIN = os.path.dirname(os.path.abspath(__file__))
NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title} - LuCI</title>
<link rel="stylesheet" href="/luci-static/standin/standin.css">
<script src="/luci-static/standin/luci-standin.js"></script></head>
<body><header><span class="brand">OpenWrt</span><span class="menu">{menu}</span></header>
<div id="maincontent"><div id="notifications"></div><div id="view">Loading view…</div></div>
<script>L.boot({boot});</script></body></html>
"""


def log(*a):
    print("server:", *a, file=sys.stderr, flush=True)


# ----- UCI ------------------------------------------------------------------------------------


def uci_read(path):
    """Sections of a UCI file: [{'.type', '.name', 'opts': {name: str | [str]}}]."""
    sections = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            words = shlex.split(line, comments=True)
            if not words:
                continue
            if words[0] == "config":
                name = words[2] if len(words) > 2 else "cfg%02x" % len(sections)
                sections.append({".type": words[1], ".name": name, "opts": {}})
            elif words[0] in ("option", "list") and len(words) == 3 and sections:
                opts = sections[-1]["opts"]
                if words[0] == "list":
                    opts.setdefault(words[1], [])
                    opts[words[1]].append(words[2])
                else:
                    opts[words[1]] = words[2]
    return sections


def uci_quote(v):
    return "'" + v.replace("'", "'\\''") + "'"


def uci_write(path, sections):
    """Like `uci commit`: comments dropped, every value single-quoted."""
    lines = []
    for s in sections:
        lines += ["", "config %s %s" % (s[".type"], uci_quote(s[".name"]))]
        for k, v in s["opts"].items():
            if isinstance(v, list):
                lines += ["\tlist %s %s" % (k, uci_quote(x)) for x in v]
            else:
                lines.append("\toption %s %s" % (k, uci_quote(v)))
    tmp = path + ".new"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n\n")
    os.replace(tmp, path)


def valid_value(v):
    if isinstance(v, list):
        return all(valid_value(x) for x in v)
    return isinstance(v, str) and "\n" not in v and "\0" not in v


# ----- procd ----------------------------------------------------------------------------------


class Procd:
    def __init__(self, a):
        self.a = a
        self.proc = None
        self.spec = None

    def run_init(self, action):
        out = os.path.join(self.a.state_dir, "procd.out")
        if os.path.exists(out):
            os.remove(out)
        env = dict(
            os.environ,
            IPKG_INSTROOT=self.a.openwrt_root,
            UCI_CONFIG_DIR=self.a.uci_dir,
            NETWORK_DEVICES=self.a.network_devices,
            PROCD_STUB_OUT=out,
        )
        rc = os.path.join(self.a.openwrt_root, "etc/rc.common")
        r = subprocess.run(["sh", rc, self.a.init, action], env=env, capture_output=True, text=True)
        if r.stderr.strip():
            log("init script %s:" % action, r.stderr.strip())
        spec = None
        if os.path.exists(out):
            with open(out, encoding="utf-8") as f:
                for line in f.read().splitlines():
                    f_ = line.split("\t")
                    if f_[0] == "instance":
                        spec = {"argv": [], "env": []}
                    elif spec is not None and len(f_) == 3 and f_[1] in ("command", "env"):
                        key = "argv" if f_[1] == "command" else "env"
                        if f_[0] == "set":
                            spec[key] = [f_[2]]
                        else:
                            spec[key].append(f_[2])
        return spec

    def reload(self, action):
        spec = self.run_init(action)
        running = self.proc is not None and self.proc.poll() is None
        if spec == self.spec and running:
            log("instance unchanged")
            return
        self.stop()
        self.spec = spec
        if spec is None:
            log("no instance")
            self.write_state(None)
            return
        argv = list(spec["argv"])
        if argv and argv[0] == "/usr/sbin/raopd":
            argv[0] = self.a.raopd_bin
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for kv in spec["env"]:
            k, _, v = kv.partition("=")
            env[k] = v
        logf = open(os.path.join(self.a.state_dir, "raopd.log"), "ab")
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf)
        log("started pid %d: %s" % (self.proc.pid, " ".join(shlex.quote(x) for x in spec["argv"])))
        self.write_state(self.proc.pid)

    def write_state(self, pid):
        path = os.path.join(self.a.state_dir, "instance.json")
        with open(path + ".new", "w", encoding="utf-8") as f:
            json.dump({"pid": pid, "argv": self.spec and self.spec["argv"]}, f)
        os.replace(path + ".new", path)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


# ----- ubus -----------------------------------------------------------------------------------


class Ubus:
    def __init__(self, a, procd):
        self.a = a
        self.procd = procd
        self.lock = threading.Lock()
        self.staged = None  # (file, sections) with this session's uncommitted changes
        self.acl = {"read": {"ubus": {}, "uci": set()}, "write": {"ubus": {}, "uci": set()}}
        for path in glob.glob(os.path.join(a.app, "root/usr/share/rpcd/acl.d/*.json")):
            with open(path, encoding="utf-8") as f:
                for group in json.load(f).values():
                    for mode in ("read", "write"):
                        for obj, methods in group.get(mode, {}).get("ubus", {}).items():
                            self.acl[mode]["ubus"].setdefault(obj, set()).update(methods)
                        self.acl[mode]["uci"].update(group.get(mode, {}).get("uci", []))
        self.backends = {}
        for path in glob.glob(os.path.join(a.app, "root/usr/libexec/rpcd/*")):
            r = subprocess.run([path, "list"], capture_output=True, text=True, timeout=10)
            self.backends[os.path.basename(path)] = (path, json.loads(r.stdout))

    def allowed(self, obj, method, args):
        if obj == "uci":
            if method == "apply":
                return True
            configs = self.acl["write"]["uci"] | (self.acl["read"]["uci"] if method == "get" else set())
            return args.get("config") in configs
        return any(method in self.acl[m]["ubus"].get(obj, ()) for m in ("read", "write"))

    def call(self, obj, method, args):
        """Returns the ubus result list: [status] or [0, object]."""
        if obj in self.backends:
            path, methods = self.backends[obj]
            if method not in methods:
                return [3]
            r = subprocess.run(
                [path, "call", method],
                input=json.dumps(args),
                capture_output=True,
                text=True,
                timeout=20,
                env=dict(PATH=os.environ.get("PATH", ""), RAOPD_BIN=self.a.raopd_bin),
            )
            try:
                reply = json.loads(r.stdout)
            except ValueError:
                log("backend %s %s: not JSON: %r" % (obj, method, r.stdout))
                return [2]
            if method != "status":
                log("%s %s %s -> %s" % (obj, method, json.dumps(args), r.stdout.strip()))
            return [0, reply] if isinstance(reply, dict) else [2]
        if obj == "uci":
            with self.lock:
                return self.uci(method, args)
        return [4]

    def uci(self, method, args):
        if method == "apply":
            return self.apply()
        path = os.path.join(self.a.uci_dir, args.get("config", ""))
        if not NAME_RE.match(args.get("config", "")) or not os.path.exists(path):
            return [4]
        if self.staged is None or self.staged[0] != path:
            self.apply_staged()
            self.staged = (path, uci_read(path))
        sections = self.staged[1]
        sec = {s[".name"]: s for s in sections}
        if method == "get":
            values = {}
            for i, s in enumerate(sections):
                v = {".anonymous": False, ".type": s[".type"], ".name": s[".name"], ".index": i}
                v.update(s["opts"])
                values[s[".name"]] = v
            return [0, {"values": values}]
        s = sec.get(args.get("section"))
        if s is None:
            return [4]
        if method == "set":
            vals = args.get("values", {})
            if not all(NAME_RE.match(k) and valid_value(v) for k, v in vals.items()):
                return [2]
            s["opts"].update(vals)
            return [0, {}]
        if method == "delete":
            for o in args.get("options", []) + ([args["option"]] if "option" in args else []):
                s["opts"].pop(o, None)
            return [0, {}]
        return [3]

    def apply_staged(self):
        if self.staged is not None:
            uci_write(*self.staged)
            self.staged = None

    def apply(self):
        self.apply_staged()
        self.procd.reload("reload")
        return [0, {}]


# ----- HTTP -----------------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "uhttpd-standin"

    def log_message(self, fmt, *args):
        log(fmt % args)

    def reply(self, code, body, ctype):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        a = self.server.args
        path = self.path.split("?")[0]
        if path.startswith("/cgi-bin/luci/"):
            page = self.page(path[len("/cgi-bin/luci/"):].strip("/"))
            if page:
                return self.reply(200, page, "text/html; charset=utf-8")
        for prefix, base in (
            ("/luci-static/resources/", os.path.join(a.app, "htdocs/luci-static/resources")),
            ("/luci-static/standin/", STANDIN),
        ):
            if path.startswith(prefix):
                file = os.path.realpath(os.path.join(base, path[len(prefix):]))
                if file.startswith(os.path.realpath(base) + os.sep) and os.path.isfile(file):
                    ctype = {"js": "application/javascript", "css": "text/css"}.get(
                        file.rsplit(".", 1)[-1], "application/octet-stream"
                    )
                    with open(file, "rb") as f:
                        return self.reply(200, f.read(), ctype)
        self.reply(404, "not found\n", "text/plain")

    def page(self, route):
        a = self.server.args
        if route == "admin/status/overview":
            base = os.path.join(a.app, "htdocs/luci-static/resources/")
            incs = sorted(glob.glob(base + "view/status/include/*.js"))
            boot = {"includes": [i[len(base):-3].replace("/", ".") for i in incs]}
            return PAGE.format(title="Overview", menu="Status › Overview", boot=json.dumps(boot))
        for path in glob.glob(os.path.join(a.app, "root/usr/share/luci/menu.d/*.json")):
            with open(path, encoding="utf-8") as f:
                entry = json.load(f).get(route)
            if entry and entry.get("action", {}).get("type") == "view":
                boot = {"view": "view." + entry["action"]["path"].replace("/", ".")}
                menu = "Services › " + entry["title"]
                return PAGE.format(title=entry["title"], menu=menu, boot=json.dumps(boot))
        return None

    def do_POST(self):
        if self.path.split("?")[0].rstrip("/") != "/ubus":
            return self.reply(404, "not found\n", "text/plain")
        n = int(self.headers.get("Content-Length", "0"))
        try:
            req = json.loads(self.rfile.read(n))
            sid, obj, method, args = req["params"]
            assert req.get("method") == "call" and isinstance(args, dict)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self.reply(200, json.dumps({"jsonrpc": "2.0", "id": None,
                              "error": {"code": -32600, "message": "Invalid request"}}), "application/json")
        ubus = self.server.ubus
        if not ubus.allowed(obj, method, args):
            log("denied %s %s" % (obj, method))
            out = {"jsonrpc": "2.0", "id": req.get("id"), "error": {"code": -32002, "message": "Access denied"}}
        else:
            out = {"jsonrpc": "2.0", "id": req.get("id"), "result": ubus.call(obj, method, args)}
        self.reply(200, json.dumps(out), "application/json")


def main():
    p = argparse.ArgumentParser()
    for opt in ("port", "app", "openwrt-root", "init", "uci-dir", "raopd-bin", "state-dir"):
        p.add_argument("--" + opt, required=True)
    p.add_argument("--network-devices", default="")
    a = p.parse_args()
    procd = Procd(a)
    procd.reload("start")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(a.port)), Handler)
    server.args = a
    server.ubus = Ubus(a, procd)

    def on_term(*_):
        procd.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    log("serving on port", a.port)
    try:
        server.serve_forever()
    finally:
        procd.stop()


if __name__ == "__main__":
    main()
