//go:build unix

package proxy

import "syscall"

// processCPU is the CPU time (user+system, all threads) this process has
// used, in nanoseconds. Benchmarks report it per operation because on a
// shared machine wall-clock ns/op mostly measures the neighbours.
func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
