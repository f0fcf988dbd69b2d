package main

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
)

func (a *app) spansCmd() *cobra.Command {
	return group("spans", "Sign, append, list and read spans",
		a.spansSignCmd(), a.spansAppendCmd(), a.spansListCmd(), a.spansGetCmd())
}

func (a *app) spansSignCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "sign --key FILE",
		Short: "Offline: JSON/NDJSON spans on stdin -> the same spans with at (if absent), curr_hash, signature, public_key",
		Long: `Signs spans without a database. Fields the ledger would fill are filled first so the
signature survives the append: tenant_id and owner_id from --tenant/--user when absent,
visibility (private) when absent, a new id when absent. A span with seq > 0 must carry
its prev_hash (the curr_hash of seq-1), which an offline signer cannot look up.`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			if keyFile == "" {
				return usagef("spans sign: --key FILE is required")
			}
			k, err := span.LoadKey(keyFile)
			if err != nil {
				return usageError{err}
			}
			in, err := span.Decode(a.io.in)
			if err != nil {
				return err
			}
			p, err := a.signer(in)
			if err != nil {
				return err
			}
			now := span.FormatTime(time.Now())
			for i := range in {
				s := &in[i]
				if err := ledger.Fill(p, s, now); err != nil {
					return usagef("span %d: %w", i+1, err)
				}
				if s.Seq > 0 && s.PrevHash == "" {
					return usagef("span %d: seq %d needs prev_hash (the curr_hash of seq %d)", i+1, s.Seq, s.Seq-1)
				}
				if err := s.ValidateComplete(); err != nil {
					return usagef("span %d: %w", i+1, err)
				}
				if err := k.Seal(s); err != nil {
					return err
				}
			}
			for i := range in {
				if err := a.writeJSON(&in[i]); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "Ed25519 key file (from logline keys gen)")
	return cmd
}

// signer is the principal an offline signature is made for: the flags when
// given, else the tenant and owner the spans name themselves.
func (a *app) signer(in []span.Span) (ledger.Principal, error) {
	if a.hasPrincipal() {
		return a.principal()
	}
	p := ledger.User(in[0].TenantID, in[0].OwnerID)
	if err := p.Validate(); err != nil {
		return p, usagef("spans without tenant_id and owner_id need --tenant and --user")
	}
	return p, nil
}

func (a *app) spansAppendCmd() *cobra.Command {
	var keyFile string
	cmd := &cobra.Command{
		Use:   "append [--key FILE]",
		Short: "JSON/NDJSON spans on stdin -> stored spans on stdout (one transaction)",
		Long: `Appends spans as one transaction: all or none. Signed spans (from logline spans sign)
are stored as signed after their proofs are checked; other spans are sealed by the host
(at, prev_hash, curr_hash, and with --key or $LOGLINE_KEY_FILE a signature).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := a.principal()
			if err != nil {
				return err
			}
			in, err := span.Decode(a.io.in)
			if err != nil {
				return err
			}
			if keyFile == "" {
				keyFile = a.getenv("LOGLINE_KEY_FILE")
			}
			l, err := a.open(cmd.Context(), keyFile)
			if err != nil {
				return err
			}
			defer l.Close()
			out, err := l.Append(cmd.Context(), p, in...)
			if err != nil {
				return err
			}
			for i := range out {
				if err := a.writeJSON(&out[i]); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "node key file to sign with (default $LOGLINE_KEY_FILE)")
	return cmd
}

func (a *app) spansListCmd() *cobra.Command {
	var f ledger.Filter
	var cursor, after, since string
	var newest, allTypes, follow bool
	var exclude []string
	cmd := &cobra.Command{
		Use:   "list [--entity-type T] [--status S] [--limit N] [--cursor C] [--newest] [--follow]",
		Short: "List spans visible to the principal, oldest first (or --newest first)",
		Long: `Lists one page of spans visible to the principal, oldest first (or --newest first).
--limit is the page size, 1 to ` + strconv.Itoa(ledger.MaxLimit) + ` (default ` + strconv.Itoa(ledger.DefaultLimit) + `), as the API's limit=. A full page
ends with the flags that continue it ("more: ... --cursor C", keeping the filters and the
direction); --json prints {"items": [{"cursor", "span"}], "next", "more"} like GET /api/spans,
and --cursor takes next as the API's cursor= does.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.Limit < 1 || f.Limit > ledger.MaxLimit {
				return flagErrorf("limit", "--limit %d: want 1 to %d (default %d)", f.Limit, ledger.MaxLimit, ledger.DefaultLimit)
			}
			if after != "" {
				if cursor != "" && cursor != after {
					return flagErrorf("cursor", "--cursor and --after (its old name) differ: give --cursor only")
				}
				cursor = after
			}
			c, err := ledger.ParseCursor(cursor)
			if err != nil {
				return &fieldError{field: "--cursor", err: usageError{fmt.Errorf("--cursor: %w", err)}}
			}
			if newest && follow {
				return flagErrorf("follow", "--follow tails new spans oldest first: drop --newest")
			}
			if newest {
				f.Desc, f.Before = true, c
			} else {
				f.After = c
			}
			f.ExcludeTypes = ledger.Excluded(allTypes, f.EntityType, exclude...)
			if since != "" {
				if f.Since, err = time.Parse(time.RFC3339Nano, since); err != nil {
					return flagErrorf("since", "--since %q: want an RFC 3339 time", since)
				}
			}
			p, err := a.principal()
			if err != nil {
				return err
			}
			l, err := a.open(cmd.Context(), "")
			if err != nil {
				return err
			}
			defer l.Close()
			if follow {
				return a.follow(cmd.Context(), l, p, f)
			}
			page, err := l.Query(cmd.Context(), p, f)
			if err != nil {
				return err
			}
			// A full page may have more after it (as the API's "more").
			more := len(page.Items) == f.Limit
			if a.json {
				type item struct {
					Cursor string     `json:"cursor"`
					Span   *span.Span `json:"span"`
				}
				out := struct {
					Items []item `json:"items"`
					Next  string `json:"next"`
					More  bool   `json:"more"`
				}{Items: []item{}, Next: page.Next.String(), More: more}
				for i := range page.Items {
					out.Items = append(out.Items, item{page.Items[i].Cursor.String(), &page.Items[i].Span})
				}
				return a.writeJSON(out)
			}
			for _, it := range page.Items {
				s := it.Span
				a.printf("%s  %s  seq=%d  %-12s %-10s %s\n", s.At, s.ID, s.Seq, s.EntityType, s.Status, s.Name)
			}
			if len(page.Items) == 0 {
				a.printf("(no spans)\n")
			}
			if more {
				a.printf("more: %s\n", continuation(cmd, page.Next.String()))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.EntityType, "entity-type", "", "only this entity_type")
	fl.StringVar(&f.Status, "status", "", "only this status")
	fl.StringVar(&f.Visibility, "visibility", "", "only private, tenant or public")
	fl.StringVar(&f.TraceID, "trace-id", "", "only this trace_id")
	fl.StringVar(&f.ParentID, "parent-id", "", "only children of this span id")
	fl.StringVar(&since, "since", "", "only spans at or after this RFC 3339 time")
	fl.IntVar(&f.Limit, "limit", ledger.DefaultLimit, "page size, 1 to "+strconv.Itoa(ledger.MaxLimit))
	fl.StringVar(&cursor, "cursor", "", "continue from this cursor (next in --json, the 'more:' line, the API's next)")
	fl.StringVar(&after, "after", "", "old name of --cursor")
	_ = fl.MarkDeprecated("after", "use --cursor")
	fl.BoolVar(&newest, "newest", false, "newest first")
	fl.BoolVar(&allTypes, "all-types", false, "also the engine's bookkeeping ("+strings.Join(ledger.Bookkeeping, ", ")+"), left out by default")
	fl.StringArrayVar(&exclude, "exclude-type", nil, "leave out this entity_type (repeatable)")
	fl.BoolVar(&follow, "follow", false, "keep printing new spans as they commit, like tail -f (Ctrl-C stops)")
	return cmd
}

// follow prints the spans of f from its cursor on, then every span that
// commits after, woken by the ledger's notifications and polling every
// second besides (a pooler may not pass LISTEN on). The cursor is a
// forward one, so nothing that commits late is skipped. --json prints one
// {"cursor", "span"} per line.
func (a *app) follow(ctx context.Context, l *ledger.Ledger, p ledger.Principal, f ledger.Filter) error {
	wake := make(chan struct{}, 1)
	go func() {
		_ = l.Listen(ctx, func(ledger.Notice) {
			select {
			case wake <- struct{}{}:
			default:
			}
		})
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		page, err := l.Query(ctx, p, f)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, it := range page.Items {
			if a.json {
				if err := a.writeJSON(struct {
					Cursor string     `json:"cursor"`
					Span   *span.Span `json:"span"`
				}{it.Cursor.String(), &it.Span}); err != nil {
					return err
				}
				continue
			}
			s := it.Span
			a.printf("%s  %s  seq=%d  %-12s %-10s %s\n", s.At, s.ID, s.Seq, s.EntityType, s.Status, s.Name)
		}
		if len(page.Items) > 0 {
			f.After = page.Next
		}
		if len(page.Items) == f.Limit {
			continue // more right away
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-tick.C:
		}
	}
}

// listFlags are the flags of spans list a continuation repeats, in the
// order it prints them.
var listFlags = []string{"entity-type", "status", "visibility", "trace-id", "parent-id", "since", "all-types", "exclude-type", "limit", "newest"}

// continuation is the flags that list the page after this one: the same
// filters, page size and direction, from next.
func continuation(cmd *cobra.Command, next string) string {
	var b strings.Builder
	for _, name := range listFlags {
		fl := cmd.Flags().Lookup(name)
		if !fl.Changed {
			continue
		}
		if fl.Value.Type() == "bool" {
			if fl.Value.String() == "true" {
				fmt.Fprintf(&b, "--%s ", name)
			}
			continue
		}
		if sv, ok := fl.Value.(pflag.SliceValue); ok {
			for _, v := range sv.GetSlice() {
				fmt.Fprintf(&b, "--%s %s ", name, shellQuote(v))
			}
			continue
		}
		fmt.Fprintf(&b, "--%s %s ", name, shellQuote(fl.Value.String()))
	}
	b.WriteString("--cursor " + next)
	return b.String()
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=@+,-]+$`)

func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (a *app) spansGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Print every version of a span, oldest first (NDJSON)",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("spans get takes exactly one span id")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := a.principal()
			if err != nil {
				return err
			}
			l, err := a.open(cmd.Context(), "")
			if err != nil {
				return err
			}
			defer l.Close()
			versions, err := l.Get(cmd.Context(), p, args[0])
			if err != nil {
				return err
			}
			for i := range versions {
				if err := a.writeJSON(&versions[i]); err != nil {
					return err
				}
			}
			return nil
		},
	}
}
