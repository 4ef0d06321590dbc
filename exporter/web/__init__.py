"""The web side: the HTTP server, content negotiation and the exporter-toolkit web-config."""
