// Command seedgen writes seeds/kernels.ndjson and seeds/policies.ndjson from
// the JavaScript sources under guests/ (run from the repository root:
// `go run ./tools/seedgen`, or `make seeds`).
package main

import (
	"fmt"
	"os"

	"github.com/logline/logline/seeds"
)

func main() {
	for name, gen := range seeds.Generated {
		b, err := gen(".")
		if err == nil {
			err = os.WriteFile(name, b, 0o644)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "seedgen:", err)
			os.Exit(1)
		}
		fmt.Println("wrote", name)
	}
}
