package main

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
)

// tools/call, answered without the SDK's JSON encoding; every other message
// of /mcp goes to the SDK (mcp.go).
//
// Why: through the SDK, a page of 100 tasks costs about twelve times the CPU
// of the REST list (BenchmarkMCPListTasks, docs/mcp.md), against a budget of
// 1.5×. The SDK decodes each POST several times, each time with a decoder
// that allocates 32 KiB, and encodes a tool's result three times over, each
// layer's json.Marshal compacting again what the layer below produced: about
// a millisecond for the 40 KB of a page. So, for the protocol versions in
// which a tools/call is one JSON-RPC request answered by one JSON-RPC
// response (2025-03-26 to 2025-11-25: the TypeScript and Python SDKs, the MCP
// Inspector), the service decodes the call, runs the same tool function the
// SDK runs, and writes the answer once: the structured content and the text
// are already JSON (a page's straight from the rows, as REST's). Anything
// else or unusual (another method, a batch, an unknown tool, another protocol
// version, a header of a later version, params that do not decode exactly)
// goes to the SDK, which answers it as it always does.
// TestMCPFastPathMatchesSDK keeps the two answers equal.

// fastPathVersions are the Mcp-Protocol-Version values the fast path serves;
// "" is 2025-03-26, as the SDK takes it.
var fastPathVersions = map[string]bool{"": true, "2025-03-26": true, "2025-06-18": true, "2025-11-25": true}

// fastToolCalls runs the tools the SDK would, by name.
type fastToolCalls struct {
	m     *mcpTools
	tools map[string]toolFunc
}

// serve answers r when it is a tools/call it can serve. Otherwise handled is
// false and r, its body put back, is for the SDK.
func (f *fastToolCalls) serve(w http.ResponseWriter, r *http.Request) (handled bool, err error) {
	if f == nil {
		return false, nil
	}
	h := r.Header
	if !fastPathVersions[h.Get("Mcp-Protocol-Version")] || h.Get("Mcp-Method") != "" || h.Get("Mcp-Name") != "" ||
		len(h.Values("Last-Event-ID")) > 0 || !isJSON(h.Get("Content-Type")) || !acceptsJSONAndStream(h.Values("Accept")) {
		return false, nil
	}
	body, err := readAllLimited(w, r)
	if err != nil {
		return true, err
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	id, params, ok := parseToolCall(body)
	if !ok {
		return false, nil
	}
	fn, ok := f.tools[params.Name]
	if !ok {
		return false, nil
	}
	out, e := f.m.run(r.Context(), params.Name, fn, params.Arguments)
	defer out.release()
	buf := getBuffer()
	defer putBuffer(buf)
	*buf = appendToolResponse(*buf, id, out, e)
	w.Header().Set("Cache-Control", "no-cache, no-transform") // as the SDK answers
	writeJSON(w, r, http.StatusOK, *buf)
	return true, nil
}

func isJSON(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

// acceptsJSONAndStream: Accept names application/json and text/event-stream,
// as the transport requires. Other spellings the SDK accepts (*/*) go to it.
func acceptsJSONAndStream(values []string) bool {
	var jsonOK, streamOK bool
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			switch strings.ToLower(strings.TrimSpace(mt)) {
			case "application/json":
				jsonOK = true
			case "text/event-stream":
				streamOK = true
			}
		}
	}
	return jsonOK && streamOK
}

// parseToolCall reads a JSON-RPC tools/call request. ok is false for
// anything else, or anything the SDK might read otherwise: member names are
// matched exactly, as the SDK's decoder does (encoding/json's struct fields
// would match "Method" too), and unknown members are left to the SDK.
func parseToolCall(body []byte) (id json.RawMessage, params *mcp.CallToolParamsRaw, ok bool) {
	var msg map[string]json.RawMessage
	if json.Unmarshal(body, &msg) != nil || len(msg) != 4 {
		return nil, nil, false
	}
	version, _ := jsonString(msg["jsonrpc"])
	method, _ := jsonString(msg["method"])
	id = msg["id"]
	if version != "2.0" || method != "tools/call" || !plainID(id) {
		return nil, nil, false
	}
	var p map[string]json.RawMessage
	if json.Unmarshal(msg["params"], &p) != nil {
		return nil, nil, false
	}
	params = &mcp.CallToolParamsRaw{}
	for name, value := range p {
		switch name {
		case "name":
			if params.Name, ok = jsonString(value); !ok {
				return nil, nil, false
			}
		case "arguments":
			params.Arguments = value
		case "_meta":
			// A progress token is fine (no tool reports progress); a later
			// version's per-request metadata is the SDK's to check.
			if json.Unmarshal(value, &params.Meta) != nil || params.Meta[mcp.MetaKeyProtocolVersion] != nil {
				return nil, nil, false
			}
		default:
			return nil, nil, false
		}
	}
	return id, params, params.Name != ""
}

// plainID: a request id the response can echo as sent: a string, or an
// integer of at most 15 digits (the SDK reads ids as float64).
func plainID(raw json.RawMessage) bool {
	if _, ok := jsonString(raw); ok {
		return true
	}
	s := strings.TrimPrefix(string(raw), "-")
	if s == "" || len(s) > 15 || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// appendToolResponse appends the JSON-RPC response to a tools/call, as the
// SDK encodes the CallToolResult that toolResult makes of the same answer:
// content (the text, already escaped), structuredContent (already JSON),
// isError, _meta.
func appendToolResponse(b []byte, id json.RawMessage, out toolOutput, e *Error) []byte {
	b = append(b, `{"jsonrpc":"2.0","id":`...)
	b = append(b, id...)
	b = append(b, `,"result":{`...)
	if out.replayed {
		b = append(b, `"_meta":{"replayed":true},`...)
	}
	b = append(b, `"content":[{"type":"text","text":"`...)
	if e != nil {
		b = appendEscaped(b, toolErrorText(e))
		return append(b, `"}],"isError":true}}`...)
	}
	b = append(b, out.text...)
	b = append(b, `"}],"structuredContent":`...)
	b = append(b, out.structured...)
	return append(b, "}}"...)
}
