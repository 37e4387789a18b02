package main

import (
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const testCA = `-----BEGIN CERTIFICATE-----
MIIBbzCCARWgAwIBAgIUTxH1k1h5V3r5lQ1d1k3m1Qy3bZ4wCgYIKoZIzj0EAwIw
`

var linuxPlatforms = []platform{{"linux", "amd64"}, {"linux", "arm64"}}

func testRelease() *release {
	return &release{Version: "1.2.3", Revision: strings.Repeat("a", 40), Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func testBinaries() map[platform][]byte {
	return map[platform][]byte{linuxPlatforms[0]: []byte("amd64 binary"), linuxPlatforms[1]: []byte("arm64 binary")}
}

func testIndex(t *testing.T, r *release, ca []byte) v1.ImageIndex {
	t.Helper()
	bins := testBinaries()
	idx, err := r.imageIndex(ca, linuxPlatforms, func(p platform) ([]byte, error) { return bins[p], nil })
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// realCA is the build machine's bundle: the checks parse it as X.509.
func realCA(t *testing.T) []byte {
	t.Helper()
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatalf("the image tests need Debian's ca-certificates: %v", err)
	}
	return ca
}

func TestTheImageChecksPassOnWhatBuildImageMakes(t *testing.T) {
	idx := testIndex(t, testRelease(), realCA(t))
	for p, res := range checkImageIndex(idx, linuxPlatforms, testBinaries()) {
		if res.err != nil {
			t.Errorf("%s: %v", p, res.err)
		}
	}
}

// Each image rule must fire when the image regresses.
func TestTheImageChecksFire(t *testing.T) {
	r := testRelease()
	ca := realCA(t)
	good := testIndex(t, r, ca)
	amd64 := func() v1.Image {
		im, _ := good.IndexManifest()
		img, err := good.Image(im.Manifests[0].Digest)
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	withConfig := func(edit func(*v1.Config)) v1.Image {
		img := amd64()
		cf, _ := img.ConfigFile()
		c := cf.Config
		edit(&c)
		out, err := mutate.Config(img, c)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	withFile := func(e tarEntry) v1.Image {
		l, err := layer([]tarEntry{e}, r)
		if err != nil {
			t.Fatal(err)
		}
		out, err := mutate.Append(amd64(), mutate.Addendum{Layer: l, MediaType: types.OCILayer})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	tests := []struct {
		name string
		img  v1.Image
		want string
	}{
		{"root is refused", withConfig(func(c *v1.Config) { c.User = "0" }), "user"},
		{"a shell entry point is refused", withConfig(func(c *v1.Config) { c.Entrypoint = []string{"/bin/sh", "-c", "/stepgate"} }), "entrypoint"},
		{"a default command is refused", withConfig(func(c *v1.Config) { c.Cmd = []string{"serve"} }), "entrypoint"},
		{"a missing admin port is refused", withConfig(func(c *v1.Config) { delete(c.ExposedPorts, "9090/tcp") }), "exposed ports"},
		{"a shell is refused", withFile(tarEntry{Name: "bin/sh", Mode: 0o755, Body: []byte("#!")}), "bin/sh"},
		{"busybox is refused even if not executable", withFile(tarEntry{Name: "usr/bin/busybox", Mode: 0o644}), "busybox"},
		{"another executable is refused", withFile(tarEntry{Name: "usr/local/bin/curl", Mode: 0o755}), "executable"},
		{"a setuid file is refused", withFile(tarEntry{Name: "etc/x", Mode: 0o4644}), "setuid"},
		{"an emptied CA bundle is refused", withFile(tarEntry{Name: caBundlePath, Mode: 0o644, Body: []byte(testCA)}), "CA certificates"},
		{"a binary that is not the archive's is refused", withFile(tarEntry{Name: "stepgate", Mode: 0o755, Body: []byte("other")}), "not the linux/amd64 archive's binary"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
				mutate.IndexAddendum{Add: tt.img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
			err := checkImageIndex(idx, linuxPlatforms[:1], testBinaries())[linuxPlatforms[0]].err
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	t.Run("a missing platform is refused", func(t *testing.T) {
		err := checkImageIndex(good, append(linuxPlatforms, platform{"linux", "riscv64"}), testBinaries())[linuxPlatforms[0]].err
		if err == nil || !strings.Contains(err.Error(), "want") {
			t.Errorf("got %v", err)
		}
	})
}

func TestTheImageIsTheSameBytesOnEveryBuild(t *testing.T) {
	ca := realCA(t)
	a, _ := testIndex(t, testRelease(), ca).Digest()
	b, _ := testIndex(t, testRelease(), ca).Digest()
	if a != b {
		t.Errorf("two builds of the same inputs: %s and %s", a, b)
	}
}
