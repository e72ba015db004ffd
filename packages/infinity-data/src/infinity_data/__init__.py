"""infinity_data."""
