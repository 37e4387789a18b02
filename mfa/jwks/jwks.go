// Package jwks is a JSON Web Key Set cache: it fetches a JWKS URL, keeps the
// keys, and refetches when asked for an unknown kid, at most once per
// MinRefreshInterval. It serves both PingOne ID tokens and upstream IdP
// tokens. It never accepts symmetric keys.
package jwks
