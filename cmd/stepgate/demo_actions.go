package main

import (
	"encoding/json"
	"html/template"
	"net/http"
)

// demoRules guard the demo app: admin pages need a step-up; a payment and
// deleting a user each need their own approval (docs/design.md §14).
//
// The payment's message is the first sentence of the simulator's transaction
// template (pingonesim.DemoTransactionTemplate), so the page and the SMS say
// the same thing.
const demoRules = "/admin/ mfa max_age=15m\n" +
	`POST /payments/transfer approve title="Send a payment" show=Amount:form.amount,Currency:form.currency,Payee:form.payee ` +
	`template=transaction vars=sum:form.amount,currency:form.currency,recipient:form.payee ` +
	`message="Approve ${sum} ${currency} to ${recipient}?" ttl=5m` + "\n" +
	`POST /admin/users/delete approve title="Delete a user" show=User:form.user ttl=5m` + "\n" +
	`POST /api/payments approve api=decoupled title="Send a payment" show=Amount:json./amount,Currency:json./currency,Payee:json./payee ` +
	`template=transaction vars=sum:json./amount,currency:json./currency,recipient:json./payee ` +
	`message="Approve ${sum} ${currency} to ${recipient}?" ttl=5m` + "\n"

// demoAPIPayment is the body of the demo's one-line agent examples.
const demoAPIPayment = `{"amount":"250","currency":"EUR","payee":"ACME GmbH"}`

// demoActions serves the demo app's two approved actions and their forms,
// and hands everything else to app.
func demoActions(app http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /payments/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = paymentPage.Execute(w, nil)
	})
	mux.HandleFunc("POST /payments/transfer", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = donePage.Execute(w, map[string]string{
			"Title": "Payment sent",
			"What":  r.PostFormValue("amount") + " " + r.PostFormValue("currency") + " to " + r.PostFormValue("payee"),
			"User":  r.Header.Get("X-Forwarded-User"), "Approval": r.Header.Get("X-Stepgate-Approval"),
		})
	})
	mux.HandleFunc("POST /admin/users/delete", func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = donePage.Execute(w, map[string]string{
			"Title": "User deleted", "What": "user " + r.PostFormValue("user"),
			"User": r.Header.Get("X-Forwarded-User"), "Approval": r.Header.Get("X-Stepgate-Approval"),
		})
	})
	// The API an agent calls (api=decoupled): approved on the phone, no
	// browser involved.
	mux.HandleFunc("POST /api/payments", func(w http.ResponseWriter, r *http.Request) {
		var p struct{ Amount, Currency, Payee string }
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&p); err != nil {
			http.Error(w, `{"error":"bad json"}`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"status": "paid", "amount": p.Amount, "currency": p.Currency, "payee": p.Payee,
			"by": r.Header.Get("X-Forwarded-User"), "approval": r.Header.Get("X-Stepgate-Approval"),
		})
	})
	mux.Handle("/", app)
	return mux
}

const demoStyle = `font-family:system-ui;max-width:40rem;margin:2rem auto;padding:0 1rem`

var paymentPage = template.Must(template.New("pay").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Payments</title></head>
<body style="` + demoStyle + `"><h1>Send a payment</h1>
<p>Sending money needs its own approval: stepgate holds this form, shows you what it will send, and
PingOne's message names the amount and the payee.</p>
<form method="post" action="/payments/transfer">
<p><label>Amount <input name="amount" value="500" inputmode="decimal" required></label></p>
<p><label>Currency <select name="currency"><option>EUR</option><option>USD</option><option>CHF</option></select></label></p>
<p><label>Payee <input name="payee" value="ACME GmbH" required></label></p>
<button type="submit">Send payment</button></form>
<h2>Delete a user</h2>
<form method="post" action="/admin/users/delete"><input type="hidden" name="user" value="42">
<button type="submit">Delete user 42</button></form>
<p><a href="/">Home</a> · <a href="/admin/">Admin (step-up)</a></p></body></html>`))

var donePage = template.Must(template.New("done").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{{.Title}}</title></head>
<body style="` + demoStyle + `"><h1>{{.Title}}</h1><p id="done">{{.What}}, as {{.User}}.</p>
<p>Approval digest (<code>X-Stepgate-Approval</code>): <code style="overflow-wrap:anywhere">{{.Approval}}</code></p>
<p>Reloading this page does not send it again.</p>
<p><a href="/payments/">Payments</a> · <a href="/">Home</a></p></body></html>`))
