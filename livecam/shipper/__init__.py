"""The shipper: one process per node that publishes, spills and evicts."""
