"""Client helpers: get_connection, the client-side stream, iterators, shared memory."""
