"""MLflow as tuneops writes and reads it: the vocabulary of tags and names, the store that searches
runs and model versions, and the sample request printed under a served Deployment."""
