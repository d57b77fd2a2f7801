"""zeroconf_resolve.py [INSTANCE]: browse _raop._tcp with python-zeroconf on 127.0.0.1 and
resolve INSTANCE (a full service name, e.g. "AABBCCDDEEFF@Kitchen._raop._tcp.local."), or the
first instance seen. Prints one JSON object: "seen" (the instances browsed within 10 s), and,
if resolved, "port", "server", "addresses" and "txt". Used by the mDNS tests."""
import json
import sys
import time

from zeroconf import IPVersion, ServiceBrowser, ServiceListener, Zeroconf

want = sys.argv[1] if len(sys.argv) > 1 else None
zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
seen = []


class L(ServiceListener):
    def add_service(self, zc, t, n):
        seen.append(n)

    def update_service(self, zc, t, n):
        pass

    def remove_service(self, zc, t, n):
        pass


ServiceBrowser(zc, "_raop._tcp.local.", L())
end = time.time() + 10
while time.time() < end and (want not in seen if want else not seen):
    time.sleep(0.1)
name = want or (seen[0] if seen else None)
info = zc.get_service_info("_raop._tcp.local.", name, timeout=5000) if name else None
res = {"seen": seen, "port": info.port if info else None}
if info:
    res["server"] = info.server
    res["addresses"] = info.parsed_addresses()
    res["txt"] = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
print(json.dumps(res, ensure_ascii=False))
zc.close()
