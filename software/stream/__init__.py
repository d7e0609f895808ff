"""The StreamService a client talks to: its source seam, the view, callbacks, answers."""
