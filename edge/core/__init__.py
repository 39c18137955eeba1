"""Pure core: stdlib and numpy only (a test keeps it so)."""
