package api

import (
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// Parameters are checked once, for every route, before its handler runs:
// whatever a handler passes on to the ledger (and so to SQL) is clean text
// within the bound its route table entry declares. Postgres refuses NUL and
// invalid UTF-8 in text with an encoding error, which would otherwise be a
// 500 instead of a 400 naming the parameter.

// integerParamLen bounds an integer parameter's text: the longest int64.
const integerParamLen = 20

// paramSpec is what the check needs to know of one declared parameter.
type paramSpec struct {
	name   string
	maxLen int // in characters, as OpenAPI's maxLength counts
}

// paramBound is the length bound of p: its schema's maxLength, the longest
// value of its enum, or integerParamLen for an integer. Any other parameter
// must declare a maxLength, so that a new one cannot go unbounded.
func paramBound(p param) (int, error) {
	if n, ok := p.schema["maxLength"].(int); ok && n > 0 {
		return n, nil
	}
	if enum, ok := p.schema["enum"].([]string); ok && len(enum) > 0 {
		n := 0
		for _, v := range enum {
			n = max(n, utf8.RuneCountInString(v))
		}
		return n, nil
	}
	if p.schema["type"] == "integer" {
		return integerParamLen, nil
	}
	return 0, fmt.Errorf("api: %s parameter %q has no maxLength", p.in, p.name)
}

// paramChecker checks the parameters of one route.
type paramChecker struct {
	query, path, header map[string]paramSpec
}

func newParamChecker(o op) (*paramChecker, error) {
	pc := &paramChecker{query: map[string]paramSpec{}, path: map[string]paramSpec{}, header: map[string]paramSpec{}}
	for _, p := range o.params {
		n, err := paramBound(p)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", o.method, o.path, err)
		}
		spec := paramSpec{name: p.name, maxLen: n}
		switch p.in {
		case "query":
			pc.query[p.name] = spec
		case "path":
			pc.path[p.name] = spec
		case "header":
			pc.header[p.name] = spec
		}
	}
	for _, seg := range strings.Split(o.path, "/") {
		if name, ok := strings.CutPrefix(seg, ":"); ok {
			if _, declared := pc.path[name]; !declared {
				return nil, fmt.Errorf("api: %s %s: path parameter %q is not declared", o.method, o.path, name)
			}
		}
	}
	return pc, nil
}

func (pc *paramChecker) middleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if p := pc.checkQuery(c.Request().URL.RawQuery); p != nil {
			return p
		}
		names, values := c.ParamNames(), c.ParamValues()
		for i, name := range names {
			if i >= len(values) {
				break
			}
			v := values[i]
			// echo hands over the path as sent when it has escapes of its
			// own (RawPath): check what the escapes stand for.
			if u, err := url.PathUnescape(v); err == nil {
				v = u
			}
			if p := checkValue(name, "path parameter", v, pc.path[name].maxLen); p != nil {
				return p
			}
		}
		for name, spec := range pc.header {
			for _, v := range c.Request().Header.Values(name) {
				if p := checkValue(name, "header", v, spec.maxLen); p != nil {
					return p
				}
			}
		}
		return next(c)
	}
}

// checkQuery parses the raw query itself rather than trusting
// c.QueryParams: url.Values silently drops a pair it cannot decode (a bad
// escape, a semicolon), so ?entity_type=%zz would list everything
// unfiltered. Every name must be declared by the route (a typo such as
// entity-type is an error, not an unfiltered listing) and given once; every
// name and value must be clean text within its bound.
func (pc *paramChecker) checkQuery(raw string) *problem {
	seen := map[string]bool{}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil {
			return fail(codeMalformed, fieldName(rawName), "query parameter name %s is not percent-encoded correctly", quoteShort(rawName))
		}
		if r := textReason(name); r != "" {
			return fail(codeMalformed, fieldName(name), "query parameter name %s %s", quoteShort(name), r)
		}
		spec, known := pc.query[name]
		if !known {
			return fail(codeMalformed, fieldName(name), "unknown query parameter %s", quoteShort(name))
		}
		if seen[name] {
			return fail(codeMalformed, name, "query parameter %q given more than once", name)
		}
		seen[name] = true
		if strings.Contains(pair, ";") {
			return fail(codeMalformed, name, "query parameter %q contains a semicolon: separate parameters with & and escape a literal ; as %%3B", name)
		}
		value, err := url.QueryUnescape(rawValue)
		if err != nil {
			return fail(codeMalformed, name, "query parameter %q is not percent-encoded correctly", name)
		}
		if p := checkValue(name, "query parameter", value, spec.maxLen); p != nil {
			return p
		}
	}
	return nil
}

// checkValue refuses a parameter value that is not clean text or is longer
// than maxLen characters (0: unbounded).
func checkValue(name, what, v string, maxLen int) *problem {
	if r := textReason(v); r != "" {
		return fail(codeMalformed, name, "%s %q %s", what, name, r)
	}
	if n := utf8.RuneCountInString(v); maxLen > 0 && n > maxLen {
		return fail(codeMalformed, name, "%s %q is %d characters long, more than the limit of %d", what, name, n, maxLen)
	}
	return nil
}

// textReason says why v is not clean text (valid UTF-8 without NUL or
// other control characters), or "" when it is.
func textReason(v string) string {
	if !utf8.ValidString(v) {
		return "is not valid UTF-8"
	}
	for _, r := range v {
		switch {
		case r == 0:
			return "contains NUL"
		case unicode.IsControl(r):
			return fmt.Sprintf("contains the control character %U", r)
		}
	}
	return ""
}

// fieldName is a parameter name fit for a problem's field: valid UTF-8,
// bounded, and "query" when there is no name at all.
func fieldName(name string) string {
	name = strings.ToValidUTF8(name, "\uFFFD")
	if name == "" {
		return "query"
	}
	if utf8.RuneCountInString(name) > 64 {
		name = string([]rune(name)[:64]) + "…"
	}
	return name
}

// quoteShort quotes v for a detail, cut to a readable length.
func quoteShort(v string) string {
	if len(v) > 64 {
		return fmt.Sprintf("%q…", v[:64])
	}
	return fmt.Sprintf("%q", v)
}
