"""FMB engine: headless stages for foundation-model anomaly discovery.

The engine never imports a UI toolkit; the terminal explorer (`fmb_tui`) and the
CLI (`fmb_engine.cli`) are thin front doors onto the same stage functions.
"""

__version__ = "0.1.0"
