// Package pingonesim is a PingOne simulator for tests and demo mode.
package pingonesim
