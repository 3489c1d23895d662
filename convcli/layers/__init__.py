"""Layer types. `registry` holds the entries; each family module registers its own."""
