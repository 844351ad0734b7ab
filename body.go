package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"unicode/utf8"
)

// jsonMember is one name/value pair of a request's JSON object, in order.
type jsonMember struct {
	Name  string
	Value json.RawMessage
}

// readAllLimited reads the whole body, at most maxBodyBytes of it: larger is
// 413, a body that does not arrive (within the server's read timeout, say) 400.
func readAllLimited(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	tooBig := newError(CodeTooLarge, "The body is larger than %d bytes.", maxBodyBytes)
	if r.ContentLength > maxBodyBytes {
		return nil, tooBig
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, tooBig
		}
		return nil, newError(CodeBadRequest, "The body could not be read.")
	}
	return body, nil
}

// readBody reads the request body, at most maxBodyBytes, and checks it says
// it is JSON. An empty body is returned as nil, with no Content-Type needed.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := readAllLimited(w, r)
	if err != nil {
		return nil, err
	}
	if len(body) == 0 {
		return nil, nil
	}
	ct := r.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
		return nil, newError(CodeUnsupportedMedia, "The body must be JSON, sent with Content-Type: application/json.")
	}
	return body, nil
}

// decodeObject parses body, which must be exactly one JSON object, into its
// members. Malformed JSON, trailing data or invalid UTF-8 is 400; valid JSON
// that is not an object, or names a member twice, is 422.
func decodeObject(body []byte) ([]jsonMember, error) {
	if !utf8.Valid(body) {
		return nil, newError(CodeBadRequest, "The body is not valid UTF-8.")
	}
	if !json.Valid(body) {
		return nil, newError(CodeBadRequest, "The body is not valid JSON (or has data after the JSON value).")
	}
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, &Error{Code: CodeInvalid, Message: "The body must be a JSON object.",
			Fields: []FieldError{{Field: "body", Message: "must be a JSON object"}}}
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	if _, err := dec.Token(); err != nil { // {
		return nil, newError(CodeBadRequest, "The body is not valid JSON.")
	}
	var members []jsonMember
	seen := map[string]bool{} // a 64 KiB body has thousands of names: no quadratic search
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, newError(CodeBadRequest, "The body is not valid JSON.")
		}
		name, _ := tok.(string)
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, newError(CodeBadRequest, "The body is not valid JSON.")
		}
		if seen[name] {
			return nil, invalid(FieldError{Field: name, Message: "is given more than once"})
		}
		seen[name] = true
		members = append(members, jsonMember{Name: name, Value: raw})
	}
	return members, nil
}

// writeJSON writes an already encoded JSON body.
func writeJSON(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// jsonContentType is the Content-Type header's value, shared by every
// response: net/http copies the values it sends, and the slice's capacity is
// its length, so an Add elsewhere would append to a copy.
var jsonContentType = []string{"application/json"}[:1:1]

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func jsonBool(raw json.RawMessage) (bool, bool) {
	switch string(raw) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// readObject reads a body that must be one JSON object.
func readObject(w http.ResponseWriter, r *http.Request) ([]jsonMember, error) {
	body, err := readBody(w, r)
	if err != nil {
		return nil, err
	}
	if len(body) == 0 {
		return nil, newError(CodeBadRequest, "A JSON object body is required.")
	}
	return decodeObject(body)
}
