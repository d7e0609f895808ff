"""Start the mefstream server.

    python start.py                      # root service on RPCPORTS["MEF"], demo if no data
    python start.py PATH.mefd [--password PW]   # one session at the connection root
    python start.py --live NAME --channels a,b,c --fs 30000 [--dtype int16]
                                         # a live stream producers push into, at the root
    python start.py PATH.mefd --replay [--speed 10] [--loop]   # a recording, replayed live

Defaults come from settings.py (each overridable by a MEFSTREAM_<NAME> environment
variable). Every numeric flag is checked against one table of valid ranges
(software/server/options.py) before anything starts; a bad value exits with status 2 and
a message naming the flag, the value and the valid range.

Without a session under the data root, the demo recording is written there first, in a
child process (the server process never loads pymef, mef_tools or pandas); if it cannot be
written (a read-only or missing data root, a full disk), start.py says why and exits 2.

Ctrl-C or SIGTERM shut down cleanly: connections close, reader processes end, the port
is released.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
import signal
import subprocess
import sys
import threading

import settings

# software is imported in the functions below, not here: reader processes are spawned and
# re-run this module's top level, and should not load the server, rpyc and the demo code

logger = logging.getLogger("mefstream")


#: Folder of this file: the child that writes the demo imports ``software`` from here.
HERE = os.path.dirname(os.path.abspath(__file__))

#: Run by ``python -c`` (in HERE, so that ``software`` imports from this checkout) to write
#: the demo: argv is [path]. It prints one line and exits
#: 1 on any error (no traceback), and writes into a hidden folder renamed into place at the
#: end, so a failed write never leaves a half session that a later start would serve.
DEMO_CHILD = """\
import os, shutil, sys, tempfile
path = sys.argv[1]
scratch = None
try:
    from software.mef3.demo import write_demo_recording
    scratch = tempfile.mkdtemp(prefix=".demo-", dir=os.path.dirname(path))
    write_demo_recording(os.path.join(scratch, os.path.basename(path)))
    os.rename(os.path.join(scratch, os.path.basename(path)), path)
except BaseException as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}\\n")
    sys.exit(1)
finally:
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
"""


def flag_of(name: str) -> str:
    """The command-line flag of option ``name`` (``block_seconds`` -> ``--block-seconds``)."""
    return "--" + name.replace("_", "-")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line (exits 2 with a message on a bad value)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("session", nargs="?", help="serve this .mefd session at the root")
    parser.add_argument("--password", default=None,
                        help="level-2 password of SESSION (or set MEFSTREAM_PASSWORD)")
    parser.add_argument("--host", default=settings.HOST,
                        help="interface to bind (default %(default)s; others need TLS)")
    parser.add_argument("--port", type=int, default=settings.RPCPORTS["MEF"],
                        help="TCP port (default %(default)s; 0 picks a free one)")
    parser.add_argument("--data-root", default=settings.DATA_ROOT,
                        help="clients may open sessions only under this directory")
    parser.add_argument("--workers", type=int, default=settings.READER_WORKERS,
                        help="reader processes (default %(default)s)")
    parser.add_argument("--prefetch", type=int, default=settings.PREFETCH,
                        help="requests read ahead of a streaming client (0: off)")
    parser.add_argument("--cache-mb", type=float, default=settings.CACHE_MB,
                        help="block cache budget in MiB (default %(default)s)")
    parser.add_argument("--segment-seconds", type=float, default=settings.SEGMENT_SECONDS,
                        help="default segment size of get_segment (default %(default)s)")
    parser.add_argument("--block-seconds", type=float, default=settings.BLOCK_SECONDS,
                        help="cache block length in seconds, 0.1 to 3600 "
                             "(default %(default)s)")
    parser.add_argument("--max-request-mb", type=float, default=settings.MAX_REQUEST_MB,
                        help="largest answer of one call in MiB; clients learn it at "
                             "connect (default %(default)s)")
    parser.add_argument("--reader-nice", type=int, default=settings.READER_NICE,
                        help="nice value added to the reader processes, 0 to 19 (0: none)")
    parser.add_argument("--callback-timeout", type=float, default=settings.CALLBACK_TIMEOUT,
                        help="seconds before a client callback that has not returned is "
                             "logged and counted")
    parser.add_argument("--read-timeout", type=float, default=settings.READ_TIMEOUT,
                        help="seconds a call without callback waits for its data "
                             "(default %(default)s)")
    parser.add_argument("--keep-warm-seconds", type=float,
                        default=settings.KEEP_WARM_SECONDS,
                        help="seconds a session stays cached after its last client closed "
                             "it, so that the next tool reads from the cache (0: close at "
                             "once; default %(default)s)")
    parser.add_argument("--max-waiting", type=int, default=settings.MAX_WAITING,
                        help="callback requests one connection may have waiting for their "
                             "answer (default %(default)s)")
    parser.add_argument("--tls-cert", default=None, help="server certificate (PEM): enables TLS")
    parser.add_argument("--tls-key", default=None, help="private key of --tls-cert (PEM)")
    parser.add_argument("--tls-ca", default=None,
                        help="CA certificate: clients must present a certificate it signed")
    parser.add_argument("--registry", default=settings.REGISTRY, metavar="HOST[:PORT]",
                        help="announce this server to the RPyC registry there (python -m "
                             "software registry; port 18811 when omitted)")
    parser.add_argument("--service-name", default=settings.SERVICE_NAME,
                        help="name announced to --registry (default %(default)s)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    from software.live import launch
    launch.add_arguments(parser)
    args = parser.parse_args(argv)
    launch.check(args, parser)
    if args.password is None:
        args.password = os.environ.get("MEFSTREAM_PASSWORD")
    from software.errors import StreamError
    from software.server.options import RANGES, check_option
    for name in RANGES:       # the server checks them again, naming them as arguments
        try:
            check_option(name, getattr(args, name), flag=flag_of(name))
        except StreamError as exc:
            parser.error(str(exc))
    if args.registry:
        from software.discovery import parse_address
        from software.discovery.registry import REGISTRY_PORT
        try:
            args.registry = parse_address(args.registry, REGISTRY_PORT, name="--registry")
        except StreamError as exc:
            parser.error(str(exc))
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_ca and not args.tls_cert):
        parser.error("TLS needs both --tls-cert and --tls-key (and --tls-ca only with them)")
    return args


def ensure_demo(data_root: str) -> bool:
    """Write the demo recording under ``data_root`` when it holds no session.

    The demo is written by a child process (``python -c DEMO_CHILD``), so that pymef,
    mef_tools and pandas are never loaded into the server process.

    Returns
    -------
    bool
        True when there is a session (found, or written now); False when the data root
        cannot be made or the demo cannot be written (the reason is logged).
    """
    try:
        os.makedirs(data_root, exist_ok=True)
    except OSError as exc:
        logger.error("cannot start: the data root %s cannot be made (%s); pass --data-root "
                     "a directory you can write, or one that holds .mefd sessions",
                     data_root, exc.strerror or exc)
        return False
    found = glob.glob(os.path.join(data_root, "*.mefd")) + glob.glob(
        os.path.join(data_root, "*", "*.mefd"))
    if found:
        return True
    path = os.path.abspath(os.path.join(data_root, settings.DEMO_NAME))
    logger.info("no session under %s: writing the demo recording %s (a few seconds)",
                os.path.abspath(data_root), path)
    try:
        result = subprocess.run([sys.executable, "-c", DEMO_CHILD, path],
                                cwd=HERE, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, check=False)
    except KeyboardInterrupt:
        logger.error("interrupted while writing the demo recording %s", path)
        return False
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])
        logger.error("cannot start: no session under %s and the demo recording cannot be "
                     "written there (%s); pass --data-root a writable directory or one that "
                     "holds .mefd sessions", os.path.abspath(data_root), reason[-1])
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the server until Ctrl-C or SIGTERM; returns the exit status (0, or 2 when it
    cannot start)."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from software.live import launch
    data_root = args.data_root
    session = args.session
    live = launch.server_live(args)   # --live NAME, or SESSION --replay
    if session is not None:
        session = os.path.abspath(session)
        if args.data_root == settings.DATA_ROOT:
            data_root = os.path.dirname(session)
    elif live is None and not ensure_demo(data_root):
        return 2   # a start-up failure the user fixes with another --data-root, as a bad path
    authenticator = None
    if args.tls_cert:
        import ssl

        from rpyc.utils.authenticators import SSLAuthenticator
        try:  # SSLAuthenticator reads the files at each connection: check them now
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(args.tls_cert, keyfile=args.tls_key)
            if args.tls_ca:
                context.load_verify_locations(args.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            logger.error("cannot start: the TLS files --tls-cert %s, --tls-key %s, --tls-ca "
                         "%s do not load: %s", args.tls_cert, args.tls_key, args.tls_ca, exc)
            return 2
        authenticator = SSLAuthenticator(
            args.tls_key, args.tls_cert, ca_certs=args.tls_ca,
            cert_reqs=ssl.CERT_REQUIRED if args.tls_ca else ssl.CERT_NONE)
        if not args.tls_ca and args.host not in ("127.0.0.1", "localhost", "::1"):
            logger.warning("TLS on %s without --tls-ca: traffic is encrypted but any client "
                           "that reaches this port can read every session; add --tls-ca to "
                           "require client certificates.", args.host)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    from software import MefStreamServer
    try:
        server = MefStreamServer(host=args.host, port=args.port, data_root=data_root,
                                 workers=args.workers, prefetch=args.prefetch,
                                 cache_mb=args.cache_mb, segment_seconds=args.segment_seconds,
                                 block_seconds=args.block_seconds,
                                 max_request_mb=args.max_request_mb,
                                 session=None if live is not None else session, live=live,
                                 password=args.password, authenticator=authenticator,
                                 reader_nice=args.reader_nice,
                                 callback_timeout=args.callback_timeout,
                                 read_timeout=args.read_timeout,
                                 max_waiting=args.max_waiting,
                                 keep_warm_seconds=args.keep_warm_seconds)
    except Exception as exc:  # a bad session, password or port: say so and exit
        from software.cli.common import for_cli
        logger.error("cannot start: %s", for_cli(str(exc)))   # fixes as options: --port
        return 2
    with server, contextlib.ExitStack() as announced:
        if args.registry:
            from software.discovery import announce
            announced.enter_context(announce(args.service_name, server.port, args.registry,
                                             host=args.host))
            logger.info("announced as %s to the registry at %s:%d", args.service_name,
                        *args.registry)
        logger.info("ready on %s:%d; Ctrl-C stops", args.host, server.port)
        # a wait with a timeout: a signal the kernel hands to another thread only runs
        # its handler when this thread next runs Python code
        while not stop.wait(0.2):
            pass
        logger.info("shutting down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
