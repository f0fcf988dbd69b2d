package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/logline/logline/host/ledger"
)

// problem is an error response, RFC 9457 (application/problem+json), with
// two extensions: code, a stable string clients branch on, and field, the
// input at fault when there is one.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
	Field  string `json:"field,omitempty"`
	// Span and Line locate the problem in an NDJSON batch (1-based).
	Span int `json:"span,omitempty"`
	Line int `json:"line,omitempty"`
}

func (p *problem) Error() string {
	if p.Field != "" {
		return fmt.Sprintf("%d %s: %s: %s", p.Status, p.Code, p.Field, p.Detail)
	}
	return fmt.Sprintf("%d %s: %s", p.Status, p.Code, p.Detail)
}

// Problem codes. Each names one way a request fails; the status follows
// from it.
const (
	codeMalformed    = "malformed"    // 400: not parseable as what the endpoint takes
	codeUnauthorized = "unauthorized" // 401
	codeForbidden    = "forbidden"    // 403
	codeNotFound     = "not_found"    // 404
	codeNotAllowed   = "method_not_allowed"
	codeConflict     = "conflict"  // 409
	codeTooLarge     = "too_large" // 413
	codeUnsupported  = "unsupported_media_type"
	codeInvalid      = "invalid" // 422: parsed, but breaks the span schema or a rule
	codeIdempotency  = "idempotency_key_reused"
	codeUnavailable  = "unavailable" // 503
	codeInternal     = "internal"    // 500
)

var codeStatus = map[string]int{
	codeMalformed: http.StatusBadRequest, codeUnauthorized: http.StatusUnauthorized,
	codeForbidden: http.StatusForbidden, codeNotFound: http.StatusNotFound,
	codeNotAllowed: http.StatusMethodNotAllowed, codeConflict: http.StatusConflict,
	codeTooLarge: http.StatusRequestEntityTooLarge, codeUnsupported: http.StatusUnsupportedMediaType,
	codeInvalid: http.StatusUnprocessableEntity, codeIdempotency: http.StatusUnprocessableEntity,
	codeUnavailable: http.StatusServiceUnavailable, codeInternal: http.StatusInternalServerError,
}

func fail(code, field, format string, a ...any) *problem {
	st := codeStatus[code]
	return &problem{Type: "about:blank", Title: http.StatusText(st), Status: st, Code: code, Field: field,
		Detail: fmt.Sprintf(format, a...)}
}

// fromLedger maps the ledger's typed outcomes to problems. Anything else is
// a 500 whose detail stays in the log, not in the response.
func fromLedger(err error) *problem {
	msg := err.Error()
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return fail(codeNotFound, "", "%s", msg)
	case errors.Is(err, ledger.ErrSeqConflict), errors.Is(err, ledger.ErrChain):
		return fail(codeConflict, "seq", "%s", msg)
	case errors.Is(err, ledger.ErrForbidden):
		return fail(codeForbidden, "", "%s", msg)
	case errors.Is(err, ledger.ErrInvalid):
		return fail(codeInvalid, "", "%s", msg)
	case errors.Is(err, ledger.ErrBadPrincipal):
		return fail(codeUnauthorized, "", "%s", msg)
	}
	return nil
}

// errorHandler renders every error a handler or echo returns as a problem.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	var p *problem
	var he *echo.HTTPError
	switch {
	case errors.As(err, &p):
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			p = fail(codeNotFound, "", "no route %s %s", c.Request().Method, c.Request().URL.Path)
		case http.StatusMethodNotAllowed:
			p = fail(codeNotAllowed, "", "%s is not allowed on %s", c.Request().Method, c.Request().URL.Path)
		case http.StatusRequestEntityTooLarge:
			p = fail(codeTooLarge, "body", "the body is larger than %d bytes", s.cfg.MaxBodyBytes)
		default:
			st := he.Code
			p = &problem{Type: "about:blank", Title: http.StatusText(st), Status: st, Code: "http_error",
				Detail: fmt.Sprint(he.Message)}
		}
	default:
		if lp := fromLedger(err); lp != nil {
			p = lp
		} else {
			s.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
			p = fail(codeInternal, "", "internal error")
		}
	}
	if p.Status == http.StatusUnauthorized {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="logline", error="invalid_token"`)
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(p.Status)
		return
	}
	if isSSRPath(c.Request().URL.Path) {
		s.ssrProblem(c, p) // htmx swaps HTML
		return
	}
	writeJSON(c, p.Status, "application/problem+json", p)
}

// writeJSON writes v without HTML escaping (span code and text stay
// readable) and with a trailing newline.
func writeJSON(c echo.Context, status int, contentType string, v any) error {
	b, err := marshal(v)
	if err != nil {
		return err
	}
	return c.Blob(status, contentType, b)
}

func marshal(v any) ([]byte, error) {
	var buf jsonBuffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.b, nil
}

type jsonBuffer struct{ b []byte }

func (j *jsonBuffer) Write(p []byte) (int, error) { j.b = append(j.b, p...); return len(p), nil }
