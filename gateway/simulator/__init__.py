"""Simulated bay sensors: weeks of history through `parking.ingest`, then live CoAP traffic."""
