"""The JSON API under /api: one blueprint per resource, each with its schemas beside it."""
