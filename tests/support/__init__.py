"""Test support shared by the suite: fault injection and its fixtures."""
