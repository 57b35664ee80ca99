"""The studio's pages, one module each."""
