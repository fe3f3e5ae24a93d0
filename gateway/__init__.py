"""The CoAP side: the gateway sensors post to (`server`, `resources`, `writer` with its
`writer_process`, `transport`), payload decoding (`payloads`), and the simulated sensors
(`simulator`, `profiles`)."""
