"""RPyC over TCP/TLS, fast: socket stream, frames, connections, segment values."""
