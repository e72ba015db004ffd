"""bitwise_ar."""
