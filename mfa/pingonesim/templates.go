package pingonesim

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Notification template names (TF-TPL, NOTIF in SOURCES-2026-12.md):
// strong_authentication is PingOne's normal MFA text, transaction the text
// of a transaction approval (dynamic linking, C1).
const (
	TemplateStrongAuthentication = "strong_authentication"
	TemplateTransaction          = "transaction"
	// DefaultVariant is the key of a template's default content in
	// Template; PingOne's default content has no variant name.
	DefaultVariant = ""
)

// Limits the simulator enforces on pi.template (README, "pi.template").
const (
	// maxVariant is PingOne's variant name limit (TF-TPL: up to 100 characters).
	maxVariant = 100
	// maxVariables and maxVariableValue are the simulator's own bounds
	// (PingOne's are not documented; GUESS). PingOne caps a whole message at
	// 660 characters (C1), so a value longer than that could never be shown.
	maxVariables     = 50
	maxVariableName  = 100
	maxVariableValue = 660
)

// Template is one notification template: its contents by variant name.
// DefaultVariant ("") is used when the request names no variant, or a
// variant the template does not have (INFERRED: PingOne's behaviour for an
// unknown variant is not documented). Variant names match
// case-insensitively, as PingOne's do (TF-TPL).
type Template map[string]TemplateContent

// TemplateContent is the text of one variant per delivery method, with
// ${name} placeholders: ${otp} is the one-time passcode (OTP devices only),
// ${user.username} the user's username, any other name a variable from the
// request object's pi.template.variables. A placeholder without a value is
// left in the text as it is (INFERRED), so a missing variable shows.
type TemplateContent struct {
	SMS          string
	Voice        string
	EmailSubject string
	EmailBody    string
	PushTitle    string
	PushBody     string
}

// defaultTemplates are the templates every simulated environment has, as
// every PingOne environment has strong_authentication.
func defaultTemplates() map[string]Template {
	return map[string]Template{
		TemplateStrongAuthentication: {DefaultVariant: {
			SMS:          "Your stepgate verification code is ${otp}.",
			Voice:        "Your verification code is ${otp}. Again, your code is ${otp}.",
			EmailSubject: "Your verification code",
			EmailBody:    "Hello ${user.username}, your verification code is ${otp}. It expires in 5 minutes.",
			PushTitle:    "Sign-in request",
			PushBody:     "Approve the sign-in of ${user.username}?",
		}},
	}
}

// pickTemplate returns the content of template name and variant. ok is false
// when the environment has no template of that name.
func (s *Server) pickTemplate(name, variant string) (TemplateContent, bool) {
	t, ok := s.tenant.Templates[name]
	if !ok {
		return TemplateContent{}, false
	}
	if variant != DefaultVariant {
		for v, c := range t {
			if strings.EqualFold(v, variant) {
				return c, true
			}
		}
	}
	c, ok := t[DefaultVariant]
	return c, ok
}

// TemplateRequest is pi.template from the request object.
type TemplateRequest struct {
	Name      string
	Variant   string
	Variables map[string]string
}

// parseTemplateClaim reads pi.template: an object with a string name, an
// optional string variant and an optional object of string variables. The
// returned string is the error's target.
func parseTemplateClaim(v any) (*TemplateRequest, string, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, "pi.template", errors.New("pi.template must be an object")
	}
	t := &TemplateRequest{Variables: map[string]string{}}
	name, ok := m["name"].(string)
	if !ok || name == "" {
		return nil, "pi.template.name", errors.New("pi.template.name must be a non-empty string")
	}
	t.Name = name
	if raw, present := m["variant"]; present {
		variant, ok := raw.(string)
		if !ok || utf8.RuneCountInString(variant) > maxVariant {
			return nil, "pi.template.variant", fmt.Errorf("pi.template.variant must be a string of at most %d characters", maxVariant)
		}
		t.Variant = variant
	}
	if raw, present := m["variables"]; present {
		vars, ok := raw.(map[string]any)
		if !ok {
			return nil, "pi.template.variables", errors.New("pi.template.variables must be an object")
		}
		if len(vars) > maxVariables {
			return nil, "pi.template.variables", fmt.Errorf("pi.template.variables has more than %d entries", maxVariables)
		}
		for k, val := range vars {
			str, ok := val.(string)
			if !ok || k == "" || utf8.RuneCountInString(k) > maxVariableName || utf8.RuneCountInString(str) > maxVariableValue {
				return nil, "pi.template.variables." + k, fmt.Errorf(
					"each variable must be a string of at most %d characters under a name of 1 to %d", maxVariableValue, maxVariableName)
			}
			t.Variables[k] = str
		}
	}
	return t, "", nil
}

// render fills ${name} placeholders in one pass: a value that itself
// contains ${…} is not expanded again, so a variable cannot pull in the
// OTP. Built-ins (otp, user.username) take precedence over variables.
func render(text string, builtin, vars map[string]string) string {
	var b strings.Builder
	for {
		i := strings.Index(text, "${")
		if i < 0 {
			b.WriteString(text)
			return b.String()
		}
		j := strings.IndexByte(text[i+2:], '}')
		if j < 0 {
			b.WriteString(text)
			return b.String()
		}
		name := text[i+2 : i+2+j]
		b.WriteString(text[:i])
		if v, ok := builtin[name]; ok {
			b.WriteString(v)
		} else if v, ok := vars[name]; ok {
			b.WriteString(v)
		} else {
			b.WriteString(text[i : i+3+j])
		}
		text = text[i+3+j:]
	}
}

// messageText is what the user reads for a message to device d of flow f:
// SMS and voice content, e-mail "subject\n\nbody", push "title\nbody".
func (s *Server) messageText(f *flow, d *Device, otp string) string {
	name, variant, vars := TemplateStrongAuthentication, DefaultVariant, map[string]string(nil)
	if f.template != nil {
		name, variant, vars = f.template.Name, f.template.Variant, f.template.Variables
	}
	c, _ := s.pickTemplate(name, variant)
	if c == (TemplateContent{}) {
		// A variant with no text at all would deliver an empty message;
		// the simulator then uses the normal MFA text (INFERRED).
		c, _ = s.pickTemplate(TemplateStrongAuthentication, DefaultVariant)
	}
	builtin := map[string]string{"user.username": f.user.Username}
	if otp != "" {
		builtin["otp"] = otp
	}
	r := func(t string) string { return render(t, builtin, vars) }
	switch d.Type {
	case "SMS", "WHATSAPP": // WhatsApp carries the SMS text here (INFERRED)
		return r(c.SMS)
	case "VOICE":
		return r(c.Voice)
	case "EMAIL":
		return r(c.EmailSubject) + "\n\n" + r(c.EmailBody)
	case "MOBILE":
		return r(c.PushTitle) + "\n" + r(c.PushBody)
	}
	return ""
}
