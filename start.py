"""Start the mefstream server.

    python start.py                      # root service on RPCPORTS["MEF"], demo if no data
    python start.py PATH.mefd [--password PW]   # one session at the connection root

Ctrl-C or SIGTERM shut down cleanly: connections close, reader processes end, the port
is released.
"""
from __future__ import annotations

import argparse
import glob
import logging
import os
import signal
import sys
import threading

import settings

# software is imported in the functions below, not here: reader processes are spawned and
# re-run this module's top level, and should not load the server, rpyc and the demo code

logger = logging.getLogger("mefstream")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("session", nargs="?", help="serve this .mefd session at the root")
    parser.add_argument("--password", default=None,
                        help="level-2 password of SESSION (or set MEFSTREAM_PASSWORD)")
    parser.add_argument("--host", default=settings.HOST)
    parser.add_argument("--port", type=int, default=settings.RPCPORTS["MEF"])
    parser.add_argument("--data-root", default=settings.DATA_ROOT,
                        help="clients may open sessions only under this directory")
    parser.add_argument("--workers", type=int, default=settings.READER_WORKERS)
    parser.add_argument("--prefetch", type=int, default=settings.PREFETCH)
    parser.add_argument("--cache-mb", type=float, default=settings.CACHE_MB)
    parser.add_argument("--segment-seconds", type=float, default=settings.SEGMENT_SECONDS)
    parser.add_argument("--block-seconds", type=float, default=settings.BLOCK_SECONDS)
    parser.add_argument("--max-request-mb", type=float, default=settings.MAX_REQUEST_MB)
    parser.add_argument("--reader-nice", type=int, default=settings.READER_NICE,
                        help="nice value added to the reader processes (0: none)")
    parser.add_argument("--callback-timeout", type=float, default=settings.CALLBACK_TIMEOUT,
                        help="seconds before a client callback that has not returned is "
                             "logged")
    parser.add_argument("--tls-cert", default=None, help="server certificate (PEM): enables TLS")
    parser.add_argument("--tls-key", default=None, help="private key of --tls-cert (PEM)")
    parser.add_argument("--tls-ca", default=None,
                        help="CA certificate: clients must present a certificate it signed")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.password is None:
        args.password = os.environ.get("MEFSTREAM_PASSWORD")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1; {args.workers} is invalid")
    if args.callback_timeout <= 0:
        parser.error(f"--callback-timeout must be > 0; {args.callback_timeout} is invalid")
    if args.cache_mb < 0:
        parser.error(f"--cache-mb must be >= 0; {args.cache_mb} is invalid")
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_ca and not args.tls_cert):
        parser.error("TLS needs both --tls-cert and --tls-key (and --tls-ca only with them)")
    return args


def ensure_demo(data_root: str) -> None:
    """Write the demo recording under ``data_root`` when it holds no session."""
    found = glob.glob(os.path.join(data_root, "*.mefd")) + glob.glob(
        os.path.join(data_root, "*", "*.mefd"))
    if not found:
        path = os.path.join(data_root, settings.DEMO_NAME)
        logger.info("no session under %s: writing the demo recording %s (a few seconds)",
                    os.path.abspath(data_root), path)
        from software.mef3.demo import write_demo_recording
        write_demo_recording(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_root = args.data_root
    session = args.session
    if session is not None:
        session = os.path.abspath(session)
        if args.data_root == settings.DATA_ROOT:
            data_root = os.path.dirname(session)
    else:
        os.makedirs(data_root, exist_ok=True)
        ensure_demo(data_root)
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
                                 max_request_mb=args.max_request_mb, session=session,
                                 password=args.password, authenticator=authenticator,
                                 reader_nice=args.reader_nice,
                                 callback_timeout=args.callback_timeout)
    except Exception as exc:  # a bad session, password or port: say so and exit
        logger.error("cannot start: %s", exc)
        return 2
    with server:
        logger.info("ready on %s:%d; Ctrl-C stops", args.host, server.port)
        stop.wait()
        logger.info("shutting down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
