package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// Error codes of the JSON error object (--json): stable strings scripts
// branch on. The exit code follows from the code (exitCode).
const (
	codeUsage          = "usage"           // 2: bad flags, arguments or environment
	codeUnknownCommand = "unknown_command" // 2
	codeInvalidInput   = "invalid_input"   // 2: spans (or a request) the ledger refuses as malformed
	codeBadPrincipal   = "bad_principal"   // 2
	codeCheckFailed    = "check_failed"    // 1: the findings were printed on stdout
	codeNotFound       = "not_found"       // 1
	codeConflict       = "conflict"        // 1: seq conflict or broken chain
	codeForbidden      = "forbidden"       // 1
	codeFailed         = "failed"          // 1: anything else
)

// fieldError is a usage error about one flag or field, named explicitly.
type fieldError struct {
	field string // a flag as --name, or a span field by its JSON name
	err   error
}

func (e *fieldError) Error() string { return e.err.Error() }
func (e *fieldError) Unwrap() error { return e.err }

// flagErrorf is a usage error about --flag.
func flagErrorf(flag, format string, a ...any) error {
	return &fieldError{field: "--" + flag, err: usagef(format, a...)}
}

// unknownCommandError is a command name that names no command, with the
// nearest ones (cobra's SuggestionsFor: Levenshtein distance at most
// SuggestionsMinimumDistance, prefixes and SuggestFor).
type unknownCommandError struct {
	name, parent string
	suggestions  []string
}

func (e *unknownCommandError) Error() string {
	return fmt.Sprintf("unknown command %q for %q (see %s --help)", e.name, e.parent, e.parent)
}

// suggestDistance is cobra's default SuggestionsMinimumDistance (which
// SuggestionsFor, unlike cobra's own unknown-command error, does not apply).
const suggestDistance = 2

func unknownCommand(parent *cobra.Command, name string) error {
	if parent.SuggestionsMinimumDistance <= 0 {
		parent.SuggestionsMinimumDistance = suggestDistance
	}
	return &unknownCommandError{name: name, parent: parent.CommandPath(), suggestions: parent.SuggestionsFor(name)}
}

// errorInfo is the JSON error object's "error" member.
type errorInfo struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field is the flag (--name) or span field at fault, when the error
	// names one.
	Field string `json:"field,omitempty"`
	// Span and Line locate a problem in span input (1-based).
	Span        int      `json:"span,omitempty"`
	Line        int      `json:"line,omitempty"`
	Suggestions []string `json:"suggestions,omitempty"`
}

// describe classifies err, which the command cmd returned (cmd may be nil).
func describe(err error, cmd *cobra.Command) errorInfo {
	info := errorInfo{Message: err.Error()}
	var ue usageError
	var uc *unknownCommandError
	var ie *span.InputError
	var fe *span.FieldError
	switch {
	case errors.As(err, &uc):
		info.Code, info.Suggestions = codeUnknownCommand, uc.suggestions
	case errors.As(err, &ie):
		info.Code, info.Field, info.Span, info.Line = codeInvalidInput, ie.Field, ie.Span, ie.Line
	case errors.As(err, &fe):
		info.Code, info.Field = codeInvalidInput, fe.Field
	case errors.Is(err, ledger.ErrInvalid):
		info.Code = codeInvalidInput
	case errors.Is(err, ledger.ErrBadPrincipal):
		info.Code = codeBadPrincipal
	case errors.As(err, &ue):
		info.Code = codeUsage
	case errors.Is(err, errCheckFailed):
		info.Code = codeCheckFailed
	case errors.Is(err, ledger.ErrNotFound):
		info.Code = codeNotFound
	case errors.Is(err, ledger.ErrSeqConflict), errors.Is(err, ledger.ErrChain):
		info.Code = codeConflict
	case errors.Is(err, ledger.ErrForbidden):
		info.Code = codeForbidden
	default:
		info.Code = codeFailed
	}
	var xe *fieldError
	if errors.As(err, &xe) {
		info.Field = xe.field
	}
	if info.Field == "" && info.Code != codeUnknownCommand {
		info.Field = flagOf(err, cmd)
	}
	return info
}

var flagMention = regexp.MustCompile(`--([a-z][a-z0-9-]*)`)

// flagOf is the flag an error names: the flag pflag failed to parse, else
// the first --name in the message that is a flag of cmd.
func flagOf(err error, cmd *cobra.Command) string {
	var iv *pflag.InvalidValueError
	var vr *pflag.ValueRequiredError
	var ne *pflag.NotExistError
	switch {
	case errors.As(err, &iv):
		return "--" + iv.GetFlag().Name
	case errors.As(err, &vr):
		return "--" + vr.GetFlag().Name
	case errors.As(err, &ne) && ne.GetSpecifiedName() != "":
		return "--" + ne.GetSpecifiedName()
	}
	if cmd == nil {
		return ""
	}
	for _, m := range flagMention.FindAllStringSubmatch(err.Error(), -1) {
		if m[1] != "help" && cmd.Flags().Lookup(m[1]) != nil {
			return "--" + m[1]
		}
	}
	return ""
}

// printError reports err on w: with --json as one object
// {"error": {"code", "message", "field"?, ...}}, else as "logline: message"
// (nothing for a failed check, whose findings are already printed).
func printError(w io.Writer, err error, cmd *cobra.Command, asJSON bool) {
	info := describe(err, cmd)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(struct {
			Error errorInfo `json:"error"`
		}{info})
		return
	}
	if info.Code == codeCheckFailed {
		return
	}
	fmt.Fprintln(w, "logline:", strings.TrimRight(info.Message, "\n"))
	switch len(info.Suggestions) {
	case 0:
	case 1:
		fmt.Fprintf(w, "Did you mean this? %s\n", info.Suggestions[0])
	default:
		fmt.Fprintf(w, "Did you mean one of these? %s\n", strings.Join(info.Suggestions, ", "))
	}
}

// wantsJSON reports whether args ask for --json, for errors that happen
// before (or while) flags are parsed.
func wantsJSON(args []string) bool {
	on := false
	for _, arg := range args {
		if arg == "--" {
			break
		}
		if arg == "--json" {
			on = true
		} else if v, ok := strings.CutPrefix(arg, "--json="); ok {
			on, _ = strconv.ParseBool(v)
		}
	}
	return on
}
