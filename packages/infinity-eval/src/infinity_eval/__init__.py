"""infinity_eval."""
