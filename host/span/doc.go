// Package span is the room for the span itself: the Go type of one row of
// ledger.universal_registry, its validation, its canonical form, its hash and
// its Ed25519 signature, and the decoding of user-supplied JSON/NDJSON spans.
//
// Proofs follow the contract (RATIONALE.md §3) and reproduce testdata/span_proofs.json byte
// for byte:
//
//   - canonical form = RFC 8785 (JCS) of the span with curr_hash and signature
//     removed and top-level null or absent fields omitted (nested JSON is kept
//     as it is and normalised by JCS);
//   - curr_hash = lowercase hex BLAKE3-256 of the canonical bytes;
//   - signature = lowercase hex Ed25519 over the 32 raw digest bytes.
//
// The canonical form is written directly (canonical.go, jsontree.go) rather
// than by running jcs.Transform over a marshalled span: the same bytes, held
// to that reference implementation by differential and fuzz tests, at a
// fraction of the cost. gowebpki/jcs still formats non-integer numbers
// (ES6 Number-to-String).
//
// The package is pure computation: it imports only the standard library,
// lukechampine.com/blake3 (with its guts package, for hashing small inputs
// without goroutines) and github.com/gowebpki/jcs, and never touches the
// database, the network or HTTP. Filling id, seq, at, visibility and
// prev_hash is the ledger's job; this package only checks them.
package span
