//go:build unix

package parsertest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// goEcho is the go parser's app, served in process by net/http: post.NAME
// is r.PostFormValue after r.ParseMultipartForm, get.NAME the first of
// r.URL.Query(), request.NAME r.FormValue; json.PTR decodes the body with
// json.NewDecoder(r.Body).Decode into a struct with a `json:"TOKEN"` field
// per token (Go matches field names case-insensitively), jsonmap.PTR into
// an any, walked.
type goEcho struct{}

// maxMemory is what apps commonly pass to ParseMultipartForm.
const maxMemory = 32 << 20

type wireValue struct {
	Kind string `json:"kind"`
	B64  string `json:"b64"`
}

func (goEcho) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	raw, err := base64.StdEncoding.DecodeString(r.Header.Get(fieldsHeader))
	var spec wireFields
	if err == nil {
		err = json.Unmarshal(raw, &spec)
	}
	if err != nil {
		http.Error(w, "goEcho: no "+fieldsHeader+" header: "+err.Error(), http.StatusInternalServerError)
		return
	}
	values := map[string]wireValue{}
	var errs []string

	var body []byte
	if len(spec.JSON) > 0 {
		// Read once and handed back, so that form parsing still sees it.
		body, err = io.ReadAll(r.Body)
		if err != nil {
			errs = append(errs, "read body: "+err.Error())
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	if len(spec.Form) > 0 {
		// An app that checks these errors answers 400; one that calls
		// FormValue alone acts on what was parsed before the error.
		// ParseForm first: for a body that is not multipart,
		// ParseMultipartForm returns ErrNotMultipart and drops
		// ParseForm's error (a semicolon, a bad %-escape).
		if err := r.ParseForm(); err != nil {
			errs = append(errs, "ParseForm: "+err.Error())
		}
		if err := r.ParseMultipartForm(maxMemory); err != nil && !errors.Is(err, http.ErrNotMultipart) {
			errs = append(errs, "ParseMultipartForm: "+err.Error())
		}
		for _, n := range spec.Form {
			if _, ok := r.PostForm[n]; ok {
				values["post."+n] = goString(r.PostFormValue(n))
			}
			if _, ok := r.Form[n]; ok {
				values["request."+n] = goString(r.FormValue(n))
			}
		}
	}
	if len(spec.Query) > 0 {
		q := r.URL.Query()
		for _, n := range spec.Query {
			if vs := q[n]; len(vs) > 0 {
				values["get."+n] = goString(vs[0])
			}
		}
	}
	if len(spec.JSON) > 0 {
		var doc any
		docErr := json.NewDecoder(bytes.NewReader(body)).Decode(&doc)
		if docErr != nil {
			errs = append(errs, "json Decode into any: "+docErr.Error())
		}
		for _, ptr := range spec.JSON {
			v, ok, err := decodeStruct(body, ptr)
			if err != nil {
				errs = append(errs, fmt.Sprintf("json Decode into a struct for %q: %v", ptr, err))
			}
			if ok {
				values["json."+ptr] = goValue(v)
			}
			if docErr != nil {
				continue
			}
			if v, ok := walk(doc, ptr); ok {
				values["jsonmap."+ptr] = goValue(v)
			}
		}
	}
	if v := r.Header.Values("X-HTTP-Method-Override"); len(v) > 0 {
		values["override.header"] = goString(v[0])
	}
	out := struct {
		Method string               `json:"method"`
		Values map[string]wireValue `json:"values"`
		Error  string               `json:"error,omitempty"`
	}{r.Method, values, strings.Join(errs, "; ")}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

func goString(s string) wireValue {
	return wireValue{Kind: "string", B64: base64.StdEncoding.EncodeToString([]byte(s))}
}

// goValue is a value decoded into an any, as Go prints it: float64 with
// fmt's %v ("5", "1e+21"), arrays and objects as json.Marshal writes them
// (object keys sorted).
func goValue(v any) wireValue {
	var kind, text string
	switch v := v.(type) {
	case string:
		return goString(v)
	case float64:
		kind, text = "number", fmt.Sprint(v)
	case bool:
		kind, text = "bool", strconv.FormatBool(v)
	case nil:
		kind, text = "null", "null"
	case []any:
		b, _ := json.Marshal(v)
		kind, text = "array", string(b)
	case map[string]any:
		b, _ := json.Marshal(v)
		kind, text = "object", string(b)
	default:
		kind, text = fmt.Sprintf("%T", v), fmt.Sprint(v)
	}
	return wireValue{Kind: kind, B64: base64.StdEncoding.EncodeToString([]byte(text))}
}

var arrayIndex = regexp.MustCompile(`^(0|[1-9][0-9]*)$`)

// tokens splits an RFC 6901 pointer; ok is false for one that does not
// start with "/" (and is not "").
func tokens(ptr string) ([]string, bool) {
	if ptr == "" {
		return nil, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false
	}
	toks := strings.Split(ptr[1:], "/")
	for i, t := range toks {
		toks[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return toks, true
}

// walk follows pointer tokens through a decoded any, as Go code indexes
// it: m["payee"].(map[string]any)["name"], a[0].
func walk(doc any, ptr string) (any, bool) {
	toks, ok := tokens(ptr)
	if !ok {
		return nil, false
	}
	return walkTokens(doc, toks)
}

func walkTokens(cur any, toks []string) (any, bool) {
	for _, t := range toks {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[t]
			if !ok {
				return nil, false
			}
			cur = v
		case []any:
			if !arrayIndex.MatchString(t) {
				return nil, false
			}
			i, err := strconv.Atoi(t)
			if err != nil || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}

var rawMessage = reflect.TypeFor[json.RawMessage]()

// decodeStruct decodes body into a struct built for ptr: one field per
// token, tagged `json:"TOKEN"`, nested, down to the first token that is an
// array index or cannot be a tag name; the value there is a
// json.RawMessage, decoded into an any and walked for the tokens that are
// left. Decode matches tags case-insensitively (and with Unicode folding),
// and a repeated key (in any case) overwrites the field, or merges into it
// when it is an object.
func decodeStruct(body []byte, ptr string) (any, bool, error) {
	toks, ok := tokens(ptr)
	if !ok {
		return nil, false, nil
	}
	n := 0
	for n < len(toks) && !arrayIndex.MatchString(toks[n]) && validTag(toks[n]) {
		n++
	}
	typ := rawMessage
	for i := n - 1; i >= 0; i-- {
		typ = reflect.StructOf([]reflect.StructField{{
			Name: "F",
			Type: typ,
			Tag:  reflect.StructTag(`json:"` + toks[i] + `"`),
		}})
	}
	v := reflect.New(typ)
	err := json.NewDecoder(bytes.NewReader(body)).Decode(v.Interface())
	e := v.Elem()
	for range n {
		e = e.Field(0)
	}
	msg := e.Interface().(json.RawMessage)
	if len(msg) == 0 {
		return nil, false, err
	}
	var rest any
	if uerr := json.Unmarshal(msg, &rest); uerr != nil {
		return nil, false, errors.Join(err, uerr)
	}
	out, ok := walkTokens(rest, toks[n:])
	return out, ok, err
}

// validTag is encoding/json's test for a tag name it will use (else it
// falls back to the field's Go name).
func validTag(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		switch {
		case strings.ContainsRune("!#$%&()*+-./:;<=>?@[]^_{|}~ ", c):
		case !unicode.IsLetter(c) && !unicode.IsDigit(c):
			return false
		}
	}
	return true
}
