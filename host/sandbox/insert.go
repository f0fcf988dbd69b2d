package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/logline/logline/abi"
)

// InsertRequest is an insert_span request as the host functions (this
// package's and the Extism plugins') read it.
type InsertRequest struct {
	Spans []byte // what Capabilities.InsertSpan gets: one span or an array
	N     int    // how many spans: each counts against Limits.Spans
	Refs  bool   // answer with abi.SpanRefs (see RefsOf)
	Check bool   // append nothing: Capabilities.CheckSpans answers
}

// ParseInsertRequest reads an insert_span request: a span, an array of
// spans, or the envelope abi.InsertRequest. The error names what is wrong.
func ParseInsertRequest(body []byte) (InsertRequest, error) {
	if !json.Valid(body) {
		return InsertRequest{}, errors.New("the span is not valid JSON")
	}
	req := InsertRequest{Spans: body, N: 1}
	// A span has no "spans" field (an unknown field is invalid), so an
	// object with one is the envelope.
	if !IsJSONArray(body) && bytes.Contains(body, []byte(`"spans"`)) {
		var env abi.InsertRequest
		if err := json.Unmarshal(body, &env); err == nil && env.Spans != nil {
			switch env.Result {
			case "":
			case abi.InsertResultRefs:
				req.Refs = true
			default:
				return InsertRequest{}, fmt.Errorf("result must be %q or absent, not %q", abi.InsertResultRefs, env.Result)
			}
			if !IsJSONArray(env.Spans) {
				return InsertRequest{}, errors.New("spans must be an array")
			}
			if env.Check && req.Refs {
				return InsertRequest{}, errors.New("a check answers one verdict per span: result must be absent")
			}
			req.Spans, req.Check = env.Spans, env.Check
		}
	}
	if IsJSONArray(req.Spans) {
		var items []json.RawMessage
		if err := json.Unmarshal(req.Spans, &items); err != nil {
			return InsertRequest{}, err
		}
		if req.N = len(items); req.N == 0 {
			return InsertRequest{}, errors.New("an empty array")
		}
	}
	return req, nil
}

// RefsOf reduces what Capabilities.InsertSpan answered (a span or an array
// of them) to an array of abi.SpanRef.
func RefsOf(out []byte) ([]byte, error) {
	var spans []abi.SpanRef
	if IsJSONArray(out) {
		if err := json.Unmarshal(out, &spans); err != nil {
			return nil, err
		}
	} else {
		var one abi.SpanRef
		if err := json.Unmarshal(out, &one); err != nil {
			return nil, err
		}
		spans = []abi.SpanRef{one}
	}
	return json.Marshal(spans)
}
