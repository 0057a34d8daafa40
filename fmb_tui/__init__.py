"""fmb-tui: the terminal explorer over an FMB workspace (Textual)."""
