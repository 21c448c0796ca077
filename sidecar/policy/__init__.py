"""Sans-IO policy objects: balancers, backoff, routing. No sockets, no sleeping."""
