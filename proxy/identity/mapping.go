package identity

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"
)

// The PingOne user mapping (docs/design.md §17). The upstream IdP names the
// user in its own terms (Dex's opaque sub, an e-mail address, a Windows
// account); PingOne's login_hint_token needs a PingOne username or user id.
// A Mapping says where that value is read and how it is shaped, and only
// ever feeds PingOne: the step-up cookie stays bound to the upstream user.

// Kind is what PingOne is told the mapped value is.
type Kind string

const (
	// KindUsername is a PingOne username.
	KindUsername Kind = "username"
	// KindID is a PingOne user id (a UUID).
	KindID Kind = "id"
)

// Transform changes a mapped value before it is sent to PingOne.
type Transform string

const (
	// Lower folds the value to lower case (PingOne usernames are compared
	// as the tenant stores them; IdPs often keep an e-mail's capitals).
	Lower Transform = "lower"
	// StripDomain removes the last '@' and everything after it
	// ("alice@example.com" → "alice"). A value without '@' is unchanged.
	StripDomain Transform = "strip-domain"
)

// ErrNotMapped means the request carries no usable PingOne user: the source
// is missing, ambiguous, or its value does not fit the configured kind.
var ErrNotMapped = errors.New("identity: no pingone user")

// MappingOptions configures a Mapping. At most one of Header and Claim is
// set; neither means "the upstream user itself".
type MappingOptions struct {
	// Header names the request header holding the value (header identity
	// only: the gateway believes it only from a trusted peer).
	Header string
	// Claim names the string claim of the verified identity JWT holding the
	// value (jwt identity only). Source must then be a JWT Source.
	Claim string
	// Source is the identity Source; required when Claim is set.
	Source Source
	// Kind says whether the value is a PingOne username or user id.
	Kind Kind
	// Transforms apply in order.
	Transforms []Transform
	// UpstreamSource, optional, says where the upstream user itself comes
	// from ("header X-Forwarded-User", "claim sub"), for Source when
	// neither Header nor Claim is set.
	UpstreamSource string
}

// Mapping finds the PingOne user for a request.
type Mapping struct {
	header     string
	claim      string
	jwt        *jwtSource
	kind       Kind
	transforms []Transform
	upstream   string
}

// NewMapping checks o and returns a Mapping.
func NewMapping(o MappingOptions) (*Mapping, error) {
	m := &Mapping{kind: o.Kind, transforms: append([]Transform(nil), o.Transforms...), upstream: o.UpstreamSource}
	switch o.Kind {
	case KindUsername, KindID:
	case "":
		m.kind = KindUsername
	default:
		return nil, fmt.Errorf("identity: mapping: kind %q: want username or id", o.Kind)
	}
	seen := map[Transform]bool{}
	for _, t := range o.Transforms {
		switch {
		case t != Lower && t != StripDomain:
			return nil, fmt.Errorf("identity: mapping: transform %q: want lower or strip-domain", t)
		case seen[t]:
			return nil, fmt.Errorf("identity: mapping: transform %q listed twice", t)
		case t == StripDomain && m.kind == KindID:
			return nil, errors.New("identity: mapping: strip-domain makes no sense for a user id")
		}
		seen[t] = true
	}
	switch {
	case o.Header != "" && o.Claim != "":
		return nil, errors.New("identity: mapping: set a header or a claim, not both")
	case o.Header != "":
		if !ValidHeaderName(o.Header) {
			return nil, fmt.Errorf("identity: mapping: %q is not a header name", o.Header)
		}
		m.header = textproto.CanonicalMIMEHeaderKey(o.Header)
	case o.Claim != "":
		js, ok := o.Source.(*jwtSource)
		if !ok {
			return nil, errors.New("identity: mapping: a claim needs jwt identity")
		}
		m.claim, m.jwt = o.Claim, js
	}
	return m, nil
}

// Header is the header the mapping reads ("" when none): the gateway must
// remove it from untrusted peers, in every spelling.
func (m *Mapping) Header() string { return m.header }

// Source says in words where the value comes from, for logs and
// -check-config: "header X-Forwarded-Email", "claim email", or "the
// upstream user".
func (m *Mapping) Source() string {
	switch {
	case m.header != "":
		return "header " + m.header
	case m.claim != "":
		return "claim " + m.claim
	case m.upstream != "":
		return "the upstream user (" + m.upstream + ")"
	}
	return "the upstream user"
}

// Kind is what PingOne is told the value is.
func (m *Mapping) Kind() Kind { return m.kind }

// Transforms are the transforms, in order.
func (m *Mapping) Transforms() []Transform { return append([]Transform(nil), m.transforms...) }

// PingOneUser returns the PingOne user for a request whose upstream user the
// gateway has already established (and so believed the peer). An error
// matches ErrNotMapped and says why without echoing the value.
func (m *Mapping) PingOneUser(r *http.Request, user string) (string, error) {
	v := user
	switch {
	case m.header != "":
		vs := r.Header[m.header]
		switch {
		case len(vs) == 0:
			return "", fmt.Errorf("%w: header %s is missing", ErrNotMapped, m.header)
		case len(vs) > 1:
			return "", fmt.Errorf("%w: header %s has more than one value", ErrNotMapped, m.header)
		}
		v = vs[0]
	case m.claim != "":
		claims, err := m.jwt.claims(r)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrNotMapped, err)
		}
		s, ok := claims[m.claim].(string)
		if !ok {
			return "", fmt.Errorf("%w: claim %q is missing or not a string", ErrNotMapped, m.claim)
		}
		v = s
	}
	v = m.apply(v)
	if !ValidUser(v) {
		return "", fmt.Errorf("%w: %s is not an acceptable user", ErrNotMapped, m.Source())
	}
	if m.kind == KindID && !IsUUID(v) {
		return "", fmt.Errorf("%w: %s is not a PingOne user id (a UUID)", ErrNotMapped, m.Source())
	}
	return v, nil
}

func (m *Mapping) apply(v string) string { return ApplyTransforms(v, m.transforms) }

// ApplyTransforms applies ts to v in order. A shared signal's e-mail or
// opaque subject reaches the upstream user through the same transforms.
func ApplyTransforms(v string, ts []Transform) string {
	for _, t := range ts {
		switch t {
		case Lower:
			v = strings.ToLower(v)
		case StripDomain:
			if i := strings.LastIndexByte(v, '@'); i >= 0 {
				v = v[:i]
			}
		}
	}
	return v
}

// IsUUID reports whether s is a UUID in its 8-4-4-4-12 hex form (a PingOne
// user id).
func IsUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}

// ValidHeaderName reports whether s is an HTTP token (RFC 9110 §5.1).
func ValidHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
