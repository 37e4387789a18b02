package clientip

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzResolve checks that Resolve never panics and never invents an address:
// the answer is the peer or an address written in X-Forwarded-For. Lines of
// X-Forwarded-For are separated by '\n' in the fuzz input.
func FuzzResolve(f *testing.F) {
	for _, c := range resolveCases {
		f.Add(c.remote, strings.Join(c.xff, "\n"))
	}
	r := testResolver(f)
	f.Fuzz(func(t *testing.T, remote, lines string) {
		var xff []string
		if lines != "" {
			xff = strings.Split(lines, "\n")
		}
		got, trusted := r.Resolve(remote, xff)
		peer, err := netip.ParseAddrPort(remote)
		if err != nil {
			if got.IsValid() || trusted {
				t.Fatalf("Resolve(%q) = %s, %v for an unparseable peer", remote, got, trusted)
			}
			return
		}
		p := peer.Addr().Unmap().WithZone("")
		if trusted != r.Trusted(p) {
			t.Fatalf("peerTrusted = %v, want %v", trusted, r.Trusted(p))
		}
		if got == p {
			return
		}
		if !trusted {
			t.Fatalf("Resolve(%q, %q) = %s from an untrusted peer %s", remote, xff, got, p)
		}
		for _, l := range xff {
			for _, e := range strings.Split(l, ",") {
				if a, err := netip.ParseAddr(strings.Trim(e, " \t")); err == nil && a.Unmap().WithZone("") == got {
					return
				}
			}
		}
		t.Fatalf("Resolve(%q, %q) = %s, neither the peer nor in X-Forwarded-For", remote, xff, got)
	})
}

// FuzzParseCIDRs checks that ParseCIDRs never panics and returns only
// masked, unmapped prefixes.
func FuzzParseCIDRs(f *testing.F) {
	for _, s := range []string{"127.0.0.1/32,::1/128", "10.1.2.3/8", "::ffff:10.0.0.0/104", "fe80::1%eth0", "10.0.0.1,,x", " ::1 "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParseCIDRs(s)
		if err != nil {
			return
		}
		for _, p := range ps {
			if p != p.Masked() || p.Addr().Is4In6() || p.Addr().Zone() != "" || !p.IsValid() {
				t.Fatalf("ParseCIDRs(%q) returned %s", s, p)
			}
		}
	})
}
