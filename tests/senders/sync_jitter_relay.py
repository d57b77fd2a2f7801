#!/usr/bin/env python3
"""sync_jitter_relay.py LISTEN_PORT TARGET_PORT LOG [SEED]

Stands between a RAOP sender and the receiver's control port (the test redirects the sender's
packets for TARGET_PORT here with nftables) and makes the sender's sync statements (0x54) as
noisy as a sender whose timers fire late while its RTP timestamps stay exact: each sync packet's
NTP time is moved by 20-40 ms, alternately later and earlier, and a packet stamped later is also
held back that long before it is forwarded. Every other packet (retransmitted audio, 0x56) is
forwarded at once, unchanged. Forwarded packets leave from LISTEN_PORT to 127.0.0.1:TARGET_PORT.

LOG gets one line per sync packet: "<rtp_now> <jitter ns>". Runs until killed.
"""
import heapq
import random
import select
import socket
import struct
import sys
import time


def main():
    listen, target, log_path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", listen))
    dest = ("127.0.0.1", target)
    log = open(log_path, "w", buffering=1)
    pending = []  # (due monotonic seconds, sequence, bytes)
    count = 0
    sign = 1
    while True:
        timeout = None
        if pending:
            timeout = max(0.0, pending[0][0] - time.monotonic())
        ready, _, _ = select.select([sock], [], [], timeout)
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            sock.sendto(heapq.heappop(pending)[2], dest)
        if not ready:
            continue
        data, _ = sock.recvfrom(2048)
        if len(data) >= 20 and data[1] & 0x7F == 0x54:
            jitter = sign * rng.uniform(0.020, 0.040)
            sign = -sign
            (ntp,) = struct.unpack_from(">Q", data, 8)
            ntp = (ntp + round(jitter * (1 << 32))) % (1 << 64)
            data = data[:8] + struct.pack(">Q", ntp) + data[16:]
            (rtp_now,) = struct.unpack_from(">I", data, 16)
            log.write(f"{rtp_now} {round(jitter * 1e9)}\n")
            count += 1
            heapq.heappush(pending, (now + max(jitter, 0.0), count, data))
        else:
            sock.sendto(data, dest)


if __name__ == "__main__":
    main()
