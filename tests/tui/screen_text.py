"""Plain text of what a Textual app shows (for assertions and debugging)."""


def screen_text(app) -> str:
    """The current screen as text, laid out afresh (a just-pushed screen may not have been painted yet)."""
    screen = app.screen
    screen._refresh_layout(app.size)
    strips = screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


def flat_text(app) -> str:
    """The screen's words on one line (messages wrap at different places for different path lengths)."""
    return " ".join(screen_text(app).split())
