package rules

import (
	"slices"
	"strings"
	"testing"
)

const payRule = `POST /payments/transfer approve title="Send a payment" show=Amount:form.amount ` +
	`template=transaction vars=sum:form.amount,currency:form.currency,recipient:form.payee ` +
	`message="Approve ${sum} ${currency} to ${recipient}?" ttl=2m`

func TestApproveRuleTakesATitleAndAMessage(t *testing.T) {
	s, err := Parse("STEPGATE_RULES", payRule, defaults)
	if err != nil {
		t.Fatal(err)
	}
	r := s.Match("POST", "/payments/transfer")
	if got, want := r.Title, "Send a payment"; got != want {
		t.Errorf("title = %q, want %q", got, want)
	}
	if got, want := r.Message, "Approve ${sum} ${currency} to ${recipient}?"; got != want {
		t.Errorf("message = %q, want %q", got, want)
	}
	wantParts := []MessagePart{{Text: "Approve "}, {Var: "sum"}, {Text: " "}, {Var: "currency"}, {Text: " to "}, {Var: "recipient"}, {Text: "?"}}
	if got := r.MessageParts(); !slices.Equal(got, wantParts) {
		t.Errorf("message parts = %+v, want %+v", got, wantParts)
	}
	want := `POST /payments/transfer approve title="Send a payment" show=Amount:form.amount template=transaction ` +
		`vars=sum:form.amount,currency:form.currency,recipient:form.payee message="Approve ${sum} ${currency} to ${recipient}?" ttl=2m0s acr=MFA-Only`
	if got := r.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	again, err := Parse("x", r.String(), defaults)
	if err != nil {
		t.Fatalf("re-parse %q: %v", r.String(), err)
	}
	if got := again.Match("POST", "/payments/transfer"); got.Title != r.Title || got.Message != r.Message {
		t.Errorf("round trip = %+v, want %+v", got, r)
	}
}

func TestTextOptionsAreReadOneWay(t *testing.T) {
	tests := []struct{ name, text, title, message string }{
		{"a one-word title needs no quotes", "DELETE /users/ approve title=Delete", "Delete", ""},
		{"a quoted title keeps its spaces", `DELETE /users/ approve title="Delete a user"`, "Delete a user", ""},
		{"a quoted title may hold '=' and letters of any script", `DELETE /users/ approve title="Zahlung = 1 × senden, café"`, "Zahlung = 1 × senden, café", ""},
		{"a quoted value may end the rule", `DELETE /users/ approve ttl=1m title="Delete a user"`, "Delete a user", ""},
		{"a quoted value may be followed by a tab", "DELETE /users/ approve title=\"Delete it\"\tttl=1m", "Delete it", ""},
		{"a rule after ';' is read on its own", `DELETE /users/ approve title="Delete a user"; /x deny`, "Delete a user", ""},
		{"a message without placeholders is text", `POST /p approve template=t message="Approve this payment"`, "", "Approve this payment"},
		{"a '$' not before '{' is text", `POST /p approve template=t vars=n:form.n message="Pay US$ ${n}"`, "", "Pay US$ ${n}"},
		{"a '}' alone is text", `POST /p approve template=t message="a } b"`, "", "a } b"},
		{"HTML in a title is text (the page escapes it)", `POST /p approve title="<b>Pay</b> & go"`, "<b>Pay</b> & go", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse("x", tt.text, defaults)
			if err != nil {
				t.Fatal(err)
			}
			r := s.Rules()[len(s.Rules())-1]
			if r.Action != Approve {
				r = s.Rules()[0]
			}
			if r.Title != tt.title || r.Message != tt.message {
				t.Fatalf("title, message = %q, %q; want %q, %q", r.Title, r.Message, tt.title, tt.message)
			}
			again, err := Parse("x", r.String(), defaults)
			if err != nil {
				t.Fatalf("String() %q does not parse: %v", r.String(), err)
			}
			if got := again.Rules()[0].String(); got != r.String() {
				t.Errorf("round trip %q, want %q", got, r.String())
			}
		})
	}
}

func TestTextOptionErrorsNameTheToken(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"an unterminated quote is refused", `POST /p approve title="Send a payment`, "does not end"},
		{"a quote cut by ';' is refused", `POST /p approve title="Pay; now"`, "does not end"},
		{"a quote cut by '#' is refused", `POST /p approve title="Pay #1"`, "does not end"},
		{"a quote not right after '=' is refused", `POST /p approve title=Send" a payment"`, "may only open an option's value"},
		{"a quote before the key is refused", `POST /p approve "title=Send a payment"`, "may only open an option's value"},
		{"a quote after a second '=' is refused", `POST /p approve title=a="b"`, "may only open an option's value"},
		{"a quote without a key is refused", `POST /p approve ="b c"`, "may only open an option's value"},
		{"a quote in a path is refused", `POST /a"b" approve`, "may only open an option's value"},
		{"a quote in a source name is refused", `POST /p approve show=A:form."a b"`, "may only open an option's value"},
		{"text right after the closing quote is refused", `POST /p approve title="Send"x`, "white space must follow"},
		{"a second quoted value glued on is refused", `POST /p approve title="a""b"`, "white space must follow"},
		{"a quoted template name is refused", `POST /p approve template="transaction"`, "only letters"},
		{"a quoted ttl is refused", `POST /p approve ttl="1m"`, "not a duration"},
		{"a quoted show list is refused", `POST /p approve show="A:form.a"`, `label "\"A"`},
		{"an empty title is refused", `POST /p approve title=""`, "empty"},
		{"a title with a space at the end is refused", `POST /p approve title="Pay "`, "space at either end"},
		{"a title with a right-to-left override is refused", "POST /p approve title=\"Pay \u202e500\"", "invisible character ⟨U+202E⟩"},
		{"a title with a zero-width space is refused", "POST /p approve title=Pa\u200by", "invisible character ⟨U+200B⟩"},
		{"a title with a soft hyphen is refused", "POST /p approve title=Pay\u00adment", "invisible character ⟨U+00AD⟩"},
		{"a title with a tab inside quotes is refused", "POST /p approve title=\"Pay\tnow\"", "invisible character ⟨U+0009⟩"},
		{"a title with a no-break space is refused", "POST /p approve title=\"Pay\u00a0now\"", "use an ordinary space"},
		{"a title with a backslash is refused", `POST /p approve title="Pay\n"`, `'\' is not allowed`},
		{"a title with invalid UTF-8 is refused", "POST /p approve title=\"Pay\xff\"", "not UTF-8"},
		{"a title over 100 characters is refused", `POST /p approve title="` + strings.Repeat("é", 101) + `"`, "at most 100"},
		{"a title with a placeholder is refused", `POST /p approve template=t vars=a:form.a title="Pay ${a}"`, "values go in message="},
		{"a duplicate title is refused", `POST /p approve title=a title=b`, "duplicate title"},
		{"a message without a template is refused", `POST /p approve message="Pay now"`, "needs template=NAME"},
		{"a message naming a variable that is not in vars is refused", `POST /p approve template=t vars=sum:form.a message="Pay ${amount}"`, "${amount} is not one of the rule's vars (sum)"},
		{"a message that shows the code is refused", `POST /p approve template=t vars=sum:form.a message="Code ${otp}"`, "${otp} is not one of"},
		{"a message naming the username is refused", `POST /p approve template=t message="Hi ${user.username}"`, "the rule has no vars"},
		{"an empty placeholder is refused", `POST /p approve template=t vars=a:form.a message="Pay ${}"`, "${} is not one of"},
		{"an unclosed placeholder is refused", `POST /p approve template=t vars=a:form.a message="Pay ${a"`, `without "}"`},
		{"a message over 300 characters is refused", `POST /p approve template=t message="` + strings.Repeat("a", 301) + `"`, "at most 300"},
		{"title on an mfa rule is refused", `/p mfa title="Admin"`, "approve option"},
		{"message on an allow rule is refused", `/p allow message="x"`, "only allowed on mfa and approve"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("STEPGATE_RULES", tt.text, defaults)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "line 1") {
				t.Fatalf("Parse(%q) error = %v, want one naming line 1 and containing %q", tt.text, err, tt.want)
			}
		})
	}
}
