"""The node's disk: segments and their names, the two tiers, state files, loss records."""
