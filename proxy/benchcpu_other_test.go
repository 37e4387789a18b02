//go:build !unix

package proxy

// processCPU is unavailable here; benchmarks then report no cpu-ns/op.
func processCPU() int64 { return 0 }
