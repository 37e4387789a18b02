package clientip

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseCIDRs(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"the default list parses", "127.0.0.1/32,::1/128", []string{"127.0.0.1/32", "::1/128"}},
		{"bare addresses are single-host prefixes", "10.0.0.1, ::1", []string{"10.0.0.1/32", "::1/128"}},
		{"host bits are masked off", "10.1.2.3/8", []string{"10.0.0.0/8"}},
		{"an IPv4-mapped prefix becomes IPv4", "::ffff:10.0.0.0/104", []string{"10.0.0.0/8"}},
		{"an empty string is an empty list", " ", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := ParseCIDRs(tt.in)
			if err != nil {
				t.Fatalf("ParseCIDRs(%q): %v", tt.in, err)
			}
			var got []string
			for _, p := range ps {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("ParseCIDRs(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseCIDRsErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"a hostname names its entry", "127.0.0.1/32,localhost", `entry 2 "localhost"`},
		{"a bad prefix length names its entry", "10.0.0.0/33", `entry 1 "10.0.0.0/33"`},
		{"an empty entry is refused", "10.0.0.1,,10.0.0.2", `entry 2: empty`},
		{"a zone is refused", "fe80::1%eth0", `entry 1 "fe80::1%eth0"`},
		{"a mapped prefix wider than IPv4 is refused", "::ffff:0:0/95", `shorter than /96`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCIDRs(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseCIDRs(%q) error = %v, want it to contain %q", tt.in, err, tt.want)
			}
		})
	}
}

func testResolver(t testing.TB) *Resolver {
	t.Helper()
	ps, err := ParseCIDRs("127.0.0.1/32,::1/128,10.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	return New(ps)
}

var resolveCases = []struct {
	name, remote string
	xff          []string
	want         string
	wantTrusted  bool
}{
	{"an untrusted peer is the client and its XFF is ignored", "203.0.113.9:5555", []string{"198.51.100.1"}, "203.0.113.9", false},
	{"a trusted peer without XFF is the client", "127.0.0.1:5555", nil, "127.0.0.1", true},
	{"behind a trusted peer the right-most untrusted entry wins", "127.0.0.1:1", []string{"6.6.6.6, 198.51.100.1, 10.0.0.2"}, "198.51.100.1", true},
	{"a client-forged left entry cannot win", "127.0.0.1:1", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1", true},
	{"several header lines are joined in order", "127.0.0.1:1", []string{"6.6.6.6", "198.51.100.1", "10.0.0.2"}, "198.51.100.1", true},
	{"when every entry is trusted the left-most wins", "127.0.0.1:1", []string{"10.0.0.3, 10.0.0.2"}, "10.0.0.3", true},
	{"a trusted IPv6 peer is accepted", "[::1]:8080", []string{"2001:db8::1"}, "2001:db8::1", true},
	{"an IPv4-mapped peer is unmapped before the trust check", "[::ffff:127.0.0.1]:1", []string{"198.51.100.1"}, "198.51.100.1", true},
	{"an IPv4-mapped XFF entry is unmapped", "127.0.0.1:1", []string{"::ffff:198.51.100.1"}, "198.51.100.1", true},
	{"an IPv4-mapped trusted entry is skipped", "127.0.0.1:1", []string{"198.51.100.1, ::ffff:10.0.0.2"}, "198.51.100.1", true},
	{"a zone is stripped", "127.0.0.1:1", []string{"fe80::1%eth0"}, "fe80::1", true},
	{"a peer zone is stripped", "[fe80::1%eth0]:1", nil, "fe80::1", false},
	{"whitespace around elements is allowed", "127.0.0.1:1", []string{" 198.51.100.1 ,\t10.0.0.2 "}, "198.51.100.1", true},
	{"a hostname anywhere means the peer", "127.0.0.1:1", []string{"evil.example, 198.51.100.1"}, "127.0.0.1", true},
	{"a port means the peer", "127.0.0.1:1", []string{"198.51.100.1:443"}, "127.0.0.1", true},
	{"a bracketed IPv6 means the peer", "127.0.0.1:1", []string{"[2001:db8::1]"}, "127.0.0.1", true},
	{"an empty element means the peer", "127.0.0.1:1", []string{"198.51.100.1,,10.0.0.2"}, "127.0.0.1", true},
	{"a trailing comma means the peer", "127.0.0.1:1", []string{"198.51.100.1,"}, "127.0.0.1", true},
	{"an empty header line means the peer", "127.0.0.1:1", []string{"198.51.100.1", ""}, "127.0.0.1", true},
	{"the unknown token means the peer", "127.0.0.1:1", []string{"unknown"}, "127.0.0.1", true},
	{"a CRLF-injected element means the peer", "127.0.0.1:1", []string{"198.51.100.1\r\nX: y"}, "127.0.0.1", true},
	{"64 entries are accepted", "127.0.0.1:1", []string{strings.Repeat("10.0.0.1,", 63) + "198.51.100.1"}, "198.51.100.1", true},
	{"65 entries mean the peer", "127.0.0.1:1", []string{strings.Repeat("10.0.0.1,", 64) + "198.51.100.1"}, "127.0.0.1", true},
	{"over 4 KiB means the peer", "127.0.0.1:1", []string{strings.Repeat(" ", MaxXFFBytes) + "198.51.100.1"}, "127.0.0.1", true},
	{"an unparseable remote address is the zero address, untrusted", "@", []string{"198.51.100.1"}, "invalid IP", false},
	{"a remote address without a port is unparseable", "127.0.0.1", []string{"198.51.100.1"}, "invalid IP", false},
}

func TestResolve(t *testing.T) {
	r := testResolver(t)
	for _, tt := range resolveCases {
		t.Run(tt.name, func(t *testing.T) {
			got, trusted := r.Resolve(tt.remote, tt.xff)
			if got.String() != tt.want || trusted != tt.wantTrusted {
				t.Errorf("Resolve(%q, %q) = %s, %v; want %s, %v", tt.remote, tt.xff, got, trusted, tt.want, tt.wantTrusted)
			}
		})
	}
}

func TestTrusted(t *testing.T) {
	r := testResolver(t)
	tests := []struct {
		name string
		addr netip.Addr
		want bool
	}{
		{"an address in a prefix is trusted", netip.MustParseAddr("10.9.8.7"), true},
		{"an address outside is not", netip.MustParseAddr("11.0.0.1"), false},
		{"a mapped trusted address is trusted", netip.MustParseAddr("::ffff:10.9.8.7"), true},
		{"a zoned loopback is trusted", netip.MustParseAddr("::1%lo"), true},
		{"the zero address is not", netip.Addr{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Trusted(tt.addr); got != tt.want {
				t.Errorf("Trusted(%s) = %v, want %v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestNewCopiesPrefixes(t *testing.T) {
	ps := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	r := New(ps)
	ps[0] = netip.MustParsePrefix("0.0.0.0/0")
	if r.Trusted(netip.MustParseAddr("203.0.113.1")) {
		t.Error("changing the caller's slice changed the resolver")
	}
}

func TestResolveDoesNotAllocate(t *testing.T) {
	r := testResolver(t)
	xff := []string{"6.6.6.6, 198.51.100.1", "10.0.0.2"}
	if got := testing.AllocsPerRun(100, func() { r.Resolve("127.0.0.1:5555", xff) }); got != 0 {
		t.Errorf("allocations = %v, want 0", got)
	}
}

func BenchmarkResolve(b *testing.B) {
	r := testResolver(b)
	xff := []string{"6.6.6.6, 198.51.100.1", "10.0.0.2"}
	b.ReportAllocs()
	for b.Loop() {
		r.Resolve("127.0.0.1:5555", xff)
	}
}
