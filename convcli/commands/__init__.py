"""One module per command; each stays thin over the one analysis."""
