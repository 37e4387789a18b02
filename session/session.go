// Package session seals stepgate's two browser cookies: the step-up (proof
// that the user passed MFA) and the pending flow. It never trusts a cookie it
// cannot open.
package session
