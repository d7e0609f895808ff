"""MEF3 itself: session metadata and grid arithmetic, the only pymef reader, the writer."""
