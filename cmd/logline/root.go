package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

// Exit codes (contract §10).
const (
	exitOK     = 0
	exitFailed = 1 // a check failed or a run ended in error
	exitUsage  = 2 // bad usage or bad input
)

type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// app is one invocation: its streams, environment and global flags.
type app struct {
	io          stdio
	args        []string // as given
	getenv      func(string) string
	databaseURL string
	tenant      string
	user        string
	json        bool
}

// usageError marks errors that are the caller's fault (exit 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// checkFailed marks a check that ran and failed (exit 1) after its findings
// were printed.
var errCheckFailed = errors.New("check failed")

func run(ctx context.Context, args []string, sio stdio, getenv func(string) string) int {
	a := &app{io: sio, getenv: getenv, args: args}
	root := a.command()
	if args == nil {
		args = []string{} // cobra reads os.Args for nil
	}
	root.SetArgs(args)
	root.SetIn(sio.in)
	root.SetOut(sio.out)
	root.SetErr(sio.err)
	// pflag writes its warnings (deprecated flags) where cobra would print
	// them on stdout: send them to stderr, so --json output stays clean.
	walk(root, func(c *cobra.Command) { c.Flags().SetOutput(sio.err) })
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	// The one place errors are reported (--json: as an object).
	printError(sio.err, err, cmd, a.json || wantsJSON(args))
	return exitCode(err)
}

// firstArg is the first argument that is no flag (nor a flag's value) of
// c, "" if none.
func firstArg(c *cobra.Command, args []string) string {
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			return ""
		case strings.HasPrefix(arg, "--") && !strings.Contains(arg, "="):
			if f := c.Flags().Lookup(arg[2:]); f != nil && f.NoOptDefVal == "" {
				i++ // its value
			}
		case len(arg) == 2 && arg[0] == '-':
			if f := c.Flags().ShorthandLookup(arg[1:]); f != nil && f.NoOptDefVal == "" {
				i++
			}
		case strings.HasPrefix(arg, "-"):
		default:
			return arg
		}
	}
	return ""
}

func walk(c *cobra.Command, f func(*cobra.Command)) {
	f(c)
	for _, sub := range c.Commands() {
		walk(sub, f)
	}
}

func exitCode(err error) int {
	var ue usageError
	var fe *span.FieldError
	var ie *span.InputError
	var uc *unknownCommandError
	switch {
	case errors.As(err, &ue), errors.As(err, &fe), errors.As(err, &ie), errors.As(err, &uc),
		errors.Is(err, ledger.ErrInvalid), errors.Is(err, ledger.ErrBadPrincipal),
		// what cobra itself reports as a plain error
		strings.HasPrefix(err.Error(), "unknown command"):
		return exitUsage
	default:
		return exitFailed
	}
}

func (a *app) command() *cobra.Command {
	var version bool
	root := &cobra.Command{
		Use:   "logline",
		Short: "LogLine: a WASM-sandboxed kernel host for a ledger-only backend",
		Long: `LogLine: a WASM-sandboxed kernel host for a ledger-only backend.

Exit codes: 0 ok; 1 a check failed or a run ended in error; 2 bad usage or bad input.
With --json, output is JSON and so are errors: one object on stderr,
{"error": {"code": ..., "message": ..., "field": ...}} (field when the error names a flag,
as --name, or a span field).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Args and RunE: an unknown command is a usage error naming the
		// nearest ones; no command at all prints the help.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if version {
				return a.printVersion()
			}
			return cmd.Help()
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		// cobra parses the root's flags before it finds no command: a
		// mistyped command with its flags is an unknown command first.
		if !c.HasParent() {
			if name := firstArg(c, a.args); name != "" {
				return unknownCommand(c, name)
			}
		}
		return usageError{err}
	})
	root.Flags().BoolVar(&version, "version", false, "print the version (as logline version)")
	pf := root.PersistentFlags()
	pf.StringVar(&a.databaseURL, "database-url", "", "PostgreSQL URL (default $DATABASE_URL)")
	pf.StringVar(&a.tenant, "tenant", "", "tenant to act as (default $LOGLINE_TENANT)")
	pf.StringVar(&a.user, "user", "", "user to act as (default $LOGLINE_USER)")
	pf.BoolVar(&a.json, "json", false, "print machine-readable output")
	root.AddCommand(a.migrateCmd(), a.keysCmd(), a.spansCmd(), a.verifyCmd(), a.devCmd(),
		a.seedCmd(), a.publishCmd(), a.runCmd(), a.bootCmd(), a.serveCmd(), a.tokenCmd(), a.promptCmd(), a.versionCmd())
	return root
}

// dbURL is --database-url, else $DATABASE_URL.
func (a *app) dbURL() (string, error) {
	u := a.databaseURL
	if u == "" {
		u = a.getenv("DATABASE_URL")
	}
	if u == "" {
		return "", usagef("no database: set DATABASE_URL or pass --database-url")
	}
	return u, nil
}

// principal is --tenant/--user, else $LOGLINE_TENANT/$LOGLINE_USER.
func (a *app) principal() (ledger.Principal, error) {
	t, u := a.tenant, a.user
	if t == "" {
		t = a.getenv("LOGLINE_TENANT")
	}
	if u == "" {
		u = a.getenv("LOGLINE_USER")
	}
	if t == "" || u == "" {
		return ledger.Principal{}, usagef("no principal: pass --tenant and --user (or set LOGLINE_TENANT and LOGLINE_USER)")
	}
	p := ledger.User(t, u)
	if err := p.Validate(); err != nil {
		return p, usageError{err}
	}
	return p, nil
}

// hasPrincipal reports whether a principal was given at all.
func (a *app) hasPrincipal() bool {
	return a.tenant != "" || a.user != "" || a.getenv("LOGLINE_TENANT") != "" || a.getenv("LOGLINE_USER") != ""
}

// open connects to the ledger, signing with keyFile when given.
func (a *app) open(ctx context.Context, keyFile string) (*ledger.Ledger, error) {
	u, err := a.dbURL()
	if err != nil {
		return nil, err
	}
	var opts []ledger.Option
	if keyFile != "" {
		k, err := span.LoadKey(keyFile)
		if err != nil {
			return nil, usageError{err}
		}
		opts = append(opts, ledger.WithKey(k))
	}
	return ledger.Open(ctx, u, opts...)
}

// writeJSON prints v as one line of JSON.
func (a *app) writeJSON(v any) error {
	enc := json.NewEncoder(a.io.out)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func (a *app) printf(format string, args ...any) { fmt.Fprintf(a.io.out, format, args...) }

// group makes a command that only holds subcommands: run without one (or
// with an unknown one) it is a usage error, not a silent help screen.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			return usagef("%s needs a subcommand (see %s --help)", cmd.CommandPath(), cmd.CommandPath())
		},
	}
	c.AddCommand(subs...)
	return c
}
