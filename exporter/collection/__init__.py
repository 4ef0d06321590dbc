"""The collection side: reading the run list (on scrape or in the background), the view it
leaves, the GPU details, and the Prometheus collector that serves them."""
