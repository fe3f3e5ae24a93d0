"""The CoAP side of the parking system: the gateway sensors talk to (`gateway.server`) and the
decoding of what they send (`gateway.payloads`). Everything it stores goes through
`parking.ingest`."""
