"""Infrastructure ComponentResources: network, encryption keys, storage, GPU clusters, cluster base."""
