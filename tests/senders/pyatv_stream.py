"""Stream one audio file to a RAOP receiver with pyatv, addressed by host and port (no mDNS).

The end-to-end tests run this with the venv's python inside the test's network namespace.
pyatv streams 16-bit 44100 Hz stereo L16 (uncompressed), unencrypted; its stock SDP carries
"a=rtpmap:96 L16/44100/2" plus an ALAC-style "a=fmtp:96 352 0 16 40 10 14 2 255 0 0 44100" line.
Exit status 0 when the whole file was streamed, 1 when pyatv failed (one "pyatv: FAILED" line).
"""

import argparse
import asyncio
import logging
import sys
import time

import pyatv
import pyatv.support.rtsp
from pyatv.conf import AppleTV, ManualService
from pyatv.const import Protocol
from pyatv.protocols.airplay.utils import dbfs_to_pct
from pyatv.support.metadata import MediaMetadata


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("file")
    p.add_argument(
        "--volume-db",
        type=float,
        help="volume to send, in dB (0 = full scale, -30 = lowest); without it pyatv sends "
        "its default, 33 %% of the range (-20.1 dB)",
    )
    p.add_argument("--password", help="RTSP Digest password (pyatv's user name is 'pyatv')")
    p.add_argument(
        "--no-fmtp",
        action="store_true",
        help="leave the a=fmtp line out of the SDP (only for receivers that cannot parse it)",
    )
    p.add_argument("--title", help="send this track title (DMAP metadata)")
    p.add_argument("--artist", help="send this artist (DMAP metadata)")
    p.add_argument("--album", help="send this album (DMAP metadata)")
    p.add_argument(
        "--dacp-id",
        help="DACP-ID to send (16 hex digits) instead of pyatv's random one, so that a test's "
        "DACP responder can be announced under it",
    )
    p.add_argument("--active-remote", type=int, help="Active-Remote to send instead of a random one")
    p.add_argument(
        "--mid-stream-artwork",
        type=int,
        metavar="BYTES",
        help="2 s into the stream, send cover art of this size (SET_PARAMETER image/jpeg) on "
        "pyatv's RTSP connection, then 'volume: 0.300000', then GET_PARAMETER volume; print "
        "one 'mid-stream:' line with the answers",
    )
    p.add_argument(
        "--keep-alive",
        type=float,
        metavar="SECONDS",
        help="send pyatv's keep-alive (POST /feedback on its RTSP connection) this often "
        "instead of every 25 s",
    )
    p.add_argument("--debug", action="store_true", help="pyatv debug log on stderr")
    return p.parse_args()


def drop_fmtp_line():
    """pyatv builds its ANNOUNCE body from this module-level template."""
    template = pyatv.support.rtsp.ANNOUNCE_PAYLOAD
    kept = [line for line in template.split("\r\n") if line and not line.startswith("a=fmtp")]
    pyatv.support.rtsp.ANNOUNCE_PAYLOAD = "".join(line + "\r\n" for line in kept)


SESSIONS = []


def keep_sessions():
    """Remembers every RtspSession pyatv creates, to send extra requests on its connection."""
    init = pyatv.support.rtsp.RtspSession.__init__

    def patched(self, *a, **kw):
        init(self, *a, **kw)
        SESSIONS.append(self)

    pyatv.support.rtsp.RtspSession.__init__ = patched


async def mid_stream(artwork_bytes):
    """What a sender with big cover art does in the middle of a stream (see --mid-stream-artwork)."""
    await asyncio.sleep(2.0)
    rtsp = SESSIONS[-1]
    art = b"\xff\xd8\xff\xe0" + bytes(i % 251 for i in range(artwork_bytes - 4))
    r1 = await rtsp.exchange("SET_PARAMETER", content_type="image/jpeg", body=art, allow_error=True)
    r2 = await rtsp.exchange(
        "SET_PARAMETER", content_type="text/parameters", body="volume: 0.300000\r\n", allow_error=True
    )
    r3 = await rtsp.exchange(
        "GET_PARAMETER", content_type="text/parameters", body="volume\r\n", allow_error=True
    )
    body = r3.body.decode() if isinstance(r3.body, bytes) else str(r3.body)
    print(
        f"mid-stream: artwork {r1.code}; volume {r2.code}; get {r3.code} {body.strip()!r}",
        flush=True,
    )


def set_keep_alive(seconds):
    """pyatv's AirPlay 1 keep-alive interval is a module constant (25 s in 0.18.0)."""
    import pyatv.protocols.raop.protocols.airplayv1 as airplayv1

    airplayv1.KEEP_ALIVE_INTERVAL = seconds


def fix_remote_ids(dacp_id, active_remote):
    """pyatv sends `DACP-ID` and `Active-Remote` with every RTSP request (random per session)
    but runs no DACP server; a test that answers DACP itself needs to know them."""
    init = pyatv.support.rtsp.RtspSession.__init__

    def patched(self, *a, **kw):
        init(self, *a, **kw)
        if dacp_id is not None:
            self.dacp_id = dacp_id
        if active_remote is not None:
            self.active_remote = active_remote

    pyatv.support.rtsp.RtspSession.__init__ = patched


async def stream(args):
    metadata = None
    properties = {}
    if args.title or args.artist or args.album:
        metadata = MediaMetadata(title=args.title, artist=args.artist, album=args.album)
        # pyatv only sends metadata to receivers whose TXT record says they take it.
        properties = {"md": "0,1,2"}
    config = AppleTV(args.host, "raopd-test-receiver")
    config.add_service(
        ManualService(
            "raopd-test-receiver", Protocol.RAOP, args.port, properties, password=args.password
        )
    )
    started = time.monotonic()
    atv = await pyatv.connect(config, asyncio.get_running_loop())
    try:
        if args.volume_db is not None:
            # pyatv keeps volume in percent and maps 0..100 % linearly onto -30..0 dB.
            await atv.audio.set_volume(dbfs_to_pct(args.volume_db))
        connected = time.monotonic()
        extra = None
        if args.mid_stream_artwork:
            extra = asyncio.ensure_future(mid_stream(args.mid_stream_artwork))
        await atv.stream.stream_file(args.file, metadata=metadata)
        if extra is not None:
            await extra
        done = time.monotonic()
        print(f"pyatv: connect {connected - started:.3f} s, stream {done - connected:.3f} s", flush=True)
    finally:
        atv.close()


def main():
    args = parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING)
    if args.no_fmtp:
        drop_fmtp_line()
    if args.mid_stream_artwork:
        keep_sessions()
    if args.keep_alive is not None:
        set_keep_alive(args.keep_alive)
    if args.dacp_id is not None or args.active_remote is not None:
        fix_remote_ids(args.dacp_id, args.active_remote)
    try:
        asyncio.run(stream(args))
    except Exception as e:  # one line for the test's failure message
        print(f"pyatv: FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
