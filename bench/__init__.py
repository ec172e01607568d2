"""`make bench`: the relay's cost measured against a direct client, in the same run."""
