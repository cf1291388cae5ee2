"""Protocol: the service's data, the exact request shapes, signing, the outcome table and the HTTP client."""
