package proxy

import "testing"

func TestBufferPoolReusesWithoutAllocating(t *testing.T) {
	var p bufferPool
	buf := p.Get()
	if len(buf) != copyBufferSize {
		t.Fatalf("Get() returned %d bytes, want %d", len(buf), copyBufferSize)
	}
	p.Put(buf[:10])          // ReverseProxy may hand back a resliced buffer
	p.Put(make([]byte, 100)) // not ours: dropped, never handed out
	again := p.Get()
	if len(again) != copyBufferSize {
		t.Fatalf("Get() after Put returned %d bytes, want %d", len(again), copyBufferSize)
	}
	if raceEnabled {
		return // the race detector's sync.Pool drops items at random
	}
	if &again[0] != &buf[0] {
		t.Error("Get() after Put returned a new buffer, not the one put back")
	}
	// A Put boxed its slice in an interface (an allocation per proxied
	// request) before the holders were pooled too.
	if n := testing.AllocsPerRun(100, func() { p.Put(p.Get()) }); n != 0 {
		t.Errorf("Get and Put allocate %v times per request, want 0", n)
	}
}
