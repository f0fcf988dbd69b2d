// Package console holds the web console's built assets (dist/), embedded
// in the binary so `logline dev` and `serve` need no Node and no files
// beside them. dist/ is made from src/ by `make console` with the pinned
// recipe in tools/console; a test checks the committed build is what the
// recipe makes. host/api serves it at /.
package console

import (
	"embed"
	"io/fs"
)

//go:embed dist
var dist embed.FS

// Assets is the built console: index.html and assets/.
func Assets() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		panic(err) // dist is embedded at build time; it is there
	}
	return sub
}
