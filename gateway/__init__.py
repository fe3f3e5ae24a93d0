"""The CoAP side: the gateway sensors post to (`server`, `resources`, `writer`, `transport`),
payload decoding (`payloads`), and the simulated sensors (`simulator`, `profiles`)."""
