"""Live streams: a producer pushes samples into a bounded ring, clients pull them."""
