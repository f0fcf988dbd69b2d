package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/sandbox"
	"github.com/logline/logline/host/sandbox/extism"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// nodeKeyFile is the key the host signs what it records with, found as
// serve and dev find it: $LOGLINE_KEY_FILE, else, for a CLI pointed at the
// database of `logline dev`, the node key its dev.json names; "" means
// unsigned.
func (a *app) nodeKeyFile() string {
	if f := a.getenv("LOGLINE_KEY_FILE"); f != "" {
		return f
	}
	b, err := os.ReadFile(filepath.Join(a.devDir(), "dev.json"))
	if err != nil {
		return ""
	}
	var info devInfo
	if json.Unmarshal(b, &info) != nil || info.DatabaseURL == "" {
		return ""
	}
	if u, err := a.dbURL(); err != nil || u != info.DatabaseURL {
		return ""
	}
	return info.KeyFile
}

// devDir is the data directory of `logline dev`: $LOGLINE_DATA, else
// .logline.
func (a *app) devDir() string {
	if d := a.getenv("LOGLINE_DATA"); d != "" {
		return d
	}
	return ".logline"
}

// host opens the ledger and a sandbox runtime for Stage-0 commands.
func (a *app) host(ctx context.Context) (*stage0.Host, func(), error) {
	l, err := a.open(ctx, a.nodeKeyFile())
	if err != nil {
		return nil, nil, err
	}
	h, closeRT, err := stage0Host(ctx, l)
	if err != nil {
		l.Close()
		return nil, nil, err
	}
	return h, func() { closeRT(); l.Close() }, nil
}

// stage0Host makes the sandbox runtimes and the Stage-0 host over l. The
// wazero compilation cache lives under the user's cache directory, so a
// process does not recompile a module (the QuickJS guest: seconds) it has
// seen.
func stage0Host(ctx context.Context, l *ledger.Ledger) (*stage0.Host, func(), error) {
	cfg := sandbox.Config{}
	if dir, err := os.UserCacheDir(); err == nil {
		cfg.CompilationCacheDir = filepath.Join(dir, "logline", "wazero")
	}
	rt, err := sandbox.New(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	ext, err := extism.New(ctx, extism.Config{})
	if err != nil {
		_ = rt.Close(ctx)
		return nil, nil, err
	}
	return stage0.New(l, rt, ext), func() {
		_ = ext.Close(context.WithoutCancel(ctx))
		_ = rt.Close(context.WithoutCancel(ctx))
	}, nil
}

// printExecution prints an execution span and turns an error status into
// exit 1.
func (a *app) printExecution(ex span.Span) error {
	if a.json {
		if err := a.writeJSON(&ex); err != nil {
			return err
		}
	} else {
		a.printf("execution %s: %s\n", ex.ID, ex.Status)
		if len(ex.Output) > 0 {
			a.printf("output: %s\n", ex.Output)
		}
		if len(ex.Error) > 0 {
			a.printf("error: %s\n", ex.Error)
		}
		a.printf("metadata: %s\n", ex.Metadata)
	}
	if ex.Status != "complete" {
		return errCheckFailed
	}
	return nil
}

// refusal prints why Stage-0 refused and ends with exit 1.
func (a *app) refusal(err error) error {
	var r *stage0.Refusal
	if errors.As(err, &r) {
		fmt.Fprintf(a.io.err, "logline: refused: %s\n", r)
		if a.json {
			_ = a.writeJSON(map[string]string{"refused": r.Code, "message": r.Message})
		}
		return errCheckFailed
	}
	return err
}

func (a *app) bootCmd() *cobra.Command {
	var envs []string
	cmd := &cobra.Command{
		Use:   "boot KERNEL_ID [--env K=V ...]",
		Short: "Stage-0: verify and run a kernel the manifest allows; prints its execution span",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("boot takes exactly one kernel id")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			env := map[string]string{}
			for _, kv := range envs {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--env %q: want KEY=VALUE", kv)
				}
				env[k] = v
			}
			h, done, err := a.host(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			ex, err := h.Boot(cmd.Context(), args[0], env)
			if err != nil {
				return a.refusal(err)
			}
			return a.printExecution(ex)
		},
	}
	cmd.Flags().StringArrayVar(&envs, "env", nil, "boot parameter KEY=VALUE (repeatable; never secrets)")
	return cmd
}

func (a *app) runCmd() *cobra.Command {
	var input string
	cmd := &cobra.Command{
		Use:   "run ID [--input JSON]",
		Short: "Run a function or policy once in the sandbox (tier 2); appends and prints its execution span",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("run takes exactly one span id")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.principal()
			if err != nil {
				return err
			}
			if input != "" && !json.Valid([]byte(input)) {
				return usagef("--input is not valid JSON")
			}
			if input != "" {
				if err := span.CheckJSON("input", []byte(input)); err != nil {
					return usagef("--input: %v", err)
				}
			}
			h, done, err := a.host(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			ex, err := h.Run(cmd.Context(), p, args[0], json.RawMessage(input))
			if err != nil {
				return a.refusal(err)
			}
			return a.printExecution(ex)
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "input as JSON")
	return cmd
}
