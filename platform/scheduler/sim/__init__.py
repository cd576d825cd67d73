"""Simulation: capacity planning (``fill``) and trace replay (``replay``) through the real core."""
