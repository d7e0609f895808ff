"""Discovery on loopback: an RPyC registry, two mefstream servers announcing themselves
as "MEF", and a client that finds both and reads from each.

On real hosts, run the registry on one machine (``python -m software registry --host
10.0.0.5``), each data host's server with ``python start.py --host 10.0.0.1 --registry
10.0.0.5`` (and TLS), and clients look the servers up by name.

    python examples/two_servers.py [--data-root DIR]
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:
    from _handoff_demo import reexec_as_module
    reexec_as_module("two_servers")

from examples._handoff_demo import ensure_demo, parser


def main(argv=None) -> int:
    args = parser(__doc__.split("\n\n")[0]).parse_args(argv)
    from software import MefStreamServer, decode_segment, get_connection
    from software.discovery import RegistryServer, announce, list_services, lookup

    ensure_demo(args.data_root)
    with RegistryServer("127.0.0.1", 0) as registry, \
            MefStreamServer(host="127.0.0.1", port=0, data_root=args.data_root,
                            workers=1) as a, \
            MefStreamServer(host="127.0.0.1", port=0, data_root=args.data_root,
                            workers=1) as b:
        where = f"127.0.0.1:{registry.port}"
        print(f"registry on {where}; servers on ports {a.port} and {b.port}")
        with announce("MEF", a.port, where, host="127.0.0.1") as announced_a, \
                announce("MEF", b.port, where, host="127.0.0.1") as announced_b:
            announced_a.wait_registered(5)
            announced_b.wait_registered(5)
            print("registered:", list_services(where))
            for host, port in lookup("MEF", where):
                conn = get_connection(port, host=host)
                try:
                    svc = conn.root.open_file(args.session)
                    info = dict(svc.get_info())
                    first = decode_segment(svc.get_stream_segment(256, 0))
                    print(f"{host}:{port} serves {info['path']}: {len(info['channels'])} "
                          f"channels, first second mean {float(first.mean()):.3f} uV")
                finally:
                    conn.close()
            announced_b.close()
            print("after one server stopped announcing:", lookup("MEF", where))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
