// Package clientip decides which address a request comes from (docs/design.md §4): the
// TCP peer, or, when the peer is a trusted proxy, the right-most
// X-Forwarded-For entry that is not itself trusted.
//
// One Resolver serves logs, rate limits and PingOne's pi.remoteIp, so its
// answer must never be steerable by a client: X-Forwarded-For is read only
// behind a trusted peer, and any malformed header falls back to the peer
// rather than to a best guess.
//
// Choices where the spec is silent:
//   - An element with a port, brackets, or surrounding junk is malformed
//     (RFC 7239-style "ip:port" is not X-Forwarded-For). Optional whitespace
//     around commas is allowed.
//   - An empty X-Forwarded-For line counts as an empty element: malformed.
//   - A remoteAddr that does not parse gives the zero netip.Addr, untrusted.
package clientip

import (
	"fmt"
	"net/netip"
	"strings"
)

// Limits on X-Forwarded-For; beyond them the header is treated as malformed.
const (
	MaxXFFEntries = 64
	MaxXFFBytes   = 4 << 10
)

// ParseCIDRs reads a comma-separated list of prefixes ("127.0.0.1/32,::1/128").
// A bare address is a /32 or /128. Host bits are masked off, and an
// IPv4-mapped IPv6 prefix becomes the IPv4 prefix (addresses are unmapped
// before comparison). An empty string is an empty list. Errors name the entry.
func ParseCIDRs(s string) ([]netip.Prefix, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []netip.Prefix
	for i, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			return nil, fmt.Errorf("clientip: entry %d: empty", i+1)
		}
		var p netip.Prefix
		if strings.Contains(e, "/") {
			var err error
			if p, err = netip.ParsePrefix(e); err != nil {
				return nil, fmt.Errorf("clientip: entry %d %q: not a CIDR prefix", i+1, e)
			}
		} else {
			a, err := netip.ParseAddr(e)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("clientip: entry %d %q: not an IP address or CIDR prefix", i+1, e)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if a := p.Addr(); a.Is4In6() {
			if p.Bits() < 96 {
				return nil, fmt.Errorf("clientip: entry %d %q: IPv4-mapped prefix shorter than /96", i+1, e)
			}
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Resolver resolves client addresses. It is immutable and safe for
// concurrent use.
type Resolver struct {
	trusted []netip.Prefix
}

// New returns a Resolver that trusts the given proxy prefixes.
func New(trusted []netip.Prefix) *Resolver {
	return &Resolver{trusted: append([]netip.Prefix(nil), trusted...)}
}

// Trusted reports whether a (unmapped, zone stripped) is a trusted proxy.
func (r *Resolver) Trusted(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Resolve returns the client address: the TCP peer from remoteAddr
// ("ip:port"); if the peer is trusted, X-Forwarded-For (all header lines,
// joined by commas, in order) walked right to left, returning the first
// address that is not trusted, or the left-most if all are. A malformed
// element anywhere (not an IP, a port, empty), more than MaxXFFEntries
// entries or more than MaxXFFBytes bytes gives the peer. IPv4-mapped IPv6
// is unmapped and zones are stripped. It does not allocate.
func (r *Resolver) Resolve(remoteAddr string, xff []string) (client netip.Addr, peerTrusted bool) {
	peer, ok := parsePeer(remoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if !r.Trusted(peer) {
		return peer, false
	}
	if len(xff) == 0 {
		return peer, true
	}
	size := len(xff) - 1 // the commas that join the lines
	for _, l := range xff {
		size += len(l)
	}
	if size > MaxXFFBytes {
		return peer, true
	}

	// Walk every element right to left, validating all of them even after
	// the answer is known: a malformed element anywhere voids the header.
	var found, leftmost netip.Addr
	n := 0
	for li := len(xff) - 1; li >= 0; li-- {
		line := xff[li]
		end := len(line)
		for end >= 0 {
			start := strings.LastIndexByte(line[:end], ',') + 1
			n++
			if n > MaxXFFEntries {
				return peer, true
			}
			a, ok := parseElement(line[start:end])
			if !ok {
				return peer, true
			}
			if !found.IsValid() && !r.Trusted(a) {
				found = a
			}
			leftmost = a
			end = start - 1
		}
	}
	if found.IsValid() {
		return found, true
	}
	return leftmost, true
}

// ParsePeer reads a TCP peer address ("ip:port", as in
// http.Request.RemoteAddr), unmapped and without zone.
func ParsePeer(remoteAddr string) (netip.Addr, bool) { return parsePeer(remoteAddr) }

func parsePeer(remoteAddr string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap().WithZone(""), true
}

// parseElement reads one X-Forwarded-For element: an IPv4 or IPv6 address
// with optional surrounding spaces or tabs, nothing else.
func parseElement(e string) (netip.Addr, bool) {
	for len(e) > 0 && (e[0] == ' ' || e[0] == '\t') {
		e = e[1:]
	}
	for len(e) > 0 && (e[len(e)-1] == ' ' || e[len(e)-1] == '\t') {
		e = e[:len(e)-1]
	}
	if e == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(e)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}
