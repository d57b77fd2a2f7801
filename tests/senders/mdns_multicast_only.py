"""A sender's mDNS responder that answers by multicast only.

Some senders' built-in responders answer every question on 224.0.0.251:5353 and never by
unicast to the asker's port (RFC 6762 section 6 allows it; section 6.7 legacy unicast
replies are what they skip). This one answers questions for
`iTunes_Ctrl_<DACP-ID>._dacp._tcp.local` with an SRV record pointing at PORT, sent to the
group only, and prints one line per answer.

usage: mdns_multicast_only.py DACP-ID PORT
"""

import socket
import struct
import sys

GROUP = "224.0.0.251"


def encode(name):
    out = b""
    for label in name.split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def main():
    dacp_id, port = sys.argv[1], int(sys.argv[2])
    service = encode(f"iTunes_Ctrl_{dacp_id}._dacp._tcp.local")
    host = encode("sender.local")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("", 5353))
    mreq = struct.pack("4s4s", socket.inet_aton(GROUP), socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    print("ready", flush=True)
    while True:
        data, src = s.recvfrom(9000)
        # Queries only (QR clear) that ask for our service.
        if len(data) < 12 or data[2] & 0x80 or service.lower() not in data.lower():
            continue
        srv = struct.pack(">HHH", 0, 0, port) + host
        answer = struct.pack(">HHHHHH", 0, 0x8400, 0, 2, 0, 0)
        answer += service + struct.pack(">HHIH", 33, 0x8001, 120, len(srv)) + srv
        answer += host + struct.pack(">HHIH", 1, 0x8001, 120, 4) + socket.inet_aton("127.0.0.1")
        s.sendto(answer, (GROUP, 5353))
        print(f"answered a query from {src[0]}:{src[1]} by multicast", flush=True)


if __name__ == "__main__":
    main()
