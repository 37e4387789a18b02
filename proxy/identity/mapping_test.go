package identity

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestJWTIdentityIsBelievedOnlyFromTrustedPeersUnlessAnyPeer(t *testing.T) {
	k := newKeys(t)
	tok := "Bearer " + sign(t, jwt.SigningMethodRS256, "rsa", k.rsa, goodClaims())
	tests := []struct {
		name    string
		anyPeer bool
		trusted bool
		want    string
		wantErr error
	}{
		{"a valid token from a trusted peer names the user", false, true, "alice", nil},
		{"a valid token from an untrusted peer is ignored by default", false, false, "", ErrNoIdentity},
		{"a valid token from an untrusted peer is believed with AnyPeer", true, false, "alice", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := NewJWT(JWTOptions{Issuer: testIss, Audience: testAud, Keyfunc: k.keyfunc,
				Now: func() time.Time { return testNow }, AnyPeer: tt.anyPeer})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", tok)
			got, err := src.User(r, tt.trusted)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("User() = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestMappingFindsThePingOneUser(t *testing.T) {
	k := newKeys(t)
	jwtSrc, err := NewJWT(JWTOptions{Issuer: testIss, Audience: testAud, Keyfunc: k.keyfunc, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	const opaque = "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs"
	const id = "3b9e2c1a-4d5f-4a6b-8c7d-a11ce0000001"
	token := func(c jwt.MapClaims) http.Header {
		return http.Header{"Authorization": {"Bearer " + sign(t, jwt.SigningMethodRS256, "rsa", k.rsa, c)}}
	}
	tests := []struct {
		name    string
		opts    MappingOptions
		header  http.Header
		user    string
		want    string
		wantErr bool
	}{
		{"without a source the upstream user is sent", MappingOptions{}, nil, "alice", "alice", false},
		{"a header is read as it is", MappingOptions{Header: "x-forwarded-email"},
			http.Header{"X-Forwarded-Email": {"Alice@Example.com"}}, opaque, "Alice@Example.com", false},
		{"lower then strip-domain turns an e-mail into a username", MappingOptions{Header: "X-Forwarded-Email", Transforms: []Transform{Lower, StripDomain}},
			http.Header{"X-Forwarded-Email": {"Alice@Example.com"}}, opaque, "alice", false},
		{"strip-domain cuts at the last @", MappingOptions{Header: "X-Forwarded-Email", Transforms: []Transform{StripDomain}},
			http.Header{"X-Forwarded-Email": {"a@b@example.com"}}, opaque, "a@b", false},
		{"strip-domain leaves a value without @ alone", MappingOptions{Header: "X-Forwarded-Preferred-Username", Transforms: []Transform{StripDomain}},
			http.Header{"X-Forwarded-Preferred-Username": {"alice"}}, opaque, "alice", false},
		{"a missing header is not mapped", MappingOptions{Header: "X-Forwarded-Email"}, http.Header{}, opaque, "", true},
		{"two values are not mapped", MappingOptions{Header: "X-Forwarded-Email"},
			http.Header{"X-Forwarded-Email": {"alice@example.com", "bob@example.com"}}, opaque, "", true},
		{"a value that strips to nothing is not mapped", MappingOptions{Header: "X-Forwarded-Email", Transforms: []Transform{StripDomain}},
			http.Header{"X-Forwarded-Email": {"@example.com"}}, opaque, "", true},
		{"a value with a control character is not mapped", MappingOptions{Header: "X-Forwarded-Email"},
			http.Header{"X-Forwarded-Email": {"alice\x01"}}, opaque, "", true},
		{"an id kind takes a UUID", MappingOptions{Kind: KindID}, nil, id, id, false},
		{"an id kind refuses a username", MappingOptions{Kind: KindID}, nil, "alice", "", true},
		{"an id kind refuses a UUID without dashes", MappingOptions{Kind: KindID}, nil, "3b9e2c1a4d5f4a6b8c7da11ce0000001", "", true},
		{"a claim of the verified token is read", MappingOptions{Claim: "email", Source: jwtSrc, Transforms: []Transform{StripDomain}},
			token(goodClaims()), opaque, "alice", false},
		{"a missing claim is not mapped", MappingOptions{Claim: "preferred_username", Source: jwtSrc},
			token(goodClaims()), opaque, "", true},
		{"a claim of a token that fails verification is not mapped", MappingOptions{Claim: "email", Source: jwtSrc},
			token(with(goodClaims(), "iss", "https://evil.example")), opaque, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := NewMapping(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/", nil)
			if tt.header != nil {
				r.Header = tt.header
			}
			got, err := m.PingOneUser(r, tt.user)
			if got != tt.want || (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrNotMapped)) {
				t.Errorf("PingOneUser() = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestMappingRefusesConfusingOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts MappingOptions
	}{
		{"an unknown kind", MappingOptions{Kind: "email"}},
		{"an unknown transform", MappingOptions{Transforms: []Transform{"upper"}}},
		{"a transform listed twice", MappingOptions{Transforms: []Transform{Lower, Lower}}},
		{"strip-domain on a user id", MappingOptions{Kind: KindID, Transforms: []Transform{StripDomain}}},
		{"a header and a claim", MappingOptions{Header: "X-Forwarded-Email", Claim: "email"}},
		{"a header name with a space", MappingOptions{Header: "X Forwarded Email"}},
		{"a claim without jwt identity", MappingOptions{Claim: "email", Source: NewHeader("X-Forwarded-User")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewMapping(tt.opts); err == nil {
				t.Error("NewMapping accepted it")
			}
		})
	}
}
