package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

func (a *app) publishCmd() *cobra.Command {
	var id, name, kind, runtime, keyFile, judges string
	cmd := &cobra.Command{
		Use:   "publish FILE --id UUID --name N --kind function|policy|kernel [--runtime wasm|extism|quickjs] [--judges JSON] [--key FILE]",
		Short: "Append a new version (seq = latest + 1) of a code span from FILE",
		Long: `Publishes FILE as the code of span --id (a new id when omitted): seq 0 for a new id,
else latest + 1. The runtime defaults from the extension (.wasm -> wasm, .js -> quickjs).
A wasm module is checked at publish (invalid modules and forbidden imports are refused)
and stored base64 with its BLAKE3 hash in metadata.module_hash. With --key the span is
signed by that key (e.g. an admin key the manifest trusts); otherwise by the node key.
A policy may declare what it judges with --judges (its metadata.judges), e.g.
'{"entity_types":["execution"],"where":{"status":"error"}}': the policy agent then
shows it only those spans, and a declaration that does not check is refused.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("publish takes exactly one file")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			p, err := a.principal()
			if err != nil {
				return err
			}
			switch kind {
			case "function", "policy", "kernel":
			default:
				return usagef("--kind must be function, policy or kernel")
			}
			if name == "" {
				return usagef("--name is required")
			}
			code, err := os.ReadFile(args[0])
			if err != nil {
				return usageError{err}
			}
			if runtime == "" {
				switch filepath.Ext(args[0]) {
				case ".wasm":
					runtime = stage0.RuntimeWasm
				case ".js", ".mjs":
					runtime = stage0.RuntimeQuickJS
				default:
					return usagef("cannot tell the runtime of %s: pass --runtime", args[0])
				}
			}
			s := span.Span{ID: id, EntityType: kind, Who: p.User, Did: "defined", This: kind, Name: name,
				Status: "active", Runtime: runtime}
			meta := map[string]any{}
			switch runtime {
			case stage0.RuntimeWasm, stage0.RuntimeExtism:
				s.Code = stage0.EncodeModule(code)
				s.Language = "wasm"
				meta["module_hash"] = stage0.ModuleHash(code)
			case stage0.RuntimeQuickJS:
				s.Code = string(code)
				s.Language = "javascript"
			default:
				return usagef("--runtime must be wasm, extism or quickjs")
			}
			if cmd.Flags().Changed("judges") {
				if kind != "policy" {
					return usagef("--judges declares what a policy judges: it takes --kind policy")
				}
				if !json.Valid([]byte(judges)) {
					return usagef("--judges must be JSON, e.g. '{\"entity_types\":[\"execution\"]}'")
				}
				meta["judges"] = json.RawMessage(judges)
			}
			if len(meta) > 0 {
				s.Metadata, _ = json.Marshal(meta)
				if err := s.Validate(); err != nil {
					return err // a declaration that does not check: the field at fault, exit 2
				}
			}

			h, done, err := a.host(ctx)
			if err != nil {
				return err
			}
			defer done()
			if err := h.Check(ctx, &s); err != nil {
				// Code that could never run is bad input.
				return usagef("refused: %w", err)
			}
			l, err := a.open(ctx, a.nodeKeyFile())
			if err != nil {
				return err
			}
			defer l.Close()
			if s.ID != "" {
				prev, err := l.Latest(ctx, p, s.ID)
				switch {
				case err == nil:
					s.Seq, s.PrevHash = prev.Seq+1, prev.CurrHash
				case !errors.Is(err, ledger.ErrNotFound):
					return err
				}
			}
			if keyFile != "" {
				k, err := span.LoadKey(keyFile)
				if err != nil {
					return usageError{err}
				}
				if err := ledger.Fill(p, &s, span.FormatTime(time.Now())); err != nil {
					return err
				}
				if err := k.Seal(&s); err != nil {
					return usageError{err}
				}
			} else {
				s.PrevHash = ""
			}
			out, err := l.Append(ctx, p, s)
			if err != nil {
				return err
			}
			st := out[0]
			if a.json {
				return a.writeJSON(map[string]any{"id": st.ID, "seq": st.Seq, "curr_hash": st.CurrHash,
					"public_key": st.PublicKey, "runtime": st.Runtime, "bytes": len(code)})
			}
			a.printf("published %s seq %d (%s, %s, %d bytes) hash %s\n", st.ID, st.Seq, kind, runtime, len(code), st.CurrHash)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&id, "id", "", "span id (a new UUID when omitted)")
	fl.StringVar(&name, "name", "", "name of the function, policy or kernel")
	fl.StringVar(&kind, "kind", "", "function, policy or kernel")
	fl.StringVar(&runtime, "runtime", "", "wasm, extism or quickjs (default from the file extension)")
	fl.StringVar(&keyFile, "key", "", "sign with this key instead of the node key")
	fl.StringVar(&judges, "judges", "", `a policy's declaration of what it judges (metadata.judges): {"entity_types":[...],"where":{...}}`)
	return cmd
}
