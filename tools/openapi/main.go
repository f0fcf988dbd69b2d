// Command openapi writes the API's OpenAPI document (api.OpenAPIDocument,
// the bytes the server serves at /api/openapi.json) to
// host/api/client/openapi.json, the snapshot the TypeScript client's types
// are generated from (run from the repository root: `go run ./tools/openapi`,
// or `make client`).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/logline/logline/host/api"
)

func main() {
	out := flag.String("out", "host/api/client/openapi.json", "where to write the document")
	flag.Parse()
	doc, err := api.OpenAPIDocument()
	if err == nil {
		err = os.WriteFile(*out, doc, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapi:", err)
		os.Exit(1)
	}
	fmt.Println("wrote", *out)
}
