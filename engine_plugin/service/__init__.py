"""The ``vmdiag-engine`` service: TLS ingest for relays, the JSON API and the UI pages."""
