package seeds

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/logline/logline/host/ledger"
	"github.com/logline/logline/host/span"
	"github.com/logline/logline/host/stage0"
)

// Load appends the seed spans whose content is not already the latest
// version of their id, signed by key (nil: sealed by the ledger), as p; with
// a key, the manifest lists its public key among trusted_keys. It is
// idempotent: it reports what it appended and what was already there.
func Load(ctx context.Context, l *ledger.Ledger, p ledger.Principal, key *span.Key) (added, kept int, err error) {
	spans, err := loadSeeds(key)
	if err != nil {
		return 0, 0, err
	}
	// A manifest the host would refuse is not appended at all.
	for _, s := range spans {
		if s.ID == stage0.ManifestID {
			if _, err := stage0.ParseManifest(s.Metadata); err != nil {
				return 0, 0, fmt.Errorf("seeds: the manifest does not check: %w", err)
			}
		}
	}
	for _, s := range spans {
		prev, err := l.Latest(ctx, p, s.ID)
		switch {
		case err == nil:
			if sameContent(prev, s) {
				kept++
				continue
			}
			s.Seq, s.PrevHash = prev.Seq+1, prev.CurrHash
		case errors.Is(err, ledger.ErrNotFound):
		default:
			return added, kept, err
		}
		if key != nil {
			if err := ledger.Fill(p, &s, span.FormatTime(time.Now())); err != nil {
				return added, kept, err
			}
			if err := key.Seal(&s); err != nil {
				return added, kept, err
			}
		} else {
			s.PrevHash = ""
		}
		if _, err := l.Append(ctx, p, s); err != nil {
			return added, kept, fmt.Errorf("error seeding %s (%s): %w", s.ID, s.Name, err)
		}
		added++
	}
	return added, kept, nil
}

// loadSeeds reads the embedded seed files in name order; with a key, the
// manifest lists its public key among trusted_keys.
func loadSeeds(key *span.Key) ([]span.Span, error) {
	names, err := fs.Glob(FS, "*.ndjson")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	var out []span.Span
	for _, n := range names {
		raw, err := FS.ReadFile(n)
		if err != nil {
			return nil, err
		}
		spans, err := span.Decode(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("seeds/%s: %w", n, err)
		}
		out = append(out, spans...)
	}
	if key == nil {
		return out, nil
	}
	for i := range out {
		if out[i].ID != stage0.ManifestID {
			continue
		}
		var meta map[string]any
		if err := json.Unmarshal(out[i].Metadata, &meta); err != nil {
			return nil, fmt.Errorf("seeds: manifest metadata: %w", err)
		}
		trusted, _ := meta["trusted_keys"].([]any)
		meta["trusted_keys"] = append(trusted, key.PublicHex())
		if out[i].Metadata, err = json.Marshal(meta); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// sameContent compares two spans ignoring what each version gets anew (seq,
// at, proofs) and what the ledger fills (tenant, owner).
func sameContent(a, b span.Span) bool {
	norm := func(s span.Span) string {
		s.Seq, s.At, s.PrevHash, s.CurrHash, s.Signature, s.PublicKey, s.TenantID, s.OwnerID = 0, "", "", "", "", "", "", ""
		if s.Visibility == "" {
			s.Visibility = span.DefaultVisibility
		}
		c, err := s.Canonical()
		if err != nil {
			return fmt.Sprint(err)
		}
		return string(c)
	}
	return norm(a) == norm(b)
}
