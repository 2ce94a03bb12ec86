"""Who read what: log formats, dataset keys, recording uses, ingestion and the webhook."""
