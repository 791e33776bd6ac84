"""Search spaces: per-engine knob definitions (name, domain, constraints, engine arguments)."""
