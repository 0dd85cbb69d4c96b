"""The `promote` operator CLI."""
