// Package seeds embeds the NDJSON seed spans that `logline seed` loads: the
// manifest (governance: which kernels may boot, which keys are trusted) and,
// as the kernel suite lands, the stock kernels and policies.
package seeds

import "embed"

// FS holds the seed files (*.ndjson), loaded in name order.
//
//go:embed *.ndjson
var FS embed.FS
