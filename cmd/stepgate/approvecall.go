package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/stepgate/stepgate/proxy/decoupled"
)

// approveCallUsage is `stepgate approve-call -h`.
const approveCallUsage = `stepgate approve-call: send one request through stepgate and wait for its
approval on the phone (approve rules with api=decoupled, docs/agents.md).

Usage:
  stepgate approve-call [flags] METHOD URL

It sends the request; when stepgate holds it (202), it says what the phone
was asked, waits for the decision (Prefer: wait, polling after Retry-After),
asks for the code on the terminal when the user has no push device, and
prints the upstream's answer: the body on stdout, the status on stderr. It
exits 0 when the upstream answered 2xx; on Ctrl-C it cancels the approval.

Flags:
`

// A subcommand rather than a script: the binary is already on the machine
// that talks to stepgate, it parses the JSON and Retry-After properly, and
// it runs the same on Windows; a curl + jq script needs both, and shells
// differ in how they read a code without echoing it.

// runApproveCall is `stepgate approve-call`. stdin is where a code is read.
func runApproveCall(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stepgate approve-call", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("d", "", "request body; @FILE reads a file, @- stdin")
	var headers headerFlags
	fs.Var(&headers, "H", `a request header "Name: value" (repeatable), e.g. the identity your proxy needs`)
	wait := fs.Int("wait", 30, "seconds each request may wait for the decision (Prefer: wait)")
	timeout := fs.Duration("timeout", 10*time.Minute, "give up (and cancel) after this long")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), approveCallUsage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errors.New("approve-call: want METHOD URL")
	}
	method, target := strings.ToUpper(fs.Arg(0)), fs.Arg(1)
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("approve-call: %q is not an http(s) URL", target)
	}
	var body []byte
	switch {
	case *data == "@-":
		body, err = io.ReadAll(stdin)
		stdin = strings.NewReader("") // consumed: no code can be read from it
	case strings.HasPrefix(*data, "@"):
		body, err = os.ReadFile((*data)[1:])
	default:
		body = []byte(*data)
	}
	if err != nil {
		return fmt.Errorf("approve-call: body: %w", err)
	}
	if headers.h == nil {
		headers.h = http.Header{}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	c := &approveCaller{
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		header: headers.h, wait: *wait, in: bufio.NewReader(stdin), stdout: stdout, stderr: stderr,
	}
	if len(body) > 0 && c.header.Get("Content-Type") == "" {
		c.header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(ctx, method, target, body)
	if err != nil {
		return err
	}
	if resp.status != http.StatusAccepted || !strings.HasPrefix(resp.header.Get("Location"), "/.stepgate/approvals/") {
		return c.finish(resp)
	}
	poll, _ := u.Parse(resp.header.Get("Location"))
	c.describe(resp, u)
	final, err := c.await(ctx, poll.String(), resp)
	if err != nil {
		// Interrupted or timed out: withdraw the approval, so a late
		// "approve" on the phone forwards nothing.
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer dcancel()
		if r, derr := c.send(dctx, http.MethodDelete, poll.String(), nil); derr == nil && r.status == http.StatusNoContent {
			fmt.Fprintln(stderr, "approval cancelled")
		}
		return err
	}
	return c.finish(final)
}

type approveCaller struct {
	client *http.Client
	header http.Header
	wait   int
	in     *bufio.Reader
	stdout io.Writer
	stderr io.Writer
}

type callAnswer struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (a *callAnswer) str(k string) string { s, _ := a.json[k].(string); return s }

func (c *approveCaller) send(ctx context.Context, method, target string, body []byte) (*callAnswer, error) {
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("approve-call: %w", err)
	}
	req.Header = c.header.Clone()
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	// Only polls wait: the request itself is answered at once, so the
	// person is told what the phone shows (and any number to match)
	// before the wait.
	if c.wait > 0 && method == http.MethodGet {
		req.Header.Set("Prefer", "wait="+strconv.Itoa(c.wait))
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("approve-call: %s %s: %w", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("approve-call: reading the answer: %w", err)
	}
	a := &callAnswer{status: resp.StatusCode, header: resp.Header, body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &a.json)
	}
	return a, nil
}

// forwarded reports whether the answer is the upstream's (the held request
// was forwarded), not stepgate's.
func (a *callAnswer) forwarded() bool {
	return a.header.Get(decoupled.HeaderStatus) == "forwarded"
}

// describe says on stderr what the person is being asked.
func (c *approveCaller) describe(a *callAnswer, base *url.URL) {
	what := a.str("message")
	if what == "" {
		if req, ok := a.json["request"].(map[string]any); ok {
			what = fmt.Sprintf("%v %v", req["method"], req["path"])
		}
	}
	fmt.Fprintf(c.stderr, "held for approval: %s\n", what)
	switch m := a.str("method"); m {
	case "push":
		fmt.Fprintln(c.stderr, "a push was sent to the phone; approve it there")
		if n := a.str("number"); n != "" {
			fmt.Fprintf(c.stderr, "when the phone asks, pick the number %s\n", n)
		}
	default:
		fmt.Fprintf(c.stderr, "a code was sent (%s %s)\n", m, a.str("device"))
	}
	if exp := a.str("expires_at"); exp != "" {
		fmt.Fprintf(c.stderr, "the approval expires at %s\n", exp)
	}
	if u, err := base.Parse(a.str("approval_url")); err == nil && a.str("approval_url") != "" {
		fmt.Fprintf(c.stderr, "or approve in a browser: %s\n", u)
	}
}

// await polls (or sends the code) until the answer is not a 202.
func (c *approveCaller) await(ctx context.Context, poll string, first *callAnswer) (*callAnswer, error) {
	a := first
	// The upstream's own answer ends the wait whatever its status (a 202
	// or 429 of the app's is its answer, not "poll again").
	for !a.forwarded() && (a.status == http.StatusAccepted || a.status == http.StatusTooManyRequests ||
		(a.status == http.StatusBadRequest && a.str("error") == "otp_wrong")) {
		if a.status == http.StatusBadRequest {
			fmt.Fprintf(c.stderr, "that code is not right (%v attempts left)\n", a.json["attempts_remaining"])
		}
		var err error
		if m := first.str("method"); m != "push" && m != "" && a.status != http.StatusTooManyRequests {
			code, rerr := c.readCode(ctx)
			if rerr != nil {
				return nil, rerr
			}
			b, _ := json.Marshal(map[string]string{"otp": code})
			a, err = c.send(ctx, http.MethodPost, poll, b)
		} else {
			if err := sleepCtx(ctx, retryAfterOf(a.header)); err != nil {
				return nil, err
			}
			a, err = c.send(ctx, http.MethodGet, poll, nil)
		}
		if err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (c *approveCaller) readCode(ctx context.Context) (string, error) {
	fmt.Fprint(c.stderr, "code: ")
	line := make(chan string, 1)
	go func() {
		s, err := c.in.ReadString('\n')
		if err != nil && s == "" {
			close(line)
			return
		}
		line <- strings.TrimSpace(s)
	}()
	select {
	case s, ok := <-line:
		if !ok {
			return "", errors.New("approve-call: no code on stdin")
		}
		return s, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// finish prints the final answer: the upstream's (status on stderr, body on
// stdout) or stepgate's refusal.
func (c *approveCaller) finish(a *callAnswer) error {
	if a.forwarded() {
		fmt.Fprintf(c.stderr, "approved; the upstream answered %d %s\n", a.status, http.StatusText(a.status))
	} else if e := a.str("error"); e != "" {
		fmt.Fprintf(c.stderr, "stepgate: %d %s: %s\n", a.status, e, a.str("message"))
	} else {
		fmt.Fprintf(c.stderr, "%d %s\n", a.status, http.StatusText(a.status))
	}
	_, _ = c.stdout.Write(a.body)
	if a.status < 200 || a.status > 299 {
		return fmt.Errorf("approve-call: answered %d", a.status)
	}
	return nil
}

func retryAfterOf(h http.Header) time.Duration {
	if n, err := strconv.Atoi(h.Get("Retry-After")); err == nil && n > 0 && n < 3600 {
		return time.Duration(n) * time.Second
	}
	return 2 * time.Second
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// headerFlags collects -H "Name: value".
type headerFlags struct{ h http.Header }

func (f *headerFlags) String() string { return "" }

func (f *headerFlags) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return fmt.Errorf("want \"Name: value\", got %q", v)
	}
	if f.h == nil {
		f.h = http.Header{}
	}
	f.h.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	return nil
}
