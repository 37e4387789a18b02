// Package metrics defines stepgate's Prometheus metrics (SPEC §10). Labels
// never carry raw paths, users or client addresses.
package metrics
