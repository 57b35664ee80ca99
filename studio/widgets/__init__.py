"""Reusable widgets shared by the studio's pages."""
