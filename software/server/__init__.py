"""The server: validated options, the connection roots, MefStreamServer."""
