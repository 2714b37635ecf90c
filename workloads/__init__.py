"""ML platform ComponentResources on Kubernetes: feature store, training, serving."""
