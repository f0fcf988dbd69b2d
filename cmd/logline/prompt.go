package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/logline/logline/abi"
	"github.com/logline/logline/host/api"
	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/stage0"
)

// The prompt system's kernels (guests/kernels/build_prompt.js,
// prompt_runner.js, prompt_eval.js, prompt_bandit.js), by their keys in the
// manifest's kernels map.
const (
	kernelBuild  = "build_prompt"
	kernelRunner = "prompt_runner"
	kernelEval   = "prompt_eval"
	kernelBandit = "prompt_bandit"
)

func (a *app) promptCmd() *cobra.Command {
	return group("prompt", "The prompt system: build, run, evaluate and route prompt variants, and show a family",
		a.promptBuildCmd(), a.promptRunCmd(), a.promptEvalCmd(), a.promptBanditCmd(), a.promptShowCmd())
}

// promptSession is an open ledger and Stage-0 host acting for the
// principal.
type promptSession struct {
	a    *app
	p    ledger.Principal
	l    *ledger.Ledger
	h    *stage0.Host
	done func()
}

func (a *app) promptSession(ctx context.Context) (*promptSession, error) {
	p, err := a.principal()
	if err != nil {
		return nil, err
	}
	l, err := a.open(ctx, a.nodeKeyFile())
	if err != nil {
		return nil, err
	}
	h, closeRT, err := stage0Host(ctx, l)
	if err != nil {
		l.Close()
		return nil, err
	}
	return &promptSession{a: a, p: p, l: l, h: h, done: func() { closeRT(); l.Close() }}, nil
}

// need checks, before any kernel runs (a failed run is recorded), that
// flag names a span the principal can see of entityType: anything else is
// bad input (exit 2) and nothing is written.
func (s *promptSession) need(ctx context.Context, flag, id, entityType string) error {
	if u, err := uuid.Parse(id); err != nil || u.String() != id {
		return usagef("--%s %q is not a lowercase UUID", flag, id)
	}
	sp, err := s.l.Latest(ctx, s.p, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return usagef("--%s %s: no such span visible to %s", flag, id, s.p)
	}
	if err != nil {
		return err
	}
	if sp.EntityType != entityType {
		return usagef("--%s %s is a %s span, not a %s", flag, id, sp.EntityType, entityType)
	}
	return nil
}

// badInput is how the prompt kernels say the input was wrong:
// "<kernel>: invalid_input: ..." or "<kernel>: not_found: ...".
var badInput = regexp.MustCompile(`\b(invalid_input|not_found): `)

// sandboxPrefix is how the sandbox words a thrown error.
var sandboxPrefix = regexp.MustCompile(`^run returned \d+: (Error: )?`)

// kernel runs the prompt kernel the manifest names for the principal's
// tenant (stage0 Tick: under the tenant's service principal), with env
// USER_ID and TENANT, and returns its output. A refusal or a failed run is
// exit 1, unless the kernel said the input was bad (exit 2).
func (s *promptSession) kernel(ctx context.Context, name string, env map[string]string) (json.RawMessage, error) {
	m, err := s.h.LoadManifest(ctx)
	if err != nil {
		return nil, s.a.refusal(err)
	}
	id := m.Kernels[name]
	if id == "" {
		return nil, fmt.Errorf("the manifest's kernels map names no %s kernel: run `logline seed`", name)
	}
	env["USER_ID"], env["TENANT"] = s.p.User, s.p.Tenant
	res, err := s.h.Tick(ctx, id, s.p.Tenant, env, nil)
	if err != nil {
		return nil, s.a.refusal(err)
	}
	if res.Err != nil {
		return nil, kernelError(name, res.Err)
	}
	return res.Output, nil
}

// kernelError is a failed kernel run as the CLI reports it: what the
// kernel threw ("<kernel>: <code>: ..."), without the sandbox's prefix
// ("run returned 1: Error: ") and the stack trace.
func kernelError(name string, e *abi.Error) error {
	msg, _, _ := strings.Cut(e.Message, "\n")
	if i := strings.Index(msg, name+": "); i >= 0 {
		msg = msg[i:]
	} else {
		msg = name + ": " + sandboxPrefix.ReplaceAllString(msg, "")
	}
	if e.Code == abi.CodeGuestError && badInput.MatchString(msg) {
		return usageError{errors.New(msg)}
	}
	return fmt.Errorf("%s (%s)", msg, e.Code)
}

// printRaw prints a kernel's output as one line of JSON.
func (a *app) printRaw(out json.RawMessage) error {
	var v any
	if err := json.Unmarshal(out, &v); err != nil {
		return fmt.Errorf("the kernel's output is not JSON: %w", err)
	}
	return a.writeJSON(v)
}

func (a *app) table() *tabwriter.Writer { return tabwriter.NewWriter(a.io.out, 0, 4, 2, ' ', 0) }

func (a *app) promptBuildCmd() *cobra.Command {
	var variant string
	cmd := &cobra.Command{
		Use:   "build --variant ID",
		Short: "Compile a prompt_variant into a prompt_build (idempotent: the same inputs give the same compiled_hash and build)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if variant == "" {
				return usagef("--variant is required")
			}
			ctx := cmd.Context()
			s, err := a.promptSession(ctx)
			if err != nil {
				return err
			}
			defer s.done()
			if err := s.need(ctx, "variant", variant, "prompt_variant"); err != nil {
				return err
			}
			raw, err := s.kernel(ctx, kernelBuild, map[string]string{"VARIANT_ID": variant})
			if err != nil {
				return err
			}
			if a.json {
				return a.printRaw(raw)
			}
			var out struct {
				BuildID      string `json:"build_id"`
				CompiledHash string `json:"compiled_hash"`
				VariantID    string `json:"variant_id"`
				VariantSeq   int    `json:"variant_seq"`
				Reused       bool   `json:"reused"`
				SystemChars  int    `json:"system_chars"`
				Blocks       []struct {
					ID       string `json:"id"`
					Seq      int    `json:"seq"`
					CurrHash string `json:"curr_hash"`
				} `json:"blocks"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("the build_prompt kernel's output: %w", err)
			}
			state := "new"
			if out.Reused {
				state = "reused: this tenant already built this compiled_hash"
			}
			a.printf("compiled_hash %s\n", out.CompiledHash)
			a.printf("build %s (%s)\n", out.BuildID, state)
			a.printf("variant %s seq %d; system prompt %d characters; %d blocks, in priority order:\n",
				out.VariantID, out.VariantSeq, out.SystemChars, len(out.Blocks))
			tw := a.table()
			fmt.Fprintln(tw, "  BLOCK\tSEQ\tCURR_HASH")
			for _, b := range out.Blocks {
				fmt.Fprintf(tw, "  %s\t%d\t%s\n", b.ID, b.Seq, b.CurrHash)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&variant, "variant", "", "the prompt_variant id")
	return cmd
}

func (a *app) promptRunCmd() *cobra.Command {
	var variant, family, input, context, provider string
	cmd := &cobra.Command{
		Use:   "run (--variant ID | --family F) --input TEXT [--context TEXT] [--provider ID]",
		Short: "Run a prompt once: a prompt_request, the provider call, the answer read against the output contract, a prompt_run",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case variant == "" && family == "":
				return usagef("--variant or --family is required")
			case variant != "" && family != "":
				return usagef("--variant and --family exclude each other")
			case family != "" && !api.ValidFamily(family):
				return usagef("--family %q: want 1 to %d letters, digits, _ . -", family, api.MaxFamilyLen)
			case !cmd.Flags().Changed("input"):
				return usagef("--input is required")
			case strings.ContainsRune(input, 0) || strings.ContainsRune(context, 0):
				return usagef("--input and --context must not contain NUL")
			}
			ctx := cmd.Context()
			s, err := a.promptSession(ctx)
			if err != nil {
				return err
			}
			defer s.done()
			env := map[string]string{"USER_INPUT": input, "CONTEXT_TEXT": context}
			if variant != "" {
				if err := s.need(ctx, "variant", variant, "prompt_variant"); err != nil {
					return err
				}
				env["VARIANT_ID"] = variant
			} else {
				env["PROMPT_FAMILY"] = family
			}
			if provider != "" {
				if err := s.need(ctx, "provider", provider, "provider"); err != nil {
					return err
				}
				env["PROVIDER_ID"] = provider
			}
			raw, err := s.kernel(ctx, kernelRunner, env)
			if err != nil {
				return err
			}
			var out struct {
				PromptRun    string `json:"prompt_run"`
				RequestID    string `json:"request_id"`
				Status       string `json:"status"`
				VariantID    string `json:"variant_id"`
				CompiledHash string `json:"compiled_hash"`
				Output       *struct {
					Text      *string         `json:"text"`
					Parsed    json.RawMessage `json:"parsed"`
					Model     *string         `json:"model"`
					LatencyMs *float64        `json:"latency_ms"`
					Usage     struct {
						InputTokens  *int `json:"input_tokens"`
						OutputTokens *int `json:"output_tokens"`
					} `json:"usage"`
				} `json:"output"`
				Error *struct{ Code, Message string } `json:"error"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("the prompt_runner kernel's output: %w", err)
			}
			if a.json {
				if err := a.printRaw(raw); err != nil {
					return err
				}
			} else {
				a.printf("status %s\n", out.Status)
				if o := out.Output; o != nil {
					switch {
					case len(o.Parsed) > 0 && string(o.Parsed) != "null":
						a.printf("answer %s\n", o.Parsed)
					case o.Text != nil:
						a.printf("answer %s\n", *o.Text)
					}
				}
				if out.Error != nil {
					a.printf("error %s: %s\n", out.Error.Code, out.Error.Message)
				}
				a.printf("variant %s\ncompiled_hash %s\n", orDash(out.VariantID), orDash(out.CompiledHash))
				if o := out.Output; o != nil {
					a.printf("model %s\n", orDash(deref(o.Model)))
					a.printf("tokens %s in, %s out\n", intOrDash(o.Usage.InputTokens), intOrDash(o.Usage.OutputTokens))
					if o.LatencyMs != nil {
						a.printf("latency %s ms\n", strconv.FormatFloat(*o.LatencyMs, 'f', -1, 64))
					}
				}
				a.printf("prompt_run %s\nrequest %s\n", out.PromptRun, out.RequestID)
			}
			if out.Status != "complete" {
				return errCheckFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&variant, "variant", "", "the prompt_variant to run")
	f.StringVar(&family, "family", "", "a family: the variant its routing draws (after `logline prompt bandit`)")
	f.StringVar(&input, "input", "", "the user input ({{user_input}})")
	f.StringVar(&context, "context", "", "the context ({{context}})")
	f.StringVar(&provider, "provider", "", "a provider span id instead of the variant's provider_id")
	return cmd
}

func (a *app) promptEvalCmd() *cobra.Command {
	var variant, card, provider string
	var repeats int
	cmd := &cobra.Command{
		Use:   "eval --variant ID --eval ID [--repeats N] [--provider ID]",
		Short: "Run an eval card against a variant and record a prompt_eval_run; exit 1 when it does not pass",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case variant == "":
				return usagef("--variant is required")
			case card == "":
				return usagef("--eval is required (the prompt_eval card)")
			case cmd.Flags().Changed("repeats") && (repeats < 1 || repeats > 100):
				return usagef("--repeats %d: want 1 to 100", repeats)
			}
			ctx := cmd.Context()
			s, err := a.promptSession(ctx)
			if err != nil {
				return err
			}
			defer s.done()
			if err := s.need(ctx, "variant", variant, "prompt_variant"); err != nil {
				return err
			}
			if err := s.need(ctx, "eval", card, "prompt_eval"); err != nil {
				return err
			}
			env := map[string]string{"VARIANT_ID": variant, "EVAL_ID": card}
			if cmd.Flags().Changed("repeats") {
				env["REPEATS"] = strconv.Itoa(repeats)
			}
			if provider != "" {
				if err := s.need(ctx, "provider", provider, "provider"); err != nil {
					return err
				}
				env["PROVIDER_ID"] = provider
			}
			raw, err := s.kernel(ctx, kernelEval, env)
			if err != nil {
				return err
			}
			var out struct {
				PromptEvalRun string  `json:"prompt_eval_run"`
				CompiledHash  string  `json:"compiled_hash"`
				Model         *string `json:"model"`
				Passed        bool    `json:"passed"`
				PassRate      float64 `json:"pass_rate"`
				Totals        map[string]struct {
					Fixtures int     `json:"fixtures"`
					Runs     int     `json:"runs"`
					Passed   int     `json:"passed"`
					PassRate float64 `json:"pass_rate"`
					PassAtK  float64 `json:"pass_at_k"`
					PassPowK float64 `json:"pass_pow_k"`
				} `json:"totals"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("the prompt_eval kernel's output: %w", err)
			}
			if a.json {
				if err := a.printRaw(raw); err != nil {
					return err
				}
			} else {
				tw := a.table()
				fmt.Fprintln(tw, "KIND\tFIXTURES\tRUNS\tPASSED\tPASS_RATE\tPASS@K\tPASS^K")
				kinds := make([]string, 0, len(out.Totals))
				for k := range out.Totals {
					kinds = append(kinds, k)
				}
				slices.Sort(kinds)
				for _, k := range kinds {
					t := out.Totals[k]
					fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s\t%s\t%s\n", k, t.Fixtures, t.Runs, t.Passed, ratio(t.PassRate), ratio(t.PassAtK), ratio(t.PassPowK))
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				verdict := "passed"
				if !out.Passed {
					verdict = "not passed"
				}
				a.printf("pass_rate %s: %s\n", ratio(out.PassRate), verdict)
				a.printf("compiled_hash %s\nmodel %s\nprompt_eval_run %s\n", out.CompiledHash, orDash(deref(out.Model)), out.PromptEvalRun)
			}
			if !out.Passed {
				return errCheckFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&variant, "variant", "", "the prompt_variant to evaluate")
	f.StringVar(&card, "eval", "", "the prompt_eval card")
	f.IntVar(&repeats, "repeats", 0, "runs per fixture, 1 to 100 (default: the card's, else 3)")
	f.StringVar(&provider, "provider", "", "a provider span id instead of the card's or the variant's")
	return cmd
}

func (a *app) promptBanditCmd() *cobra.Command {
	var family string
	var windowDays float64
	var seed uint32
	cmd := &cobra.Command{
		Use:   "bandit --family F [--window-days N] [--seed N]",
		Short: "Decide a family's traffic (Thompson sampling over the window's evidence) and record the routing",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case family == "":
				return usagef("--family is required")
			case !api.ValidFamily(family):
				return usagef("--family %q: want 1 to %d letters, digits, _ . -", family, api.MaxFamilyLen)
			case cmd.Flags().Changed("window-days") && !(windowDays > 0 && windowDays <= 366):
				return usagef("--window-days %v: want a number of days in (0, 366]", windowDays)
			}
			ctx := cmd.Context()
			s, err := a.promptSession(ctx)
			if err != nil {
				return err
			}
			defer s.done()
			env := map[string]string{"PROMPT_FAMILY": family}
			if cmd.Flags().Changed("window-days") {
				env["WINDOW_DAYS"] = strconv.FormatFloat(windowDays, 'f', -1, 64)
			}
			if cmd.Flags().Changed("seed") {
				env["SEED"] = strconv.FormatUint(uint64(seed), 10)
			}
			raw, err := s.kernel(ctx, kernelBandit, env)
			if err != nil {
				return err
			}
			if a.json {
				return a.printRaw(raw)
			}
			var out struct {
				PromptBandit string             `json:"prompt_bandit"`
				Routing      string             `json:"routing"`
				Seed         uint32             `json:"seed"`
				Weights      map[string]float64 `json:"weights"`
			}
			if err := json.Unmarshal(raw, &out); err != nil {
				return fmt.Errorf("the prompt_bandit kernel's output: %w", err)
			}
			a.printWeights(out.Weights)
			a.printf("seed %d\nprompt_bandit %s\nrouting %s\n", out.Seed, out.PromptBandit, out.Routing)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&family, "family", "", "the family")
	f.Float64Var(&windowDays, "window-days", 1, "days of evidence")
	f.Uint32Var(&seed, "seed", 0, "the sampling seed (replays a recorded decision; default random)")
	return cmd
}

// printWeights prints a routing's weights by variant id.
func (a *app) printWeights(w map[string]float64) {
	ids := make([]string, 0, len(w))
	for id := range w {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	tw := a.table()
	fmt.Fprintln(tw, "VARIANT\tWEIGHT")
	for _, id := range ids {
		fmt.Fprintf(tw, "%s\t%s\n", id, ratio(w[id]))
	}
	_ = tw.Flush()
}

func (a *app) promptShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show FAMILY",
		Short: "A family's variants (with their latest eval) and the tenant's routing weights, as the principal reads them",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("show takes exactly one family")
			}
			if !api.ValidFamily(args[0]) {
				return usagef("family %q: want 1 to %d letters, digits, _ . -", args[0], api.MaxFamilyLen)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.principal()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			l, err := a.open(ctx, "")
			if err != nil {
				return err
			}
			defer l.Close()
			fam, err := api.ReadPromptFamily(ctx, l, p, args[0])
			if err != nil {
				return err
			}
			if a.json {
				return a.writeJSON(fam)
			}
			a.printf("family %s: %d variants\n", fam.Family, len(fam.Variants))
			tw := a.table()
			fmt.Fprintln(tw, "VARIANT\tNAME\tVERSION\tSEQ\tSTATUS\tEVAL\tCOMPILED")
			for _, v := range fam.Variants {
				var m struct {
					Version any `json:"version"`
				}
				_ = json.Unmarshal(v.Variant.Metadata, &m)
				eval, compiled := "-", "-"
				if e := v.LatestEval; e != nil {
					switch {
					case e.PassRate != nil && e.Passed != nil && *e.Passed:
						eval = ratio(*e.PassRate) + " passed"
					case e.PassRate != nil:
						eval = ratio(*e.PassRate) + " failed"
					default:
						eval = orDash(e.Status)
					}
					if e.CompiledHash != nil {
						compiled = (*e.CompiledHash)[:min(12, len(*e.CompiledHash))]
					}
				}
				version := "-"
				if m.Version != nil {
					version = fmt.Sprint(m.Version)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", v.Variant.ID, orDash(v.Variant.Name), version, v.Variant.Seq,
					orDash(v.Variant.Status), eval, compiled)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if fam.Routing == nil {
				a.printf("routing: none in tenant %s (logline prompt bandit --family %s decides one)\n", p.Tenant, fam.Family)
				return nil
			}
			var rm struct {
				Weights    map[string]float64 `json:"weights"`
				DecisionID string             `json:"decision_id"`
			}
			_ = json.Unmarshal(fam.Routing.Metadata, &rm)
			a.printf("routing %s seq %d (decision %s, %s):\n", fam.Routing.ID, fam.Routing.Seq, orDash(rm.DecisionID), fam.Routing.At)
			a.printWeights(rm.Weights)
			return nil
		},
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

func intOrDash(p *int) string {
	if p == nil {
		return "-"
	}
	return strconv.Itoa(*p)
}

// ratio prints a share with at most four decimals.
func ratio(x float64) string { return strconv.FormatFloat(math.Round(x*1e4)/1e4, 'f', -1, 64) }
